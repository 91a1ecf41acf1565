"""A user's own model: a factory in a file or module, its state_dict and input shape, through checkpoints."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest
import torch

from profiler.errors import UserError
from pruner.model.apply import apply_candidate
from pruner.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from pruner.model.graph import measured_channels
from pruner.model.sources import file_sha256, parse_input_shape
from pruner.search.space import NO_BOUNDS, space_settings

MODELS_PY = textwrap.dedent(
    """
    from torch import nn

    VALUE = 3


    class Net(nn.Module):
        def __init__(self, classes=4):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.head = nn.Linear(32, classes)

        def forward(self, x):
            return self.head(self.body(self.stem(x)).mean((2, 3)))


    def build():
        return Net()


    def wide_head():
        return Net(classes=7)


    def not_a_model():
        return "a string"


    def broken():
        raise RuntimeError("no GPU here")
    """
)


@pytest.fixture
def user_model(tmp_path):
    """models.py with a factory, and trained-looking weights saved as a plain state_dict."""
    path = tmp_path / "models.py"
    path.write_text(MODELS_PY)
    torch.manual_seed(1)
    model = load_model(f"{path}:build", input_shape="3,16,16").model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    return path, tmp_path / "weights.pt", model


def test_a_factory_model_gets_its_weights_and_records_where_it_came_from(user_model):
    path, weights, trained = user_model
    ckpt = load_model(f"{path}:build", weights=weights, input_shape="3, 16, 16")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(ckpt.model(x), trained.eval()(x))
    assert ckpt.input_shape == (1, 3, 16, 16) and ckpt.arch is None and not ckpt.model.training
    prov = ckpt.provenance()
    assert prov["model"] == {"kind": "file", "path": str(path), "sha256": file_sha256(path), "factory": "build",
                             "weights": str(weights), "weights_sha256": file_sha256(weights),
                             "input_shape": [3, 16, 16]}
    assert prov["checkpoint"] is None and prov["genes"] is None
    assert ckpt.space().n_width == 2  # stem and body channels


def test_a_module_factory_is_imported_by_name(user_model, tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(MODELS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    _, weights, trained = user_model
    ckpt = load_model("pkg.nets:build", weights=weights, input_shape=(3, 16, 16))
    assert ckpt.provenance()["model"]["kind"] == "module" and ckpt.source["module"] == "pkg.nets"
    assert torch.equal(ckpt.model.head.weight, trained.head.weight)


def test_a_pruned_factory_model_survives_its_checkpoint(user_model, tmp_path):
    """Saved from a user's factory with a custom grid, reloaded by calling the factory again: same model."""
    path, weights, _ = user_model
    ckpt = load_model(f"{path}:build", weights=weights, input_shape="3,16,16")
    base = load_checkpoint(save_checkpoint(tmp_path / "base.pt", ckpt), factory=f"{path}:build")
    assert base.source == ckpt.source and base.provenance()["checkpoint"]["path"] == str(tmp_path / "base.pt")

    space = dataclasses.replace(base.space(), width_grid=(0.25, 0.5, 1.0), density_grid=(0.25, 0.5, 1.0),
                                width_bounds=NO_BOUNDS, density_bounds=NO_BOUNDS)
    genes = np.array([0, 1, 0])  # stem 4 channels, body 16, body.0 at density 0.25
    pruned = apply_candidate(base.model, space, genes, block="unstructured")
    tuned = dataclasses.replace(base, model=pruned, genes=tuple(genes), block="unstructured",
                                space_settings=space_settings(space))
    again = load_model(f"{path}:build", weights=save_checkpoint(tmp_path / "tuned.pt", tuned))  # as --weights
    names = [layer.name for layer in space.graph.layers]
    assert measured_channels(again.model, names) == {"stem.0": (3, 4), "body.0": (4, 16), "head": (16, 4)}
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(again.model(x), pruned.eval()(x))
    assert float((again.model.body[0].weight != 0).float().mean()) == pytest.approx(0.25, abs=0.02)
    assert again.space().width_grid == (0.25, 0.5, 1.0) and again.provenance()["genes"] == [0, 1, 0]


def test_keep_globs_add_to_a_checkpoints_space(user_model):
    path, weights, _ = user_model
    space = load_model(f"{path}:build", weights=weights, input_shape="3,16,16").space(keep=["body.*"])
    assert space.keep == ("body.*",) and (space.lower[space.kept_genes] == space.upper[space.kept_genes]).all()


def weights_with(tmp_path, change) -> str:
    """A copy of the user's weights, changed."""
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "changed.pt")
    return str(tmp_path / "changed.pt")


