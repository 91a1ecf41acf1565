"""The command line as the tests call it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jcw.cli import main


@pytest.fixture(scope="session")
def jcw() -> Callable[..., int]:
    """jcw(*args): run `jcw ARGS` in this process (paths and numbers given as they are) and return its exit status."""
    return lambda *args: main([str(a) for a in args])
