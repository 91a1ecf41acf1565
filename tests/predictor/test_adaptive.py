"""Adaptive sampling: on the phone table replayed as a device, and through `jcw profile --adaptive` on local-sparse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jcw.cli import main
from predictor import adaptive, persist
from predictor.adaptive import _near_misses, replay, sample
from predictor.table import specs_frame
from profiler.errors import UserError
from profiler.kernel import KernelSpec


def recording(measure):
    """A measure function that also records every kernel it was asked for."""
    asked: list[KernelSpec] = []

    def wrapped(specs: list[KernelSpec]) -> pd.DataFrame:
        asked.extend(specs)
        return measure(specs)

    return wrapped, asked


def check_run(result, asked: list[KernelSpec]) -> None:
    """No kernel asked twice; the curve's counts rise strictly and end at the number asked."""
    keys = [s.key() for s in asked]
    assert len(keys) == len(set(keys))
    counts = result.curve["measurements"].to_numpy()
    assert np.all(np.diff(counts) > 0)
    assert counts[-1] == len(asked) == len(result.data)
    assert (result.curve["trained"] + result.curve["held_out"] == result.curve["measurements"]).all()


def test_replay_serves_each_distinct_kernel_once_with_the_median(phone):
    pool, measure = replay(phone)
    assert len(pool) == len({s.key() for s in pool}) == 88 + 3 * 704
    spec = KernelSpec("conv", 56, 56, 64, 64, k=3, density=0.5)
    assert spec in pool
    row = measure([spec])
    assert len(row) == 1 and row["latency_ms"].iloc[0] > 0


def test_adaptive_stops_at_the_target(phone):
    pool, measure = replay(phone)
    measure, asked = recording(measure)
    result = sample(
        pool, measure, target=0.9, budget=400, holdout=40, initial=20, step=20, members=2, log=lambda _: None
    )
    check_run(result, asked)
    assert result.reason.startswith("target")
    within = result.curve["within10"].to_numpy()
    assert within[-1] >= 0.9 and (within[:-1] < 0.9).all()
    assert result.curve["measurements"].iloc[-1] < 400


@pytest.mark.parametrize("strategy", ["adaptive", "random"])
def test_unreachable_target_spends_the_budget_exactly(phone, strategy):
    pool, measure = replay(phone)
    measure, asked = recording(measure)
    result = sample(
        pool, measure, target=1.01, budget=67, holdout=20, initial=10, step=8, strategy=strategy, log=lambda _: None
    )
    check_run(result, asked)
    assert result.reason.startswith("budget") and result.curve["measurements"].iloc[-1] == 67
    assert result.curve["measurements"].tolist() == [30, 38, 46, 54, 62, 67]


def test_adaptive_rounds_pick_other_kernels_than_random(phone):
    pool, measure = replay(phone)
    runs = {}
    for strategy in ("adaptive", "random"):
        m, asked = recording(measure)
        sample(pool, m, target=1.01, budget=50, holdout=20, initial=10, step=10, strategy=strategy, log=lambda _: None)
        runs[strategy] = asked
    assert runs["adaptive"][:30] == runs["random"][:30]  # same held-out and seed sets
    assert runs["adaptive"][30:] != runs["random"][30:]


def test_near_misses_are_the_nearest_candidates_of_the_same_family():
    held_out = specs_frame([KernelSpec("conv", 28, 28, 64, 64, density=0.5), KernelSpec("conv", 14, 14, 32, 32)])
    cands = specs_frame(
        [
            KernelSpec("conv", 28, 28, 64, 64, k=3, density=0.5),  # another family (k)
            KernelSpec("conv", 28, 28, 64, 128, density=0.5),
            KernelSpec("conv", 28, 28, 64, 64, density=0.6),  # the nearest of the same family
            KernelSpec("conv", 14, 14, 32, 64),
        ]
    )
    assert _near_misses(held_out, np.array([0.3, 0.05]), cands, 2) == [2]  # the 5% miss is no miss
    assert _near_misses(held_out, np.array([0.3, -0.5]), cands, 2) == [3, 2]  # worst first
    assert _near_misses(held_out, np.array([0.3, -0.5]), cands, 1) == [3]


def test_bad_sizes_are_refused(phone):
    pool, measure = replay(phone)
    with pytest.raises(UserError, match="holdout"):
        sample(pool, measure, budget=20, holdout=15, initial=10)
    with pytest.raises(UserError, match="strategy"):
        sample(pool, measure, strategy="greedy")


TINY_PLAN = """
kernels:
  - op: conv
    hw: 28
    cin: [32, 64, 96]
    cout: [32, 64, 96]
    density: [0.2, 0.5, 1.0]
"""


def test_profile_adaptive_flag_measures_on_local_sparse(tmp_path, capsys, record_figures, monkeypatch):
    figures = record_figures(monkeypatch, adaptive, "plot_curve")
    (tmp_path / "plan.yaml").write_text(TINY_PLAN)
    out = tmp_path / "results"
    argv = ["profile", "--device", "local-sparse", "--adaptive", "--target", "1.01", "--budget", "14",
            "--holdout-kernels", "5", "--initial", "5", "--step", "2", "--plan", str(tmp_path / "plan.yaml"),
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "budget of 14 measurements spent" in printed
    table = pd.read_csv(out / "local-sparse.csv")
    assert len(table) == 14 and (table["latency_ms"] > 0).all() and (table["block"] == "4x1").all()
    assert len(set(map(tuple, table[["cin", "cout", "density"]].to_numpy()))) == 14
    curve = pd.read_csv(out / "local-sparse.adaptive.csv")
    assert curve["measurements"].tolist() == [10, 12, 14]
    assert curve["within10"].between(0, 1).all()
    assert (out / "local-sparse.adaptive.png").is_file()
    (ax,) = figures[0].axes  # the PNG shows the curve's held-out share (%) per measurement count, and the target
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["held-out"].get_xydata(), curve[["measurements", "within10"]] * [1, 100])
    np.testing.assert_allclose(lines["target 101%"].get_ydata(), [101, 101])
    model = persist.load(out / "local-sparse.jcwm")
    assert len(model.training) == 14
    assert "local-sparse: device noise: " in printed and "of 12 kernels measured again" in printed
    assert model.quality["device_noise"]["kernels"] == 12 and model.quality["held_out"] is None  # 14 rows: too few
    assert model.contexts == [("local-sparse", "builtin", table["runtime_version"].iloc[0])]
    assert main(argv) == 0  # a re-run takes every kernel from the table: nothing measured again
    assert len(pd.read_csv(out / "local-sparse.csv")) == 14
