"""Model checkpoints from elsewhere: an architecture or argument this jcw does not know is a one-line error."""

from __future__ import annotations

import pytest
import torch

from profiler.errors import UserError
from pruner.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pruner.models import build_model

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
