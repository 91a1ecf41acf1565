"""Where torch runs: the device (`--torch-device`), the thread count (`--threads`) and, under `torchrun`, the
process group of data-parallel training.

Under `torchrun` (RANK, WORLD_SIZE and LOCAL_RANK set) `init_distributed` joins the process group: gloo on CPU,
nccl on CUDA with one GPU per process (cuda:LOCAL_RANK). `train` and `train_supernet` then average gradients
across the processes and read disjoint shards of the data (`shard`); only rank 0 prints progress and should
write files (`is_main_process`). No GPU exists where this is developed: the CUDA and MPS paths are written to
torch's documented conventions but tested on CPU only.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from profiler.errors import UserError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device called `name`: "auto" (the first GPU if any, else Apple's MPS, else the CPU), "cpu",
    "cuda", "cuda:N" or "mps"; a device this machine lacks is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown torch device {name!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"torch device {name!r}: CUDA is not available (no GPU, or torch built without CUDA)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"torch device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"torch device {name!r}: Apple's MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported torch device {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    return device


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count (None: keep torch's default, one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK)."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def init_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) and return this process's device.

    A CUDA device becomes cuda:LOCAL_RANK (one GPU per process). Outside torchrun nothing happens and `device`
    is returned as is, so a command can always call this first.
    """
    if not under_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not is_distributed():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def is_distributed() -> bool:
    """Whether a process group is up: training then runs data-parallel across its processes."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 under it: the one process that prints and writes files."""
    return not is_distributed() or dist.get_rank() == 0


def set_epoch(loader: object, epoch: int) -> None:
    """Reshuffle a sharded loader for `epoch` (the same permutation on every rank); other loaders reshuffle
    themselves at each pass."""
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        loader.sampler.set_epoch(epoch)


def shard(loader: DataLoader, seed: int = 0) -> DataLoader:
    """`loader` reading only this process's share of its dataset (a DistributedSampler), when distributed.

    A shuffled loader stays shuffled, the same permutation on every rank (`seed`), reshuffled by
    `set_epoch`. Outside a process group `loader` is returned unchanged.
    """
    if not is_distributed():
        return loader
    if not isinstance(loader, DataLoader):
        raise UserError("data-parallel training needs a torch DataLoader, to shard its dataset across processes")
    sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last)
