"""Model checkpoints from elsewhere: an architecture or argument this jcw does not know is a one-line error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from profiler.errors import UserError
from pruner.model.apply import apply_candidate
from pruner.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pruner.model.graph import measured_channels
from pruner.model.reference import build_model
from pruner.model.sources import file_sha256
from pruner.search.space import NO_BOUNDS, SearchSpace, space_settings

KWARGS = {"num_classes": 10, "width_mult": 0.25, "in_channels": 1}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A genuine checkpoint of a small MobileNetV2 and its payload."""
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, Checkpoint(build_model("mobilenet_v2", **KWARGS), "mobilenet_v2", KWARGS, (1, 1, 28, 28)))
    return path, torch.load(path, weights_only=True)


def test_a_genuine_checkpoint_loads(saved):
    path, _ = saved
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "mobilenet_v2" and ckpt.kwargs == KWARGS and ckpt.input_shape == (1, 1, 28, 28)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kwargs": {**KWARGS, "depth": 3}}, r"kwargs 'depth': not an argument of mobilenet_v2 \(it takes "),
        ({"arch": "vgg16"}, "unknown arch 'vgg16'"),
        ({"kwargs": [0.25, 1]}, "kwargs must be a mapping of mobilenet_v2's arguments, got list"),
        ({"kwargs": {**KWARGS, "width_mult": "wide"}}, "do not build mobilenet_v2"),
    ],
    ids=["unknown_argument", "unknown_arch", "kwargs_not_a_dict", "bad_argument_value"],
)
def test_a_checkpoint_the_architecture_cannot_take_is_a_one_line_error(saved, tmp_path, change, message):
    _, payload = saved
    path = tmp_path / "foreign.pt"
    torch.save({**payload, **change}, path)
    with pytest.raises(UserError, match=message) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_checkpoint_from_before_sources_and_space_settings_loads(saved, tmp_path):
    _, payload = saved
    path = tmp_path / "old.pt"
    torch.save({k: v for k, v in payload.items() if k not in ("source", "space")}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.source is None and ckpt.space_settings is None
    assert ckpt.provenance()["model"] == {"kind": "builtin", "arch": "mobilenet_v2", "kwargs": KWARGS}
    assert ckpt.provenance()["checkpoint"] == {"path": str(path), "sha256": file_sha256(path)}


def test_a_pruned_checkpoint_keeps_its_space_settings(saved, tmp_path):
    """Genes index the grids they were searched on: a checkpoint re-applies them on its recorded grids."""
    path, _ = saved
    base = load_checkpoint(path)
    space = SearchSpace(base.space().graph, width_grid=(0.5, 1.0), width_bounds=NO_BOUNDS, keep=("classifier.*",))
    genes = space.lower
    pruned = apply_candidate(base.model, space, genes, block="1x4")
    settings = space_settings(space)
    tuned = dataclasses.replace(base, model=pruned, genes=tuple(genes), block="1x4", space_settings=settings)
    again = load_checkpoint(save_checkpoint(tmp_path / "p.pt", tuned))
    names = [layer.name for layer in space.graph.layers]
    assert measured_channels(again.model, names) == measured_channels(pruned, names)
    assert measured_channels(again.model, names) != measured_channels(base.model, names)
    assert space_settings(again.space()) == space_settings(space)


@pytest.mark.parametrize("settings", [[0.5, 1.0], {"grid": [0.5, 1.0]}], ids=["not_a_dict", "unknown_setting"])
def test_foreign_space_settings_are_a_one_line_error(saved, tmp_path, settings):
    _, payload = saved
    path = tmp_path / "foreign.pt"
    torch.save({**payload, "space": settings}, path)
    with pytest.raises(UserError, match=f"{path}: space settings must map some of density_bounds, "):
        load_checkpoint(path)
