"""Latency of candidates: the profiling plan a model needs, and candidates priced with a kernel predictor.

A candidate's latency is the sum of its kernels' predicted latencies plus a per-network overhead. On a
device whose sparse kernels can be slower than dense ones (TFLite's built-in sparse FULLY_CONNECTED at
high density), each sparse layer is priced at the faster of its sparse and dense forms, which is the
choice the exporter makes with `prefer_dense`. On an XNNPACK device the choice is not per layer: XNNPACK
runs the model's cluster (stem conv ... global mean) in NCHW, every layer of it on a CHW kernel, only when
its 1x1 convs hold more than 2/3 zeros (profiler.xnnpack), and everything dense NHWC otherwise; a candidate
is priced in the regime its densities put the cluster in (`SparseCluster`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from profiler import xnnpack
from profiler.kernel import KernelSpec, runs_chw
from profiler.sparsity import zero_count
from pruner.deploy.export import export
from pruner.search.space import SearchSpace

PredictFn = Callable[[Sequence[KernelSpec]], np.ndarray]  # kernel specs -> latency in ms
NEAR_MISS = 0.15
"""XNNPACK repair: a candidate whose cluster's zero share is within this of the gate is pushed over it."""


@dataclass(frozen=True)
class SparseCluster:
    """The layers of a model that XNNPACK can run in NCHW (entry conv to global mean) and the 1x1 convs whose zeros
    its gate counts; `blocked` says why the structure never runs sparse ("" when it can)."""

    layers: frozenset[str]
    gated: tuple[str, ...]
    blocked: str

    def runs_nchw(self, name: str, spec: KernelSpec) -> bool:
        """Whether a layer of a sparse cluster runs on a CHW kernel the profiler measures in the nchw layout."""
        return name in self.layers and runs_chw(spec.op, spec.k, spec.stride)

    def zeros_and_params(self, specs: dict[str, KernelSpec]) -> tuple[int, int]:
        """The gated layers' zero weights (counted as profiler.sparsity.block_mask makes them) and all their weights,
        for a candidate's kernel specs by layer name."""
        gated = [specs[name] for name in self.gated]
        return sum(zero_count(s) for s in gated), sum(s.cin * s.cout for s in gated)

    def sparse(self, specs: dict[str, KernelSpec]) -> bool:
        """Whether XNNPACK runs a candidate (its kernel specs by layer name) sparse: the structure allows it and
        the gated layers' zeros pass the gate."""
        return not self.blocked and xnnpack.passes_gate(*self.zeros_and_params(specs))

    def priced_specs(self, specs: dict[str, KernelSpec]) -> dict[str, KernelSpec]:
        """Each layer as XNNPACK runs it: in the nchw layout inside a sparse cluster, dense nhwc otherwise."""
        if self.sparse(specs):
            return {n: s.replace(layout="nchw") if self.runs_nchw(n, s) else s.replace(density=1.0)
                    for n, s in specs.items()}
        return {n: s.replace(density=1.0) for n, s in specs.items()}


def sparse_cluster(model: nn.Module, input_shape: tuple[int, ...], block: str) -> SparseCluster:
    """The model's XNNPACK cluster, found by exporting it for the "xnnpack" flavour and asking profiler.xnnpack."""
    exported = export(model.eval(), input_shape, "xnnpack", block)
    if not exported.clusters:
        return SparseCluster(frozenset(), (), exported.xnnpack["reason"])
    main = max(exported.clusters, key=lambda c: (not c.blocked, c.params))
    layers = {layer.name for layer in exported.layers}
    return SparseCluster(frozenset(n for n in main.nodes if n in layers), tuple(n for n in main.gated if n in layers),
                         main.blocked)


def device_latency(
    space: SearchSpace, model: nn.Module, input_shape: tuple[int, ...], flavour: str, block: str, predictor
) -> CandidateLatency:
    """The search's price on a device: `predictor` (a predictor.LatencyModel) with its per-network overhead and, on
    XNNPACK devices (`flavour` "xnnpack"), the model's sparse cluster."""
    cluster = sparse_cluster(model, input_shape, block) if flavour == "xnnpack" else None
    n = len(space.graph.layers)
    sparse = predictor.sparse_overhead(n) if predictor.sparse_overhead is not None else None
    return CandidateLatency(space, predictor.predict, block, predictor.overhead(n), cluster, sparse)


