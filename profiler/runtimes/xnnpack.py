"""LiteRT with the XNNPACK delegate: the default CPU path of TFLite on phones.

XNNPACK does not decide sparse-or-dense per layer: it runs a whole cluster of the graph (entry conv ... exit) in
NCHW, every node on a CHW kernel and the 1x1 convs as SpMM, only when the cluster's structure allows it, its 1x1 convs
hold more than 2/3 zeros and its partition carries a DENSIFY (the sparse hint); otherwise everything runs dense NHWC
(the rules: profiler.xnnpack). So sparse weights are stored sparse behind DENSIFY and k > 1 convs padded explicitly
(the subgraph XNNPACK needs), kernels are profiled in both regimes (`layout` "nhwc" and, inside a wrapper cluster that
passes the gate, "nchw"), and a candidate is priced in the regime its densities put the whole cluster in
(`SparseCluster`). On x86 with AVX XNNPACK never runs the sparse path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler import xnnpack
from profiler.harness import random_weights
from profiler.kernel import KernelSpec, runs_chw
from profiler.runtimes.base import PredictFn
from profiler.runtimes.tflite import TFLiteRuntime
from profiler.sparsity import zero_count
from profiler.tflite_writer import TFLiteModel

BALLAST_DENSITY = 0.05
"""Density of the 1x1 conv that keeps an NCHW wrapper's cluster over XNNPACK's 2/3-zeros gate."""


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

    def price(self, rows: list[dict[str, KernelSpec]], predict: PredictFn) -> tuple[np.ndarray, ...]:
        """Per candidate (its specs by layer) and layer: the latency of the form XNNPACK runs (one predictor call) and
        whether that is dense storage of a sparse layer, both flat; and per candidate whether it runs sparse."""
        priced = [list(self.priced_specs(specs).values()) for specs in rows]
        cost = np.asarray(predict([s for specs in priced for s in specs]), dtype=float)
        as_dense = np.array([spec.is_sparse and not p.is_sparse for specs, ps in zip(rows, priced, strict=True)
                             for spec, p in zip(specs.values(), ps, strict=True)], dtype=bool)
        sparse_rows = np.array([any(p.layout == "nchw" for p in ps) for ps in priced], dtype=bool)
        return cost, as_dense, sparse_rows


class XnnpackRuntime(TFLiteRuntime):
    name = "xnnpack"
    description = "LiteRT with XNNPACK: a whole cluster runs sparse (NCHW) when its 1x1 convs are over 2/3 zeros"
    density_floors = {"residual": 0.1, "last": 0.2, "general": 0.1}
    """XNNPACK's sparse path needs more than 2/3 zeros in the 1x1 convs of the whole cluster: with JCW's floors a
    full-width MobileNetV2 tops out at 66.1% and never runs sparse."""
    weight_stage = 0.0
    """No layer is faster sparse alone (the whole cluster must pass the gate): the one-layer scan finds nothing."""

    def runner_options(self) -> dict:
        return {"runtime": self.package, "xnnpack": True}

    def kernel_model(self, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray) -> bytes:
        """One kernel; in the nchw layout inside `nchw_wrapper`'s cluster."""
        if spec.layout == "nchw":
            return self.nchw_wrapper(spec, (weight, bias)).to_bytes()
        return super().kernel_model(spec, weight, bias)

    def baseline_model(self, spec: KernelSpec) -> tuple[str, bytes]:
        """The empty harness, or for an nchw kernel the wrapper cluster without it."""
        if spec.layout == "nchw":
            return f"nchw_{spec.h}x{spec.w}_{spec.cin}_{_ballast_channels(spec)}", self.nchw_wrapper(spec).to_bytes()
        return super().baseline_model(spec)

    def nchw_wrapper(self, spec: KernelSpec, kernel: tuple[np.ndarray, np.ndarray] | None = None) -> TFLiteModel:
        """A cluster XNNPACK runs in NCHW whatever the kernel's density: PAD -> 3x3/2 stem conv on 3 channels, then
        two branches, [the kernel] -> MEAN and a 1x1 "ballast" conv at 5% density -> MEAN whose zeros carry the
        gate. The ballast is a side branch, so the wrapper around a kernel stays small (cheap next to the kernel it
        times); without the kernel, it is the kernel's baseline."""
        rng = np.random.default_rng(0)
        stem = KernelSpec("conv", 2 * spec.h, 2 * spec.w, 3, spec.cin, k=3, stride=2, activation="relu")
        ballast = KernelSpec("conv", spec.h, spec.w, spec.cin, _ballast_channels(spec), density=BALLAST_DENSITY)
        m = TFLiteModel()
        x = self.lower(m, m.input("x", (1, stem.h, stem.w, 3)), stem, *random_weights(stem, rng), "stem")
        side = self.lower(m, x, ballast, *random_weights(ballast, rng), "ballast")
        m.outputs = [m.mean(side, [1, 2], name="ballast_pool")]
        if kernel is not None:
            y = self.lower(m, x, spec, *kernel, "kernel")
            m.outputs.insert(0, m.mean(y, [1, 2], name="pool"))
        return m

    def analyse_model(self, m: TFLiteModel) -> tuple[xnnpack.Cluster, ...]:
        return tuple(xnnpack.analyse(m))

    def stored_dense(self, analysis: tuple, kept: set[str], sparse: set[str]) -> set[str] | None:
        """The sparse layers to store dense instead of `kept`, where storage changes what XNNPACK runs (only the hint
        does: dense-stored zeros count and run SpMM too): a cluster that would run with wrong results (a dangling
        node) gets no DENSIFY at all, so it runs dense; a cluster over the gate whose partition lacks a DENSIFY gets
        its kept-dense 1x1 convs stored sparse again, so the hint is on. None when nothing changes."""
        if any(cluster.broken for cluster in analysis):
            return set(sparse)
        restore = {n for c in analysis if c.passes and not c.hint and not c.dangling for n in c.gated} & kept
        return kept - restore if restore else None

    def in_layouts(self, specs: dict[str, KernelSpec], analysis: tuple) -> dict[str, KernelSpec]:
        """Layers a sparse cluster runs on CHW kernels, in the nchw layout."""
        nchw = {n for cluster in analysis if cluster.sparse for n in cluster.nchw}
        return {n: s.replace(layout="nchw") if n in nchw and runs_chw(s.op, s.k, s.stride) else s
                for n, s in specs.items()}

    def as_run(self, specs: dict[str, KernelSpec], analysis: tuple) -> dict[str, KernelSpec]:
        """The nchw layers at their density, every other layer dense (XNNPACK densifies outside a sparse cluster)."""
        return {n: s if s.layout == "nchw" else s.replace(density=1.0)
                for n, s in self.in_layouts(specs, analysis).items()}

    def verdict(self, analysis: tuple) -> dict:
        return xnnpack.verdict_of(analysis)

    def run_density(self, df: pd.DataFrame) -> np.ndarray:
        """A kernel runs at its density only in the nchw layout (inside a cluster over the gate); dense otherwise."""
        nchw = (df["layout"].to_numpy() == "nchw") & (df["op"].to_numpy() != "dwconv")
        return np.where(nchw, df["density"].to_numpy(), 1.0).astype(np.float64)

    def measured_forms(self, name: str, spec: KernelSpec, cluster: SparseCluster | None = None) -> list[KernelSpec]:
        """The layer dense in the nhwc layout and, where the cluster can run sparse, in the nchw layout at the
        candidate's density and dense."""
        forms = [spec.replace(density=1.0)]
        if cluster is not None and not cluster.blocked and cluster.runs_nchw(name, spec):
            forms += [f.replace(layout="nchw") for f in (spec, spec.replace(density=1.0))]
        return forms

    def cluster(self, layers: Sequence[str], analysis: tuple) -> SparseCluster:
        """The model's main cluster (the largest that can run sparse) restricted to its priced `layers`; one with a
        dangling node is blocked (the exporter stores it without DENSIFY: `stored_dense`)."""
        if not analysis:
            return SparseCluster(frozenset(), (), xnnpack.verdict_of(analysis)["reason"])
        main = max(analysis, key=lambda c: (c.block is None and not c.dangling, c.params))
        blocked = main.blocked or (f"'{main.dangling[0]}' would read NCHW data and write NHWC (an XNNPACK bug): the "
                                   "exporter stores the cluster without DENSIFY" if main.dangling else "")
        names = set(layers)
        return SparseCluster(frozenset(n for n in main.nodes if n in names),
                             tuple(n for n in main.gated if n in names), blocked)


def _ballast_channels(spec: KernelSpec) -> int:
    """Output channels of the wrapper's ballast: enough that its zeros outweigh a dense kernel's weights at the gate
    (3 * 0.95 * cin * b > 2 * (cin * b + cin * cout) needs b > 2.35 * cout), in steps of 16 so baselines are shared."""
    gated = spec.cout if spec.op == "conv" else 0
    return 16 * (int(2.4 * gated) // 16 + 1)

