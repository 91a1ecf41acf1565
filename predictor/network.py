"""Whole-network latency: the sum of its kernels plus a per-network overhead fitted from end-to-end runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiler.errors import UserError


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
