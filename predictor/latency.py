"""LatencyModel: the predictor's API for the CLI and the pruner (fit, predict kernels, predict networks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from predictor import metrics, network
from predictor.models import MODELS
from predictor.table import CONTEXT, TARGET, check_specs, normalise, specs_frame, typed
from profiler.errors import UserError
from profiler.kernel import FIELDS, KernelSpec

Kernels = Sequence[KernelSpec] | pd.DataFrame


@dataclass(frozen=True)
class Target:
    """What a latency model was fitted on: the device, its runtime (profiler.runtimes), the runtime package's version
    and the sparsity block of its kernels. A model prices kernels as that device runs them; another device's latencies
    are another function."""

    device: str
    runtime: str
    runtime_version: str
    block: str

    def __str__(self) -> str:
        return f"'{self.device}' ({self.runtime}, {self.block})"

    def same_device(self, other: Target) -> bool:
        """Same device, runtime and block (an upgrade of the runtime's package on the same device is that device)."""
        return (self.device, self.runtime, self.block) == (other.device, other.runtime, other.block)


def runs_sparse(kernels: Kernels) -> bool:
    """Whether a network's kernels say XNNPACK runs it sparse: any of them in the nchw layout."""
    if isinstance(kernels, pd.DataFrame):
        return "layout" in kernels and bool((kernels["layout"] == "nchw").any())
    return any(k.layout == "nchw" for k in kernels)


class LatencyModel:
    """A fitted latency regressor with its training table, device contexts and network overhead."""

    def __init__(self, kind: str, regressor, training: pd.DataFrame, overhead: network.Overhead):
        self.kind = kind
        self.regressor = regressor
        self.training = training
        self.overhead = overhead
        self.sparse_overhead: network.Overhead | None = None  # networks XNNPACK runs sparse, when fitted
        self.quality: dict | None = None  # held-out accuracy and the table's noise (predictor.quality), when assessed
        self.contexts = sorted(training[list(CONTEXT)].drop_duplicates().itertuples(index=False, name=None))

    @property
    def fitted_on(self) -> Target | None:
        """The device the training table was measured on; None when its rows name none, or several contexts.
        The block is the one most of its rows were pruned in."""
        if len(self.contexts) != 1 or not self.contexts[0][0]:
            return None
        return Target(*self.contexts[0], block=str(self.training["block"].mode().iloc[0]))

    @classmethod
    def fit(cls, data: pd.DataFrame, kind: str = "physics", source: str = "table") -> LatencyModel:
        """Fit a regressor (`kind` from predictor.models.MODELS) on a raw or normalised table."""
        if kind not in MODELS:
            raise UserError(f"unknown model kind '{kind}'; choose one of {', '.join(MODELS)}")
        df = normalise(data, source)
        return cls(kind, MODELS[kind]().fit(df), df, network.Overhead())

    def _frame(self, kernels: Kernels, context: dict[str, str | None], source: str = "kernels to predict"
               ) -> pd.DataFrame:
        """Kernels as a typed frame (table.typed; its kernels not yet checked) whose context is filled in (or checked
        against the model); errors in a table of kernels name `source`."""
        if isinstance(kernels, pd.DataFrame):
            df = typed(kernels, source, need_latency=False)
        else:
            df = specs_frame(kernels)
        given = {k: v for k, v in context.items() if v is not None}
        for k, v in given.items():
            df[k] = v
        if not given and len(self.contexts) == 1 and (df[list(CONTEXT)] == "").all(axis=None):
            df[list(CONTEXT)] = self.contexts[0]
            return df  # every kernel in the model's one context
        unknown = set(df[list(CONTEXT)].drop_duplicates().itertuples(index=False, name=None)) - set(self.contexts)
        if unknown:
            raise UserError(
                f"the model was fitted for (device, runtime, runtime_version) {self.contexts}; "
                f"it has no data for {sorted(unknown)}: pass device=/runtime=/runtime_version="
            )
        return df

    def predict(
        self,
        kernels: Kernels,
        device: str | None = None,
        runtime: str | None = None,
        runtime_version: str | None = None,
        source: str = "kernels to predict",
    ) -> np.ndarray:
        """Latency in ms of each kernel (KernelSpecs or a table of their fields, errors naming `source`), in input
        order.

        Identical kernels are checked (a table's) and predicted once (a search asks for the same ones again and again).
        """
        df = self._frame(kernels, {"device": device, "runtime": runtime, "runtime_version": runtime_version}, source)
        codes = df.groupby([*FIELDS, *CONTEXT], sort=False).ngroup().to_numpy()
        first = np.full(codes.max() + 1, len(codes))
        np.minimum.at(first, codes, np.arange(len(codes)))  # each kernel's first row (np.unique sorts: slower)
        if isinstance(kernels, pd.DataFrame):  # KernelSpecs are checked when made
            check_specs(df, source, first)
        return self.regressor.predict(df.iloc[first].reset_index(drop=True))[codes]

    def network_overhead(self, kernels: Kernels) -> float:
        """The per-network overhead (ms) of a network of these kernels: `sparse_overhead` where XNNPACK runs it
        sparse (any kernel in the nchw layout) and one was fitted, `overhead` otherwise."""
        sparse = self.sparse_overhead is not None and runs_sparse(kernels)
        return (self.sparse_overhead if sparse else self.overhead)(len(kernels))

    def predict_network(
        self,
        kernels: Kernels,
        device: str | None = None,
        runtime: str | None = None,
        runtime_version: str | None = None,
    ) -> float:
        """Latency in ms of a whole network: its kernels' sum plus the fitted per-network overhead."""
        return float(self.predict(kernels, device, runtime, runtime_version).sum()) + self.network_overhead(kernels)

    def fit_overhead(
        self,
        networks: Sequence[Kernels],
        measured_ms: Sequence[float],
        device: str | None = None,
        runtime: str | None = None,
        runtime_version: str | None = None,
    ) -> network.Overhead:
        """Fit the per-network overhead from end-to-end latencies of whole networks; returns it.

        Networks XNNPACK runs sparse (kernels in the nchw layout) get an overhead of their own, `sparse_overhead`,
        when any were measured: their layout conversions, adds and global mean run on CHW kernels."""
        sums = np.array([float(self.predict(n, device, runtime, runtime_version).sum()) for n in networks])
        sizes, measured_ms = np.array([len(n) for n in networks]), np.asarray(measured_ms, dtype=float)
        sparse = np.array([runs_sparse(n) for n in networks], dtype=bool)
        if sparse.any():
            self.sparse_overhead = network.fit_overhead(sums[sparse], sizes[sparse], measured_ms[sparse])
        if (~sparse).any() or not sparse.any():  # (no network at all: fit_overhead says so)
            self.overhead = network.fit_overhead(sums[~sparse], sizes[~sparse], measured_ms[~sparse])
        return self.overhead

    def overhead_held_out(self, networks: Sequence[Kernels], measured_ms: Sequence[float]) -> np.ndarray:
        """Each network's gap (predicted / measured - 1) when the overhead of its regime (fit_overhead's sparse or
        dense networks) is fitted on the other networks alone: how well the overhead predicts a network it has not
        seen. The model's own overheads are left as they are."""
        sums = np.array([float(self.predict(n).sum()) for n in networks])
        sizes, measured_ms = np.array([len(n) for n in networks]), np.asarray(measured_ms, dtype=float)
        sparse = np.array([runs_sparse(n) for n in networks], dtype=bool)
        gaps = np.full(len(networks), np.nan)
        for i in range(len(networks)):
            others = np.flatnonzero(sparse == sparse[i])
            others = others[others != i]
            if len(others):
                overhead = network.fit_overhead(sums[others], sizes[others], measured_ms[others])
                gaps[i] = (sums[i] + overhead(int(sizes[i]))) / measured_ms[i] - 1
        return gaps

    def evaluate(self, data: pd.DataFrame) -> dict[str, float]:
        """RMSPE and shares within +-5% / +-10% on a table with measured latency_ms."""
        df = normalise(data, "evaluation table")
        return metrics.summary(df[TARGET].to_numpy(), self.regressor.predict(df))
