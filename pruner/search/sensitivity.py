"""The joint search's weight stage: sparse layers added to a channel-pruned front, the cheapest layers first.

Made for devices whose sparse kernels pay only at low density and in few layers (TFLite's built-in kernels on
x86: below about 35% density, in the late 1x1 convs). There a single NSGA-II over every width and density does
not find, in a few hundred evaluations, the handful of layers that can be made sparse at almost no loss; it
tied channel-only pruning (`joint, one stage` in bench/results/search.md). This stage scans each layer once,
made sparse alone in the full model, ranks the layers by loss added per ms saved, and gives each candidate of
a channel-pruned front its k cheapest layers, k = 1, 2, ... until its budget of evaluations is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pruner.search.space import SearchSpace

Objectives = Callable[[np.ndarray], np.ndarray]  # X [n, d] int -> [n, 2] (loss, latency ms)
Repair = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LayerScan:
    """The scanned layers that save time, cheapest first: density gene, its grid level, loss added per ms
    saved; and how many candidates the scan evaluated."""

    genes: np.ndarray
    levels: np.ndarray
    loss_per_ms: np.ndarray
    evaluated: int


def scan_candidates(space: SearchSpace, repair: Repair) -> np.ndarray:
    """The full model with one weight-prunable layer at the lowest density its bounds allow, one row per layer
    the repair keeps sparse (the device runs it faster sparse)."""
    full = space.full()
    genes = np.arange(space.n_width, space.n_var)
    X = np.tile(full, (len(genes), 1))
    X[np.arange(len(genes)), genes] = space.lower[genes]
    X = repair(X)
    return X[(full != X).any(axis=1)]


def scan_layers(space: SearchSpace, objectives: Objectives, repair: Repair, limit: int | None = None) -> LayerScan:
    """Evaluate the scan candidates (the first `limit` of them) and rank the layers that save time by loss
    added per ms saved in the full model."""
    X = scan_candidates(space, repair)[:limit]
    genes = np.argmax(space.full() != X, axis=1)
    F = objectives(np.vstack([space.full(), X]))
    base, F = F[0], F[1:]
    faster = F[:, 1] < base[1]
    loss_per_ms = (F[faster, 0] - base[0]) / (base[1] - F[faster, 1])
    order = np.argsort(loss_per_ms, kind="stable")
    genes, X = genes[faster][order], X[faster][order]
    return LayerScan(genes, X[np.arange(len(genes)), genes], loss_per_ms[order], len(faster))


def sparsified(X: np.ndarray, scan: LayerScan, repair: Repair, budget: int) -> np.ndarray:
    """Each row of X with its k cheapest scanned layers made sparse (k = 1 for every row, then k = 2, ...),
    repaired; new distinct candidates only, at most `budget` of them."""
    X = np.atleast_2d(np.asarray(X, dtype=int))
    seen, out = {tuple(x) for x in X}, []
    for k in range(1, len(scan.genes) + 1):
        candidates = X.copy()
        candidates[:, scan.genes[:k]] = scan.levels[:k]
        for c in repair(candidates):
            if len(out) >= budget:
                return np.array(out, dtype=int).reshape(-1, X.shape[1])
            if tuple(c) not in seen:
                seen.add(tuple(c))
                out.append(c)
    return np.array(out, dtype=int).reshape(-1, X.shape[1])
