"""Latency of candidates: the profiling plan a model needs, and candidates priced with a kernel predictor.

A candidate's latency is the sum of its kernels' predicted latencies plus a per-network overhead, each layer priced
as the device's runtime runs it (profiler.runtimes). On most runtimes each sparse layer runs at its own density and
is priced at the faster of its sparse and dense forms, the choice the exporter makes too. XNNPACK decides for a whole
cluster of layers at once (its `SparseCluster`): a candidate is priced in the regime its densities put the cluster in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from profiler import xnnpack
from profiler.kernel import KernelSpec
from profiler.runtimes import Runtime
from profiler.runtimes.base import faster_forms
from profiler.runtimes.xnnpack import SparseCluster
from pruner.deploy.export import export
from pruner.search.space import SearchSpace

PredictFn = Callable[[Sequence[KernelSpec]], np.ndarray]  # kernel specs -> latency in ms
NEAR_MISS = 0.15
"""XNNPACK repair: a candidate whose cluster's zero share is within this of the gate is pushed over it."""


def model_cluster(model: nn.Module, input_shape: tuple[int, ...], runtime: Runtime) -> SparseCluster | None:
    """The part of `model` the runtime runs in its sparse regime as one (Runtime.cluster), found by exporting it."""
    exported = export(model.eval(), input_shape, runtime)
    return runtime.cluster([layer.name for layer in exported.layers], exported.analysis)


def device_latency(space: SearchSpace, predictor, block: str, cluster: SparseCluster | None) -> CandidateLatency:
    """The search's price on a device: `predictor` (a predictor.LatencyModel) with its per-network overhead, the
    device's sparsity `block` and the model's `cluster` on its runtime (`model_cluster`)."""
    n = len(space.graph.layers)
    sparse = predictor.sparse_overhead(n) if predictor.sparse_overhead is not None else None
    return CandidateLatency(space, predictor.predict, block, predictor.overhead(n), cluster, sparse)


