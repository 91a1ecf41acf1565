"""Bad command lines end in one short error line naming the flag, file or gene at fault, never a traceback."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pruner.data.mnist
from pruner.deploy.export import ExportError, export
from pruner.model.checkpoint import load_checkpoint
from pruner.model.graph import analyze
from pruner.search.space import SearchSpace, SpaceError


def test_a_huge_error_message_is_capped_to_one_short_line(jcw, tmp_path, capsys):
    name = "d" * 100_000  # an unknown device: its name is echoed in the error
    assert jcw("plan", "--model", tmp_path / "none.pt", "--device", name, "--out", tmp_path / "plan.yaml") == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 700
    assert err.startswith("jcw plan: error: ") and "more characters)" in err


@pytest.fixture
def no_data(monkeypatch):
    """MNIST loading fails the test: a bad flag must be refused before any data loads."""

    def load(*args, **kwargs):
        raise AssertionError("data loaded before the flags were checked")

    monkeypatch.setattr(pruner.data.mnist, "load_mnist_sized", load)


def usage_error(jcw, capsys, *args) -> str:
    """The stderr line of a usage error (exit code 2) from `jcw ARGS`."""
    with pytest.raises(SystemExit) as exit_:
        jcw(*args)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize(("flag", "value"), [("--epochs", "0"), ("--epochs", "-3"), ("--width", "0"),
                                             ("--width", "nan"), ("--input-size", "0"), ("--limit", "0")])
def test_train_refuses_a_non_positive_flag_before_loading_data(jcw, tmp_path, capsys, no_data, flag, value):
    line = usage_error(jcw, capsys, "train", flag, value, "--out", tmp_path / "ckpt.pt")
    assert line.startswith("jcw train: error: argument ") and flag in line and value in line
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.parametrize(("flag", "value"), [("--epochs", "0"), ("--limit", "-1")])
def test_finetune_refuses_a_non_positive_flag_before_loading_data(jcw, tmp_path, capsys, no_data, flag, value):
    line = usage_error(jcw, capsys, "finetune", "--model", tmp_path / "none.pt", "--candidate", "1,2",
                       "--device", "local-sparse", flag, value, "--out", tmp_path / "tuned.pt")
    assert line.startswith("jcw finetune: error: argument ") and flag in line and value in line


@pytest.mark.parametrize(("flag", "value"), [("--budgets", "5ms"), ("--budgets", "0.5,-2"), ("--budgets", "1,inf"),
                                             ("--generations", "0"), ("--population", "1"), ("--val-size", "0")])
def test_search_checks_its_flags_before_loading_anything(jcw, tmp_path, capsys, no_data, flag, value):
    """The checkpoint and predictor do not exist: the flag is refused before either is opened."""
    line = usage_error(jcw, capsys, "search", "--model", tmp_path / "none.pt", "--device", "local-sparse",
                       "--predictor", tmp_path / "none.zip", "--out", tmp_path / "run", flag, value)
    assert line.startswith("jcw search: error: argument ") and flag in line
    assert value.split(",")[-1] in line


class Gate(nn.Module):
    """A layer of the model's own whose forward calls what the exporter cannot lower."""

    def __init__(self, use_method: bool) -> None:
        super().__init__()
        self.use_method = use_method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cumsum(1) if self.use_method else torch.cumsum(x, 1)


def conv_then(layer: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(layer))


def test_export_names_an_unsupported_module_and_its_type():
    with pytest.raises(ExportError) as err:
        export(conv_then(nn.PixelShuffle(2)), (1, 1, 8, 8), "builtin")
    assert str(err.value) == "module '1.0' (nn.PixelShuffle) is not supported by the exporter (fx node _1_0)"


@pytest.mark.parametrize(("use_method", "kind"), [(False, "function"), (True, "method")])
def test_export_names_an_unsupported_call_and_the_module_it_sits_in(use_method, kind):
    with pytest.raises(ExportError) as err:
        export(conv_then(Gate(use_method)), (1, 1, 8, 8), "builtin")
    assert str(err.value).startswith(f"{kind} 'cumsum' in module '1.0' (Gate) is not supported by the exporter")


@pytest.fixture(scope="module")
def space():
    """The search space of a small real model: three width genes (the first 'width:0'), one density gene."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return SearchSpace(analyze(model, (1, 1, 8, 8)))


@pytest.mark.parametrize(("value", "problem"), [(99999999999999999999999, "is outside"), (10**5000, "is outside"),
                                                (-(2**70), "is outside"), (math.inf, "is not an integer"),
                                                (math.nan, "is not an integer"), (8.5, "is not an integer"),
                                                ("x", "is not an integer")],
                         ids=["1e23", "10**5000", "-2**70", "inf", "nan", "8.5", "x"])
def test_space_check_names_the_gene_of_a_huge_or_non_finite_value(space, value, problem):
    genes = list(space.full())
    genes[1] = value
    with pytest.raises(SpaceError) as err:
        space.check(genes)
    message = str(err.value)
    assert message.startswith(f"gene 1 ({space.gene_names[1]}) = ") and problem in message
    assert len(message) < 120


@pytest.fixture(scope="module")
def checkpoint(jcw, tmp_path_factory):
    """A tiny briefly trained MobileNetV2 checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    assert jcw("train", "--limit", 256, "--width", 0.25, "--input-size", 28, "--out", path) == 0
    return path


def export_error(jcw, checkpoint, candidate, tmp_path, capsys) -> str:
    """The one stderr line of `jcw export --candidate CANDIDATE`, which must exit with code 3 (bad input)."""
    capsys.readouterr()
    out = tmp_path / "cand.tflite"
    assert jcw("export", "--model", checkpoint, "--candidate", candidate, "--device", "local-sparse",
               "--out", out) == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jcw export: error: ")
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("candidate", ["99999999999999999999999", "1,2,x"])
def test_export_refuses_a_malformed_candidate_in_one_line(jcw, checkpoint, tmp_path, capsys, candidate):
    export_error(jcw, checkpoint, candidate, tmp_path, capsys)


def test_export_names_the_gene_of_a_huge_value_in_a_full_length_candidate(jcw, checkpoint, tmp_path, capsys):
    full = load_checkpoint(checkpoint).space().full()
    genes = ",".join(["99999999999999999999999"] + [str(v) for v in full[1:]])
    assert "gene 0 = 99999999999999999999999 is beyond any grid index" in export_error(jcw, checkpoint, genes, tmp_path,
                                                                                         capsys)
