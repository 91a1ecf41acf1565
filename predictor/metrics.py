"""Held-out accuracy measures of latency predictions (nn-Meter's +-10% share among them)."""

from __future__ import annotations

import numpy as np


def relative_errors(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(predicted - measured) / measured, row by row."""
    measured = np.asarray(measured, dtype=np.float64)
    return (np.asarray(predicted, dtype=np.float64) - measured) / measured


def rmspe(measured: np.ndarray, predicted: np.ndarray) -> float:
    """Root mean squared percentage error, in percent."""
    return float(100 * np.sqrt(np.mean(relative_errors(measured, predicted) ** 2)))


def within(measured: np.ndarray, predicted: np.ndarray, tolerance: float) -> float:
    """Share (0..1) of predictions within +-tolerance (e.g. 0.10) of the measured value."""
    return float(np.mean(np.abs(relative_errors(measured, predicted)) <= tolerance))


def summary(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSPE (%), share within +-5% and within +-10% (both in %), and the row count."""
    return {
        "rmspe_pct": rmspe(measured, predicted),
        "within5_pct": 100 * within(measured, predicted, 0.05),
        "within10_pct": 100 * within(measured, predicted, 0.10),
        "n": float(len(measured)),
    }