def overhead_probes(space: SearchSpace, cluster: SparseCluster | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random candidates whose end-to-end latency fits the per-network overhead; with a `cluster`, every other
    one with its densities at their floors, so networks running sparse are measured too (their overhead is fitted
    apart: LatencyModel.fit_overhead)."""
    X = space.sample(rng, n)
    if cluster is not None and not cluster.blocked:
        X[1::2, space.n_width:] = space.lower[space.n_width:]
    return X


def profiling_plan(
    space: SearchSpace, runtime: Runtime, candidates: int = 24, seed: int = 0, cluster: SparseCluster | None = None
) -> list[KernelSpec]:
    """The distinct kernels of random candidates plus the smallest and full ones, in every form the runtime may run
    them (Runtime.measured_forms): what a predictor for this model's search must have seen."""
    rng = np.random.default_rng(seed)
    genes = np.vstack([space.lower, space.full(), space.sample(rng, candidates)])
    plan: dict[tuple, KernelSpec] = {}
    for x in genes:
        for name, spec in space.kernel_specs(x, runtime.block).items():
            for s in runtime.measured_forms(name, spec, cluster):
                plan.setdefault(s.key(), s)
    return list(plan.values())


@dataclass
class CandidateLatency:
    """Prices gene vectors on one device: kernel predictions summed, plus `overhead_ms` per network.

    `cluster` is given on runtimes that decide sparse-or-dense for a cluster of layers at once (XNNPACK): layers
    are then priced in the regime the candidate's densities put the whole cluster in, plus `sparse_overhead_ms`
    (when fitted) for a network running sparse, and the repair is the gate's."""

    space: SearchSpace
    predict: PredictFn
    block: str
    overhead_ms: float = 0.0
    cluster: SparseCluster | None = None
    sparse_overhead_ms: float | None = None

    def _priced_rows(self, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Layer names, then per row of X and layer: the latency of the form the device runs and whether it is dense
        storage of a sparse layer (both [rows, layers]), and per row whether it runs in a sparse cluster; one
        predictor call for all rows."""
        per_row = [self.space.kernel_specs(x, self.block) for x in X]
        names = list(per_row[0]) if per_row else []
        specs = [spec for row in per_row for spec in row.values()]
        if self.cluster is None:
            cost, as_dense = faster_forms(self.predict, specs)
            sparse_rows = np.zeros(len(X), dtype=bool)
        else:
            cost, as_dense, sparse_rows = self.cluster.price(per_row, self.predict)
        return names, cost.reshape(len(X), len(names)), as_dense.reshape(len(X), len(names)), sparse_rows

    def layer_choices(self, x: Sequence[int] | np.ndarray) -> dict[str, tuple[KernelSpec, float]]:
        """Per layer: the spec as it will be exported (dense where faster) and its predicted latency."""
        specs = self.space.kernel_specs(x, self.block)
        _, cost, as_dense, _ = self._priced_rows(np.atleast_2d(x))
        return {
            name: (spec.replace(density=1.0) if dense else spec, float(c))
            for (name, spec), c, dense in zip(specs.items(), cost[0], as_dense[0], strict=True)
        }

    def repair(self, X: np.ndarray) -> np.ndarray:
        """X with a layer's density gene set to dense where the device would run that layer dense anyway.

        The search's repair: the candidate keeps its predicted latency and loses zeroed weights that cost
        accuracy and buy no speed (on TFLite's built-in kernels, sparse only pays at low density; on XNNPACK,
        no layer pays unless the whole cluster passes the gate: `gate_repair`)."""
        X = np.array(np.atleast_2d(X), dtype=int)
        if not len(X):
            return X
        if self.cluster is not None:
            return self.gate_repair(X)
        names, _, as_dense, _ = self._priced_rows(X)
        prunable = [names.index(layer.name) for layer in self.space.graph.prunable]
        n_width = self.space.n_width
        X[:, n_width:] = np.where(as_dense[:, prunable], self.space.upper[n_width:], X[:, n_width:])
        return X

    def gate_repair(self, X: np.ndarray, reach: float = NEAR_MISS) -> np.ndarray:
        """XNNPACK's repair: a candidate whose cluster passes the gate is kept; one within `reach` of it (zero share
        over GATE - reach) is pushed over, its gated layers lowered one grid step at a time, largest first, within
        their bounds; every other candidate is made dense (its zeros buy nothing: the cluster runs NHWC)."""
        n_width, prunable = self.space.n_width, [layer.name for layer in self.space.graph.prunable]
        steps = sorted((prunable.index(n) for n in self.cluster.gated if n in prunable),
                       key=lambda i: -self.space.graph.prunable[i].cin * self.space.graph.prunable[i].cout)
        out = X.copy()
        for row in out:
            specs = self.space.kernel_specs(row, self.block)
            if self.cluster.sparse(specs):
                continue
            zeros, params = self.cluster.zeros_and_params(specs)
            pushed, sparse = row.copy(), False
            if params and zeros / params > xnnpack.GATE - reach:
                while not sparse:
                    movable = [n_width + i for i in steps if pushed[n_width + i] > self.space.lower[n_width + i]]
                    if not movable:
                        break
                    pushed[movable[0]] -= 1
                    steps = steps[1:] + steps[:1]  # round robin, so no one layer goes to its floor alone
                    sparse = self.cluster.sparse(self.space.kernel_specs(pushed, self.block))
            if sparse:
                row[:] = pushed
            else:
                row[n_width:] = self.space.upper[n_width:]
        return out

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each row of X, with one batched predictor call for all rows."""
        _, cost, _, sparse_rows = self._priced_rows(np.atleast_2d(X))
        sparse_overhead = self.overhead_ms if self.sparse_overhead_ms is None else self.sparse_overhead_ms
        return cost.sum(axis=1) + np.where(sparse_rows, sparse_overhead, self.overhead_ms)
