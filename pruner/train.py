"""Training, fine-tuning with fixed pruning masks, evaluation and BatchNorm recalibration."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy
    top1: float  # accuracy in [0, 1]


def evaluate(model: nn.Module, loader: Iterable) -> Evaluation:
    """Mean cross-entropy and top-1 accuracy of `model` over `loader`."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            logits = model(x)
            total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
    if count == 0:
        raise ValueError("evaluation loader is empty")
    return Evaluation(total_loss / count, correct / count)


def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int = 10) -> nn.Module:
    """Recompute BatchNorm running statistics from `batches` batches (after pruning they are stale)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    model.eval()
    return model


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
) -> list[dict]:
    """Train with Adam (default lr 2e-3) or SGD with Nesterov momentum (default lr 0.05); pruning masks
    (torch.nn.utils.prune) stay applied at every step.

    `schedule` is "cosine" or "constant". With `val_loader` each epoch is evaluated; with `patience`
    training stops after that many epochs without a better validation loss and the best weights are kept.
    Returns one record per epoch (epoch, train_loss, val_loss, val_top1).
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected 'cosine' or 'constant'")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr or 2e-3, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr or 0.05, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'adam' or 'sgd'")
    steps = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item()))
        if schedule == "cosine" else (lambda s: 1.0)
    )
    history, best, best_state, stale = [], float("inf"), None, 0
    for epoch in range(epochs):
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False, unit="batch")
        for x, y in bar:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scheduler.step()
            running, seen = running + loss.item() * len(y), seen + len(y)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        record = {"epoch": epoch + 1, "train_loss": running / max(seen, 1)}
        if val_loader is not None:
            ev = evaluate(model, val_loader)
            record |= {"val_loss": ev.loss, "val_top1": ev.top1}
            if ev.loss < best:
                best, best_state, stale = ev.loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(record)
        if patience is not None and stale >= patience:
            break
    if best_state is not None and patience is not None:
        model.load_state_dict(best_state)
    return history
