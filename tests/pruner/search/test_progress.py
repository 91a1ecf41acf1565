"""What a search says while it runs: its size before it starts, its remaining time after its first generation (on
an injected clock: nothing here is timed), and progress bars whose hypervolume is summary.json's."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from pruner.search.engine import SearchConfig
from pruner.search.fronts import run_fronts

CONFIG = SearchConfig(n_gen=3, pop_size=8, seed=1)


def smooth_estimate(upper: np.ndarray):
    """(loss, top-1) growing smoothly with how far a candidate is pruned."""

    def estimate(X: np.ndarray) -> np.ndarray:
        loss = 0.1 + (((upper - X) / upper) ** 2).sum(axis=1)
        return np.column_stack([loss, np.exp(-loss)])

    return estimate


@pytest.fixture
def search(space, latency_of, capsys):
    """search(out): a search of the test space, the conftest's latency formula and a smooth estimate, with a clock
    that advances 10 s per reading: (its Fronts, stdout, stderr)."""

    def run(out):
        latency, ticks = latency_of(space), itertools.count(0, 10)
        capsys.readouterr()
        fronts = run_fronts(space, latency, smooth_estimate(space.upper), out, CONFIG, budgets=(1.0,),
                            repair=latency.repair, clock=lambda: float(next(ticks)))
        return fronts, *capsys.readouterr()

    return run


def test_the_size_is_said_first_and_the_time_left_after_the_first_generation(search, tmp_path):
    _, out, _ = search(tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("search: ")]
    assert lines[0] == ("search: 3 methods (joint, channel-only, weight-only) x 3 generations x 8 candidates = 72 "
                        "evaluations at most (a candidate seen before is not scored again), then 6 uniform width "
                        "multipliers")
    assert lines[1:] == ["search: a generation takes about 10 s; about 80 s for the 8 generations left"]


def test_the_bars_last_hypervolume_is_the_summarys(search, tmp_path):
    fronts, _, err = search(tmp_path)
    shown = {}
    for update in re.split(r"[\r\n]", err):  # tqdm redraws a bar on one line; its last drawing holds its last value
        if match := re.match(r"search (joint|channel-only|weight-only)(?:: \w[\w ]*)?:.*hv=([0-9.e+-]+)", update):
            shown[match[1]] = match[2]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(shown) == {"joint", "channel-only", "weight-only"}
    for method, value in shown.items():
        assert value == f"{summary['hypervolume'][method]:.4g}" == f"{fronts.hypervolume[method]:.4g}", method
    assert summary["ref_point"] == {"loss": fronts.ref_point[0], "latency_ms": fronts.ref_point[1]}
