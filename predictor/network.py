"""Whole-network latency: the sum of its kernels plus a per-network overhead fitted from end-to-end runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiler.errors import UserError

MIN_NETWORKS = 3
"""Networks a per-network overhead is calibrated on, at least: it has two parameters (per network, per layer), and
a third network of another size is the first that can disagree with a line through the other two."""


@dataclass(frozen=True)
class Overhead:
    """Latency a whole network adds beyond its kernels: a constant plus a cost per kernel (ms)."""

    per_network_ms: float = 0.0
    per_kernel_ms: float = 0.0

    def __call__(self, n_kernels: int) -> float:
        return self.per_network_ms + self.per_kernel_ms * n_kernels


def fit_overhead(kernel_sums_ms: np.ndarray, n_kernels: np.ndarray, measured_ms: np.ndarray) -> Overhead:
    """Fit measured = kernel sum + a + b * n_kernels; with fewer than 3 networks (or one size) only a."""
    kernel_sums_ms, n_kernels = np.asarray(kernel_sums_ms, float), np.asarray(n_kernels, float)
    measured_ms = np.asarray(measured_ms, float)
    if not len(measured_ms) or len(measured_ms) != len(kernel_sums_ms) or len(n_kernels) != len(measured_ms):
        raise UserError("network overhead: need one measured latency per network, and at least one network")
    if not np.all(np.isfinite(measured_ms) & (measured_ms > 0)):
        raise UserError("network overhead: measured latencies must be positive numbers")
    gap = measured_ms - kernel_sums_ms
    if len(gap) < 3 or np.unique(n_kernels).size < 2:
        return Overhead(per_network_ms=float(gap.mean()))
    from sklearn.linear_model import LinearRegression  # fitting only: loading a model file need not import it

    fit = LinearRegression().fit(n_kernels[:, None], gap)
    return Overhead(per_network_ms=float(fit.intercept_), per_kernel_ms=float(fit.coef_[0]))


def check_calibration(files: Sequence[str | Path], layers: Sequence[int], regime: str = "") -> str:
    """Refuse to calibrate an overhead on fewer than MIN_NETWORKS networks, naming the files and their sizes (layer
    counts); `regime` names the group they form (XNNPACK's sparse or dense networks). Networks all of one size
    cannot tell the per-layer overhead from the per-network one (fit_overhead then fits the latter alone): the
    returned note says so ("" otherwise)."""
    group = f"{regime} network" if regime else "network"
    sizes = sorted(set(int(n) for n in layers))
    if len(files) < MIN_NETWORKS:
        names = ", ".join(f"{Path(f).name} ({n} layers)" for f, n in zip(files, layers, strict=True))
        raise UserError(f"{len(files)} {group}{'s' if len(files) != 1 else ''} ({names or 'none'}): the overhead has "
                        f"two parameters (per network, per layer), and a stable fit needs at least {MIN_NETWORKS} "
                        "networks, of more than one size for the per-layer one; export more candidates (jcw export "
                        "--candidate GENES) and pass them too")
    if len(sizes) == 1:
        return (f"all {len(files)} {group}s have {sizes[0]} layers: fitted the per-network overhead alone (the "
                "per-layer one needs networks of more than one size)")
    return ""


def check_positive(files: Sequence[str | Path], predicted_ms: Sequence[float], measured_ms: Sequence[float],
                   overhead: Overhead) -> None:
    """Refuse an overhead that predicts some network's latency as zero or less, naming the numbers."""
    bad = [(Path(f).name, p, m) for f, p, m in zip(files, predicted_ms, measured_ms, strict=True) if not p > 0]
    if bad:
        name, predicted, measured = bad[0]
        more = f" and {len(bad) - 1} more networks at or below 0" if len(bad) > 1 else ""
        raise UserError(f"the fitted overhead ({overhead.per_network_ms:+.4f} ms per network, "
                        f"{overhead.per_kernel_ms:+.5f} ms per layer) predicts {name} at {predicted:.4f} ms (measured "
                        f"{measured:.4f} ms){more}: its layers' predictions exceed what the networks measure; "
                        "check the predictor's held-out accuracy (jcw fit) and calibrate on networks over a wider "
                        "range of sizes")
