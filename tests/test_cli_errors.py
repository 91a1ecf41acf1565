"""Bad command lines end in one short error line naming the flag, file or gene at fault, never a traceback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruner.data
from jcw.cli import main
from pruner.export import ExportError, export


def jcw(*args) -> int:
    return main([str(a) for a in args])


def test_a_huge_error_message_is_capped_to_one_short_line(tmp_path, capsys):
    name = "d" * 100_000  # an unknown device: its name is echoed in the error
    assert jcw("plan", "--model", tmp_path / "none.pt", "--device", name, "--out", tmp_path / "plan.yaml") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 700
    assert err.startswith("jcw plan: error: ") and "more characters)" in err


@pytest.fixture
def no_data(monkeypatch):
    """MNIST loading fails the test: a bad flag must be refused before any data loads."""

    def load(*args, **kwargs):
        raise AssertionError("data loaded before the flags were checked")

    monkeypatch.setattr(pruner.data, "load_mnist_sized", load)


def usage_error(capsys, *args) -> str:
    """The stderr line of a usage error (exit code 2) from `jcw ARGS`."""
    with pytest.raises(SystemExit) as exit_:
        jcw(*args)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize(("flag", "value"), [("--epochs", "0"), ("--epochs", "-3"), ("--width", "0"),
                                             ("--width", "nan"), ("--input-size", "0"), ("--limit", "0")])
def test_train_refuses_a_non_positive_flag_before_loading_data(tmp_path, capsys, no_data, flag, value):
    line = usage_error(capsys, "train", flag, value, "--out", tmp_path / "ckpt.pt")
    assert line.startswith("jcw train: error: argument ") and flag in line and value in line
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.parametrize(("flag", "value"), [("--epochs", "0"), ("--limit", "-1")])
def test_finetune_refuses_a_non_positive_flag_before_loading_data(tmp_path, capsys, no_data, flag, value):
    line = usage_error(capsys, "finetune", "--model", tmp_path / "none.pt", "--candidate", "1,2",
                       "--device", "local-sparse", flag, value, "--out", tmp_path / "tuned.pt")
    assert line.startswith("jcw finetune: error: argument ") and flag in line and value in line


@pytest.mark.parametrize(("flag", "value"), [("--budgets", "5ms"), ("--budgets", "0.5,-2"), ("--budgets", "1,inf"),
                                             ("--generations", "0"), ("--population", "1"), ("--val-size", "0")])
def test_search_checks_its_flags_before_loading_anything(tmp_path, capsys, no_data, flag, value):
    """The checkpoint and predictor do not exist: the flag is refused before either is opened."""
    line = usage_error(capsys, "search", "--model", tmp_path / "none.pt", "--device", "local-sparse",
                       "--predictor", tmp_path / "none.zip", "--out", tmp_path / "run", flag, value)
    assert line.startswith("jcw search: error: argument ") and flag in line
    assert value.split(",")[-1] in line


class Gate(nn.Module):
    """A layer of the model's own whose forward calls what the exporter cannot lower."""

    def __init__(self, use_method: bool) -> None:
        super().__init__()
        self.use_method = use_method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sigmoid() if self.use_method else torch.sigmoid(x)


def conv_then(layer: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sequential(layer))


def test_export_names_an_unsupported_module_and_its_type():
    with pytest.raises(ExportError) as err:
        export(conv_then(nn.Upsample(scale_factor=2)), (1, 1, 8, 8), "builtin")
    assert str(err.value) == "module '1.0' (nn.Upsample) is not supported by the exporter (fx node _1_0)"


@pytest.mark.parametrize(("use_method", "kind"), [(False, "function"), (True, "method")])
def test_export_names_an_unsupported_call_and_the_module_it_sits_in(use_method, kind):
    with pytest.raises(ExportError) as err:
        export(conv_then(Gate(use_method)), (1, 1, 8, 8), "builtin")
    assert str(err.value).startswith(f"{kind} 'sigmoid' in module '1.0' (Gate) is not supported by the exporter")
