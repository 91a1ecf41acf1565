"""Training, fine-tuning with fixed pruning masks, evaluation and BatchNorm recalibration, on any torch device.

Every function takes `device` (None: wherever the model's parameters are, the CPU for a fresh model), moves the
model there and each batch as it is read. Under `torchrun`, after `pruner.accuracy.hardware.init_distributed`,
`train` is data-parallel (DistributedDataParallel): each process reads its shard of the loader and the gradients are
averaged, so every process ends with the same weights. Pruning masks (torch.nn.utils.prune) are buffers the
forward pass multiplies in, so masked weights get zero gradients under DDP too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pruner.accuracy.hardware import is_distributed, is_main_process, set_epoch, shard


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy
    top1: float  # accuracy in [0, 1]


def place(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """Move `model` to `device` in place and return that device; None: leave the model where its parameters are
    and return their device."""
    if device is None:
        return next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)
    model.to(device)
    return device


def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> Evaluation:
    """Mean cross-entropy and top-1 accuracy of `model` over `loader`, on `device`."""
    device = place(model, device)
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
    if count == 0:
        raise ValueError("evaluation loader is empty")
    return Evaluation(total_loss / count, correct / count)


def recalibrate_bn(
    model: nn.Module, loader: Iterable, batches: int = 10, device: torch.device | str | None = None
) -> nn.Module:
    """Recompute BatchNorm running statistics from `batches` batches (after pruning they are stale), on `device`."""
    device = place(model, device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(device, non_blocking=True))
    model.eval()
    return model


def _average_across_processes(running: float, seen: int, model: nn.Module, device: torch.device) -> tuple[float, int]:
    """Under DDP: the epoch's loss sum and sample count over all processes, and rank 0's buffers on every rank.

    BatchNorm statistics are buffers each process updates from its own batches; taking rank 0's keeps the
    processes' models identical (DDP itself only re-broadcasts them at the next forward pass).
    """
    totals = torch.tensor([running, float(seen)], dtype=torch.float64, device=device)  # nccl: on the GPU
    dist.all_reduce(totals)
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)
    return totals[0].item(), int(totals[1].item())


def train(
    model: nn.Module,
    train_loader: Iterable,
    epochs: int,
    lr: float | None = None,
    optimizer: str = "adam",
    schedule: str = "cosine",
    val_loader: Iterable | None = None,
    patience: int | None = None,
    weight_decay: float = 0.0,
    desc: str = "train",
    device: torch.device | str | None = None,
    resume: str | Path | None = None,
) -> list[dict]:
    """Train with Adam (default lr 2e-3) or SGD with Nesterov momentum (default lr 0.05) on `device`; pruning
    masks (torch.nn.utils.prune) stay applied at every step.

    `schedule` is "cosine" or "constant". With `val_loader` each epoch is evaluated; with `patience`
    training stops after that many epochs without a better validation loss and the best weights are kept.
    Under a process group (torchrun) training is data-parallel: `train_loader` (a DataLoader) is sharded
    across the processes, each evaluates the whole `val_loader` (identical weights, identical decisions) and
    only rank 0 shows progress. On the CPU, batches and weights are channels-last (about 1.7x faster for
    MobileNet-style nets). With `resume`, the state after every epoch is saved there and an interrupted run
    started again with the same file continues from its last finished epoch. Returns one record per epoch (epoch,
    train_loss, val_loss, val_top1).
    """
    if resume is not None and patience is not None:
        raise ValueError("resume and patience together: an early-stopped run's best weights are not saved per epoch")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected 'cosine' or 'constant'")
    device = place(model, device)
    loader = shard(train_loader)
    net = model
    if is_distributed():
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    opt, scheduler = _optimizer(model, optimizer, lr, weight_decay, schedule, epochs * len(loader))
    history, best, best_state, stale = [], float("inf"), None, 0
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(memory_format=layout)
    state = _TrainState(Path(resume)) if resume is not None and is_main_process() else None
    start = state.load(model, opt, scheduler, history) if state is not None else 0
    for epoch in range(start, epochs):
        set_epoch(loader, epoch)
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False, unit="batch",
                   disable=not is_main_process())
        running, seen = _one_epoch(net, bar, opt, scheduler, device, layout)
        if is_distributed():
            running, seen = _average_across_processes(running, seen, model, device)
        record = {"epoch": epoch + 1, "train_loss": running / max(seen, 1)}
        if val_loader is not None:
            ev = evaluate(model, val_loader)
            record |= {"val_loss": ev.loss, "val_top1": ev.top1}
            if ev.loss < best:
                best, best_state, stale = ev.loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(record)
        if state is not None:
            state.save(model, opt, scheduler, history)
        if patience is not None and stale >= patience:
            break
    if best_state is not None and patience is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    return history


def _optimizer(model: nn.Module, name: str, lr: float | None, weight_decay: float, schedule: str, steps: int):
    """Adam (default lr 2e-3) or Nesterov SGD (default lr 0.05) over the trainable parameters, and its per-step
    schedule: cosine decay over `steps`, or constant."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        opt = torch.optim.Adam(params, lr=lr or 2e-3, weight_decay=weight_decay)
    elif name == "sgd":
        opt = torch.optim.SGD(params, lr=lr or 0.05, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected 'adam' or 'sgd'")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item()))
        if schedule == "cosine" else (lambda s: 1.0)
    )
    return opt, scheduler


def _one_epoch(net: nn.Module, batches, opt, scheduler, device: torch.device, layout) -> tuple[float, int]:
    """One pass of training steps over `batches` (a progress bar); the summed loss and the images seen."""
    net.train()
    running, seen = 0.0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True, memory_format=layout), y.to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        running, seen = running + loss.item() * len(y), seen + len(y)
        batches.set_postfix(loss=f"{running / seen:.3f}")
    return running, seen


@dataclass(frozen=True)
class _TrainState:
    """Training's state after its last finished epoch (weights, optimizer, schedule, history), in one file written
    atomically, read with weights_only."""

    path: Path

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, scheduler, history: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
                    "history": history}, tmp)
        tmp.replace(self.path)

    def load(self, model: nn.Module, opt: torch.optim.Optimizer, scheduler, history: list[dict]) -> int:
        """Restore the saved state, if any; the number of epochs it finished."""
        if not self.path.is_file():
            return 0
        saved = torch.load(self.path, weights_only=True, map_location=next(model.parameters()).device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history.extend(saved["history"])
        return len(saved["history"])
