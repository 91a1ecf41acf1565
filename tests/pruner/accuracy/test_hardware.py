"""Torch device and thread selection on this CPU-only machine: the CPU resolves, absent GPUs are clear errors."""

import pytest
import torch

from profiler.errors import UserError
from pruner.accuracy.hardware import init_distributed, is_main_process, resolve_device, set_threads, shard
from pruner.accuracy.train import evaluate, train


def test_auto_and_cpu_resolve_to_the_cpu_here():
    assert torch.cuda.device_count() == 0  # the machine these tests are written for
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("name", "message"), [
    ("cuda", "CUDA is not available"),
    ("cuda:1", "CUDA is not available"),
    ("mps", "MPS is not available"),
    ("gpu", "unknown torch device 'gpu'"),
    ("meta", "unsupported torch device 'meta'"),
])
def test_a_device_this_machine_lacks_is_a_one_line_user_error(name, message):
    with pytest.raises(UserError, match=message) as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_threads_are_set_or_left_alone():
    before = torch.get_num_threads()
    try:
        set_threads(None)
        assert torch.get_num_threads() == before
        set_threads(2)
        assert torch.get_num_threads() == 2
        with pytest.raises(UserError, match="at least 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_outside_torchrun_nothing_is_distributed(monkeypatch):
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    assert init_distributed(torch.device("cpu")) == torch.device("cpu")
    assert is_main_process() and not torch.distributed.is_initialized()
    loader = torch.utils.data.DataLoader(range(10))
    assert shard(loader) is loader


def test_training_on_an_explicit_cpu_device_matches_the_default(small_net):
    images, labels = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)]
    default, placed = small_net(), small_net()
    train(default, batches, epochs=1)
    train(placed, batches, epochs=1, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), placed.state_dict().values(),
                                                 strict=True))
    assert evaluate(default, batches) == evaluate(placed, batches, device=torch.device("cpu"))
