"""The predictor tests' builders: the real phone measurements shipped in data/, and a device's results table made up
from a model's own profiling plan (a formula stands in for profiling it, which would take a minute)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profiler.devices import get_device
from profiler.kernel import KernelSpec
from pruner.model.checkpoint import Checkpoint
from pruner.search.latency import model_cluster, profiling_plan

PHONE = Path(__file__).resolve().parents[2] / "data" / "resnet18_phone_layers_0-9.csv"


@pytest.fixture(scope="session")
def phone_table() -> Path:
    """Real phone measurements of ResNet-18's layers 0-9, dense and sparse."""
    return PHONE


@pytest.fixture(scope="module")
def phone(phone_table) -> pd.DataFrame:
    """The phone table's layers 0, 1, 5 and 7."""
    raw = pd.read_csv(phone_table)
    return raw[raw["layer"].isin([0, 1, 5, 7])].reset_index(drop=True)


def made_up_latency(spec: KernelSpec) -> float:
    """A made-up but plausible latency: MACs, cheaper when sparse (more so in the nchw layout)."""
    factor = (0.3 + 0.8 * spec.density) * (0.5 if spec.layout == "nchw" else 1.0) if spec.is_sparse else 1.0
    return 0.002 + spec.macs / 5e7 * factor


def plan_table(ckpt: Checkpoint, device_name: str) -> pd.DataFrame:
    """The model's profiling plan as the device's results table would hold it, latencies made up."""
    device = get_device(device_name)
    space = ckpt.space(device.runtime)
    cluster = model_cluster(ckpt.model, ckpt.input_shape, device.runtime)
    specs = profiling_plan(space, device.runtime, candidates=12, cluster=cluster)
    return pd.DataFrame([{"device": device.name, "runtime": device.runtime.name,
                          "runtime_version": "ai_edge_litert.interpreter 2.3.0", **s.to_row(),
                          "latency_ms": made_up_latency(s)}
                         for s in specs])


@pytest.fixture(scope="session")
def device_table() -> Callable[[Checkpoint, str], pd.DataFrame]:
    """device_table(checkpoint, device name): the model's profiling plan as that device's table, latencies made up."""
    return plan_table


def floor_candidate(ckpt: Checkpoint, runtime: str) -> np.ndarray:
    """A candidate with narrowed layers and every density at its floor (an XNNPACK cluster passes the gate)."""
    space = ckpt.space(runtime)
    x = space.sample(np.random.default_rng(1), 1)[0]
    x[space.n_width:] = space.lower[space.n_width:]
    return x


@pytest.fixture(scope="session")
def sparse_candidate() -> Callable[[Checkpoint, str], np.ndarray]:
    """sparse_candidate(checkpoint, runtime name): narrowed layers, every density at its floor."""
    return floor_candidate
