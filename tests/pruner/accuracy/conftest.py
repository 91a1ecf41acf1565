"""A small CNN for the training tests: the one tests/pruner/accuracy/ddp_finetune.py trains, seeded so that every
call gives the same weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import nn

from tests.pruner.accuracy import ddp_finetune


@pytest.fixture(scope="session")
def small_net() -> Callable[[], nn.Module]:
    """small_net(): two strided convs with BatchNorm and a linear head for 1x28x28 digits, seeded."""
    return ddp_finetune.small_net
