"""What a search says while it runs: its size before it starts, its remaining time after its first generation (on
an injected clock: nothing here is timed), and progress bars whose hypervolume is summary.json's."""

from __future__ import annotations

import itertools
import json
import re

from pruner.search.engine import SearchConfig
from pruner.search.fronts import run_fronts
from tests.test_fronts import Recorder, latency_of

CONFIG = SearchConfig(n_gen=3, pop_size=8, seed=1)


def search(space, out, capsys):
    """A search of the test space with a clock that advances 10 s per reading: (its Fronts, stdout, stderr)."""
    latency, ticks = latency_of(space), itertools.count(0, 10)
    capsys.readouterr()
    fronts = run_fronts(space, latency, Recorder(space), out, CONFIG, budgets=(1.0,), repair=latency.repair,
                        clock=lambda: float(next(ticks)))
    return fronts, *capsys.readouterr()


def test_the_size_is_said_first_and_the_time_left_after_the_first_generation(space, tmp_path, capsys):
    _, out, _ = search(space, tmp_path, capsys)
    lines = [line for line in out.splitlines() if line.startswith("search: ")]
    assert lines[0] == ("search: 3 methods (joint, channel-only, weight-only) x 3 generations x 8 candidates = 72 "
                        "evaluations at most (a candidate seen before is not scored again), then 6 uniform width "
                        "multipliers")
    assert lines[1:] == ["search: a generation takes about 10 s; about 80 s for the 8 generations left"]


def test_the_bars_last_hypervolume_is_the_summarys(space, tmp_path, capsys):
    fronts, _, err = search(space, tmp_path, capsys)
    shown = {}
    for update in re.split(r"[\r\n]", err):  # tqdm redraws a bar on one line; its last drawing holds its last value
        if match := re.match(r"search (joint|channel-only|weight-only)(?:: \w[\w ]*)?:.*hv=([0-9.e+-]+)", update):
            shown[match[1]] = match[2]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(shown) == {"joint", "channel-only", "weight-only"}
    for method, value in shown.items():
        assert value == f"{summary['hypervolume'][method]:.4g}" == f"{fronts.hypervolume[method]:.4g}", method
    assert summary["ref_point"] == {"loss": fronts.ref_point[0], "latency_ms": fronts.ref_point[1]}