@pytest.mark.parametrize(
    "spec, weights, shape, message",
    [
        ("{dir}/nowhere.py:build", None, "3,16,16", r"nowhere.py: no such file \(from "),
        ("{dir}/models.py:make", None, "3,16,16", "models.py: has no 'make'"),
        ("{dir}/models.py:VALUE", None, "3,16,16", "models.py: VALUE is a int, not a function"),
        ("{dir}/models.py:not_a_model", None, "3,16,16", "models.py:not_a_model: returned a str, not a torch nn"),
        ("{dir}/models.py:broken", None, "3,16,16", r"models.py:broken: calling it failed \(RuntimeError: no GPU here"),
        ("nosuchpkg.nets:build", None, "3,16,16", "module 'nosuchpkg.nets' not found"),
        ("{dir}/models.py:build", "{dir}/none.pt", "3,16,16", "none.pt: no such weights file"),
        ("{dir}/models.py:wide_head", "{dir}/weights.pt", "3,16,16",
         r"weights.pt: weights do not fit the model: misshapen key 'head.weight' \(model \(7, 32\), file \(4, 32\)\) "
         "and 1 more"),
        ("{dir}/models.py:build", lambda d: weights_with(d, lambda s: s.pop("body.0.bias")), "3,16,16",
         "changed.pt: weights do not fit the model: missing key 'body.0.bias'$"),
        ("{dir}/models.py:build", lambda d: weights_with(d, lambda s: s.update(extra=torch.ones(1))), "3,16,16",
         "changed.pt: weights do not fit the model: unexpected key 'extra'$"),
        ("{dir}/models.py:build", None, "3,16", r"input shape '3,16': expected C,H,W as three positive integers"),
        ("{dir}/models.py:build", None, "3,0,16", r"input shape '3,0,16': expected C,H,W"),
        ("{dir}/models.py:build", None, "3,x,16", r"input shape '3,x,16': expected C,H,W"),
        ("{dir}/models.py:build", None, None, r"models.py:build: a factory's model needs its input shape C,H,W"),
    ],
    ids=["file_missing", "factory_missing", "not_callable", "not_a_module", "factory_raises", "module_missing",
         "weights_missing", "misshapen", "missing_key", "unexpected_key", "shape_short", "shape_zero", "shape_text",
         "no_shape"],
)
def test_a_model_that_cannot_be_built_is_a_one_line_error(user_model, tmp_path, spec, weights, shape, message):
    weights = weights(tmp_path) if callable(weights) else weights and weights.format(dir=tmp_path)
    with pytest.raises(UserError, match=message) as err:
        load_model(spec.format(dir=tmp_path), weights=weights, input_shape=shape)
    assert "\n" not in str(err.value)


def test_weights_that_need_unpickling_are_refused(user_model, tmp_path):
    path, _, model = user_model
    torch.save(model, tmp_path / "whole.pt")  # a pickled module, not a state_dict
    with pytest.raises(UserError, match=r"whole.pt: not a state_dict torch.load can read with weights_only=True"):
        load_model(f"{path}:build", weights=tmp_path / "whole.pt", input_shape="3,16,16")
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, tmp_path / "wrapped.pt")
    with pytest.raises(UserError, match=r"wrapped.pt: expected a state_dict .* got 'epoch', 'state_dict'"):
        load_model(f"{path}:build", weights=tmp_path / "wrapped.pt", input_shape="3,16,16")


def test_a_checkpoint_takes_no_weights_or_shape(user_model, tmp_path):
    path, weights, _ = user_model
    saved = save_checkpoint(tmp_path / "m.pt", load_model(f"{path}:build", input_shape="3,16,16"))
    with pytest.raises(UserError, match="m.pt: a jcw checkpoint holds its weights and input shape"):
        load_model(str(saved), weights=weights)


def test_a_checkpoint_whose_factory_is_gone_names_both_files(user_model, tmp_path):
    path, _, _ = user_model
    saved = save_checkpoint(tmp_path / "m.pt", load_model(f"{path}:build", input_shape="3,16,16"))
    path.unlink()
    with pytest.raises(UserError, match=r"m.pt: model source: .*models.py: no such file"):
        load_checkpoint(saved, factory=f"{path}:build")


def test_a_checkpoint_runs_no_factory_the_caller_did_not_name(user_model, tmp_path):
    """A checkpoint names the code that builds its model; loading it never imports that code on the file's word,
    nor code other than the factory the caller names."""
    path, _, _ = user_model
    saved = save_checkpoint(tmp_path / "m.pt", load_model(f"{path}:build", input_shape="3,16,16"))
    planted = tmp_path / "planted.py"
    planted.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\ndef build():\n    return None\n")
    payload = torch.load(saved, weights_only=True)
    payload["source"] |= {"path": str(planted)}  # a checkpoint that names someone else's file
    torch.save(payload, tmp_path / "crafted.pt")
    with pytest.raises(UserError, match=r"crafted.pt: its model is built by .*planted.py:build.*name it yourself"):
        load_checkpoint(tmp_path / "crafted.pt")
    with pytest.raises(UserError, match=r"crafted.pt: model source: made from .*planted.py:build, not .*models.py"):
        load_checkpoint(tmp_path / "crafted.pt", factory=f"{path}:build")
    assert not (tmp_path / "ran").exists()


def test_input_shapes_parse():
    assert parse_input_shape("1, 28, 28") == (1, 28, 28) and parse_input_shape([3, 8, 9]) == (3, 8, 9)
    with pytest.raises(UserError):
        parse_input_shape([3.5, 8, 8])


def test_a_file_that_fails_to_import_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad.py").write_text('raise ValueError("first line\\nsecond line")\n')
    with pytest.raises(UserError, match=r"bad.py: importing it failed \(ValueError: first line\)$"):
        load_model(f"{tmp_path}/bad.py:build", input_shape="3,8,8")
