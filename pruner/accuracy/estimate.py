"""Accuracy estimators for the search: one interface, X [n, d] gene vectors -> [n, 2] (loss, top-1) per row.

Estimators: the proxy (inherit the trained weights, apply the candidate, recalibrate BatchNorm, evaluate on a
held-out split), the weight-sharing supernet (pruner.accuracy.supernet) and any user function of a pruned model. All
cache results by gene vector (NSGA-II revisits candidates), score on a torch `device` (None: where the model
is) and, with `workers` > 1, score a batch's new candidates on that many processes (pruner.accuracy.parallel). torch's
thread count is left as it is unless `threads` is given (on a small shared CPU, one thread is fastest for
tiny convs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from pruner.accuracy.parallel import ScorePool
from pruner.accuracy.train import Evaluation, evaluate, recalibrate_bn
from pruner.data.mnist import Split
from pruner.model.apply import apply_candidate
from pruner.search.space import SearchSpace

LOSS, TOP1 = 0, 1  # columns of an estimator's output
Batches = list[tuple[torch.Tensor, torch.Tensor]]


class Estimator(Protocol):
    """Maps candidate gene vectors X [n, d] to an [n, 2] float array of (loss, top-1) per row."""

    def __call__(self, X: np.ndarray) -> np.ndarray: ...


def as_loss_fn(estimator: Estimator) -> Callable[[np.ndarray], np.ndarray]:
    """The estimator's loss column alone, X [n, d] -> [n]: the accuracy objective of the search."""
    return lambda X: estimator(X)[:, LOSS]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` torch threads (None: leave as is), restoring the previous count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class ProxyData:
    """Fixed batches: `calibration` (training images) recomputes BatchNorm statistics, `held_out` scores.

    Materialised once so that every candidate sees the very same images (deterministic, comparable).
    `held_out` must never come from the test split.
    """

    calibration: Batches
    held_out: Batches

    def to(self, device: torch.device | None) -> ProxyData:
        """The batches on `device` (None: as they are), moved once rather than for every candidate."""
        if device is None:
            return self
        return ProxyData(*([(x.to(device), y.to(device)) for x, y in batches]
                           for batches in (self.calibration, self.held_out)))


def proxy_data(calibration: Iterable, held_out: Iterable, bn_batches: int = 10) -> ProxyData:
    """ProxyData from any loaders of (images, labels): the first `bn_batches` calibration batches, all held-out."""
    return ProxyData(list(itertools.islice(calibration, bn_batches)), list(held_out))


def first_images(loader: Iterable, count: int) -> Batches:
    """The first `count` images of `loader` as (images, labels) batches: the held-out set of the estimates."""
    batches, taken = [], 0
    for images, labels in loader:
        batches.append((images[: count - taken], labels[: count - taken]))
        taken += len(batches[-1][1])
        if taken >= count:
            break
    return batches


def mnist_proxy_data(
    splits: Mapping[str, Split], val_size: int = 1000, bn_batches: int = 10, batch_size: int = 64, seed: int = 0
) -> ProxyData:
    """MNIST ProxyData: seeded shuffled "train" batches to calibrate, the first `val_size` "val" images to score."""
    calibration = splits["train"].loader(batch_size, shuffle=True, seed=seed)
    return proxy_data(calibration, splits["val"].loader(500, limit=val_size), bn_batches)


def recalibrate(model: nn.Module, calibration: Batches, device: torch.device | None = None) -> nn.Module:
    """Recompute `model`'s BatchNorm statistics on all `calibration` batches, on `device`, seeded (dropout)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return recalibrate_bn(model, calibration, len(calibration), device)


def calibrated_evaluation(model: nn.Module, data: ProxyData, device: torch.device | None = None) -> Evaluation:
    """Recalibrate `model`'s BatchNorm on the calibration batches, then score it on the held-out batches."""
    return evaluate(recalibrate(model, data.calibration, device), data.held_out, device)


@dataclass(eq=False)
class CachedEstimator:
    """An Estimator from a per-candidate `score`; each distinct gene vector is scored once, then cached.

    With `workers` > 1 the new candidates of each call are scored on a pool of processes (pruner.accuracy.parallel),
    started at the first call and kept until `reset` or `close`; `score` must then be picklable and have
    `on(device)`, its copy placed on a worker's device (ProxyScore, UserScore with a module-level function,
    SupernetScore). `threads` sets
    torch's thread count while scoring, in this process and in each worker (None: this process's count).
    """

    score: Callable[[np.ndarray], Evaluation]
    threads: int | None = None
    workers: int = 1
    cache: dict[tuple[int, ...], Evaluation] = field(default_factory=dict)
    pool: ScorePool | None = field(default=None, init=False)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(X)).astype(int)
        new = {tuple(x.tolist()): x for x in rows if tuple(x.tolist()) not in self.cache}  # first seen first
        if new:
            self.cache |= dict(zip(new, self.score_rows(list(new.values())), strict=True))
        return np.array([[e.loss, e.top1] for e in (self.cache[tuple(x.tolist())] for x in rows)], dtype=float)

    def score_rows(self, rows: list[np.ndarray]) -> list[Evaluation]:
        """Score gene vectors, in order: here, or on the worker pool when there are several workers."""
        if self.workers <= 1:
            with torch_threads(self.threads):
                return [self.score(x) for x in rows]
        if self.pool is None:
            self.pool = ScorePool(self.score, self.workers, self.threads)
        return self.pool.map(rows)

    def reset(self) -> None:
        """Forget every estimate and stop the workers: the next call scores with the score's current state."""
        self.cache.clear()
        self.close()

    def close(self) -> None:
        """Stop the worker processes, if any (they also stop when the program exits)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None


@dataclass(eq=False)
class ProxyScore:
    """JCW's proxy fitness: the trained weights, pruned to the candidate, BN recalibrated, scored held-out."""

    model: nn.Module
    space: SearchSpace
    data: ProxyData
    block: str = "1x4"
    device: torch.device | None = None  # where the pruned copy is scored; None: where `model` is

    def __call__(self, x: np.ndarray) -> Evaluation:
        pruned = apply_candidate(self.model, self.space, x, self.block)
        return calibrated_evaluation(pruned, self.data, self.device)

    def on(self, device: torch.device | None) -> ProxyScore:
        """This score on `device`, its batches moved there once (None: unchanged)."""
        return self if device is None else dataclasses.replace(self, data=self.data.to(device), device=device)


def proxy_estimator(
    model: nn.Module,
    space: SearchSpace,
    data: ProxyData,
    block: str = "1x4",
    threads: int | None = None,
    device: torch.device | None = None,
    workers: int = 1,
) -> CachedEstimator:
    """The proxy estimator of trained `model` over `space` (block: the target device's sparsity block), scoring
    on `device` with `workers` processes (see CachedEstimator)."""
    return CachedEstimator(ProxyScore(model, space, data, block).on(device), threads, workers)


@dataclass(eq=False)
class UserScore:
    """A user's function of the pruned model (optionally BN-recalibrated first) as a candidate's score.

    `fn` returns a loss (top-1 is then NaN) or an Evaluation.
    """

    model: nn.Module
    space: SearchSpace
    fn: Callable[[nn.Module], float | Evaluation]
    block: str = "1x4"
    calibration: Batches | None = None
    device: torch.device | None = None  # where the pruned copy is placed before `fn`; None: where `model` is

    def __call__(self, x: np.ndarray) -> Evaluation:
        pruned = apply_candidate(self.model, self.space, x, self.block).to(self.device)
        result = self.fn(pruned if self.calibration is None else recalibrate(pruned, self.calibration, self.device))
        return result if isinstance(result, Evaluation) else Evaluation(float(result), float("nan"))

    def on(self, device: torch.device | None) -> UserScore:
        """This score on `device`, its calibration batches moved there once (None: unchanged)."""
        if device is None:
            return self
        calibration = None if self.calibration is None else [(x.to(device), y.to(device)) for x, y in self.calibration]
        return dataclasses.replace(self, calibration=calibration, device=device)


def user_estimator(
    model: nn.Module,
    space: SearchSpace,
    fn: Callable[[nn.Module], float | Evaluation],
    block: str = "1x4",
    calibration: Batches | None = None,
    threads: int | None = None,
    device: torch.device | None = None,
    workers: int = 1,
) -> CachedEstimator:
    """An estimator calling `fn` on each candidate's pruned copy of `model` (e.g. lambda m: my_eval(m)), placed
    on `device`; with `workers` > 1, `fn` must be a module-level function (it is sent to worker processes)."""
    return CachedEstimator(UserScore(model, space, fn, block, calibration).on(device), threads, workers)
