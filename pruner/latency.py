"""Latency of candidates: the profiling plan a model needs, and candidates priced with a kernel predictor.

A candidate's latency is the sum of its kernels' predicted latencies plus a per-network overhead. On a
device whose sparse kernels can be slower than dense ones (TFLite's built-in sparse FULLY_CONNECTED at
high density), each sparse layer is priced at the faster of its sparse and dense forms, which is the
choice the exporter makes with `prefer_dense`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from profiler.kernel import KernelSpec
from pruner.space import SearchSpace

PredictFn = Callable[[Sequence[KernelSpec]], np.ndarray]  # kernel specs -> latency in ms


def profiling_plan(space: SearchSpace, block: str, candidates: int = 24, seed: int = 0) -> list[KernelSpec]:
    """The distinct kernels of random candidates plus the smallest and full ones, with dense twins of
    every sparse kernel: what a predictor for this model's search must have seen."""
    rng = np.random.default_rng(seed)
    genes = np.vstack([space.lower, space.full(), space.sample(rng, candidates)])
    plan: dict[tuple, KernelSpec] = {}
    for x in genes:
        for spec in space.kernel_specs(x, block).values():
            for s in (spec, spec.replace(density=1.0)):
                plan.setdefault(s.key(), s)
    return list(plan.values())


@dataclass
class CandidateLatency:
    """Prices gene vectors on one device: kernel predictions summed, plus `overhead_ms` per network."""

    space: SearchSpace
    predict: PredictFn
    block: str
    overhead_ms: float = 0.0

    def _priced_rows(self, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Layer names, then per row of X and layer: the faster form's latency and whether it is dense storage
        of a sparse layer (both [rows, layers]), with one predictor call for all rows."""
        per_row = [self.space.kernel_specs(x, self.block) for x in X]
        names = list(per_row[0]) if per_row else []
        cost, as_dense = faster_forms(self.predict, [spec for specs in per_row for spec in specs.values()])
        return names, cost.reshape(len(X), len(names)), as_dense.reshape(len(X), len(names))

    def layer_choices(self, x: Sequence[int] | np.ndarray) -> dict[str, tuple[KernelSpec, float]]:
        """Per layer: the spec as it will be exported (dense where faster) and its predicted latency."""
        specs = self.space.kernel_specs(x, self.block)
        cost, as_dense = faster_forms(self.predict, list(specs.values()))
        return {
            name: (spec.replace(density=1.0) if dense else spec, float(c))
            for (name, spec), c, dense in zip(specs.items(), cost, as_dense, strict=True)
        }

    def densify(self, X: np.ndarray) -> np.ndarray:
        """X with a layer's density gene set to dense where the device would run that layer dense anyway.

        The search's repair: the candidate keeps its predicted latency and loses zeroed weights that cost
        accuracy and buy no speed (on TFLite's built-in kernels, sparse only pays at low density)."""
        X = np.array(np.atleast_2d(X), dtype=int)
        if not len(X):
            return X
        names, _, as_dense = self._priced_rows(X)
        prunable = [names.index(layer.name) for layer in self.space.graph.prunable]
        n_width = self.space.n_width
        X[:, n_width:] = np.where(as_dense[:, prunable], self.space.upper[n_width:], X[:, n_width:])
        return X

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each row of X, with one batched predictor call for all rows."""
        _, cost, _ = self._priced_rows(np.atleast_2d(X))
        return cost.sum(axis=1) + self.overhead_ms


def faster_forms(predict: PredictFn, specs: list[KernelSpec]) -> tuple[np.ndarray, np.ndarray]:
    """Each spec's latency at its faster form, and whether that form is dense storage of a sparse layer: the
    one rule both the search's price and the exporter's choice follow."""
    sparse = [i for i, s in enumerate(specs) if s.is_sparse]
    lat = np.asarray(predict([*specs, *(specs[i].replace(density=1.0) for i in sparse)]), dtype=float)
    cost, as_dense = lat[: len(specs)].copy(), np.zeros(len(specs), dtype=bool)
    as_dense[sparse] = lat[len(specs):] < cost[sparse]
    cost[sparse] = np.minimum(cost[sparse], lat[len(specs):])
    return cost, as_dense


def prefer_dense(predict: PredictFn) -> Callable[[list[KernelSpec]], list[bool]]:
    """The exporter's per-layer choice, in one predictor call: store a sparse layer dense when dense is
    predicted faster."""

    def choose(specs: list[KernelSpec]) -> list[bool]:
        return faster_forms(predict, specs)[1].tolist()

    return choose
