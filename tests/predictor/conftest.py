"""The predictor tests' builders: the real phone measurements shipped in data/ and a candidate at its density floors
(a device's table made up from a model's plan is the root conftest's `device_table`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pruner.model.checkpoint import Checkpoint

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