def overhead_probes(space: SearchSpace, cluster: SparseCluster | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random candidates whose end-to-end latency fits the per-network overhead; with an XNNPACK `cluster`, every
    other one with its densities at their floors, so networks running sparse are measured too (their overhead is
    fitted apart: LatencyModel.fit_overhead)."""
    X = space.sample(rng, n)
    if cluster is not None and not cluster.blocked:
        X[1::2, space.n_width:] = space.lower[space.n_width:]
    return X


def profiling_plan(
    space: SearchSpace, block: str, candidates: int = 24, seed: int = 0, cluster: SparseCluster | None = None
) -> list[KernelSpec]:
    """The distinct kernels of random candidates plus the smallest and full ones, with dense twins of
    every sparse kernel: what a predictor for this model's search must have seen. With an XNNPACK `cluster`,
    every layer dense in the nhwc layout and, where the cluster can run sparse, its layers in the nchw layout at
    the candidate's density and dense."""
    rng = np.random.default_rng(seed)
    genes = np.vstack([space.lower, space.full(), space.sample(rng, candidates)])
    plan: dict[tuple, KernelSpec] = {}
    for x in genes:
        for name, spec in space.kernel_specs(x, block).items():
            forms = [spec, spec.replace(density=1.0)]
            if cluster is not None:
                forms = [spec.replace(density=1.0)]
                if not cluster.blocked and cluster.runs_nchw(name, spec):
                    forms += [f.replace(layout="nchw") for f in (spec, spec.replace(density=1.0))]
            for s in forms:
                plan.setdefault(s.key(), s)
    return list(plan.values())


@dataclass
class CandidateLatency:
    """Prices gene vectors on one device: kernel predictions summed, plus `overhead_ms` per network.

    `cluster` is given on XNNPACK devices (see `sparse_cluster`): layers are then priced in the regime the
    candidate's densities put the whole cluster in, plus `sparse_overhead_ms` (when fitted) for a network running
    sparse, and the repair is the gate's."""

    space: SearchSpace
    predict: PredictFn
    block: str
    overhead_ms: float = 0.0
    cluster: SparseCluster | None = None
    sparse_overhead_ms: float | None = None

    def _priced_rows(self, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Layer names, then per row of X and layer: the latency of the form the device runs and whether it is dense
        storage of a sparse layer (both [rows, layers]), and per row whether XNNPACK runs it sparse; one predictor
        call for all rows."""
        per_row = [self.space.kernel_specs(x, self.block) for x in X]
        names = list(per_row[0]) if per_row else []
        if self.cluster is None:
            cost, as_dense = faster_forms(self.predict, [spec for specs in per_row for spec in specs.values()])
            sparse_rows = np.zeros(len(X), dtype=bool)
        else:
            priced = [list(self.cluster.priced_specs(specs).values()) for specs in per_row]
            cost = np.asarray(self.predict([s for specs in priced for s in specs]), dtype=float)
            as_dense = np.array([spec.is_sparse and not p.is_sparse for specs, ps in zip(per_row, priced, strict=True)
                                 for spec, p in zip(specs.values(), ps, strict=True)])
            sparse_rows = np.array([any(p.layout == "nchw" for p in ps) for ps in priced], dtype=bool)
        return names, cost.reshape(len(X), len(names)), as_dense.reshape(len(X), len(names)), sparse_rows

    def layer_choices(self, x: Sequence[int] | np.ndarray) -> dict[str, tuple[KernelSpec, float]]:
        """Per layer: the spec as it will be exported (dense where faster) and its predicted latency."""
        specs = self.space.kernel_specs(x, self.block)
        _, cost, as_dense, _ = self._priced_rows(np.atleast_2d(x))
        return {
            name: (spec.replace(density=1.0) if dense else spec, float(c))
            for (name, spec), c, dense in zip(specs.items(), cost[0], as_dense[0], strict=True)
        }

    def densify(self, X: np.ndarray) -> np.ndarray:
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
