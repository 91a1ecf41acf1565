"""One search run over a real MobileNetV2's search space: every method's budget, the repair, resume, and the
files written.

Latency is the conftest's formula (sparse pays below 40% density) and the estimator a smooth
function of the genes, so the run takes seconds; the search machinery, the space and the files are real.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pruner.search.fronts
from pruner.search.engine import SearchConfig, SearchError
from pruner.search.fronts import fixed_genes, run_fronts
from pruner.search.space import SearchSpace

CONFIG = SearchConfig(n_gen=5, pop_size=16, seed=4)


class Recorder:
    """A smooth (loss, top-1) estimate that remembers every candidate it was asked about."""

    def __init__(self, space: SearchSpace):
        self.upper, self.seen = space.upper, []

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(X))
        shortfall = (self.upper - X) / self.upper
        loss = 0.1 + (shortfall**2).sum(axis=1)
        return np.column_stack([loss, np.exp(-loss)])


def run(space, latency, out):
    estimator = Recorder(space)
    fronts = run_fronts(space, latency, estimator, out, CONFIG, budgets=(1.0,), progress=False,
                        repair=latency.repair)
    return fronts, estimator


def test_every_method_gets_the_same_budget_and_every_candidate_is_repaired(space, latency_of, tmp_path,
                                                                           record_figures, monkeypatch):
    figures = record_figures(monkeypatch, pruner.search.fronts, "plot_fronts")
    run(space, latency_of(space), tmp_path)
    n_width = space.n_width
    archives = {m: np.load(tmp_path / m / "archive.npz") for m in ("joint", "channel-only", "weight-only")}
    counts = {m: len(z["X"]) for m, z in archives.items()}
    # the same budget: n_gen x pop evaluations, plus the two ends and the final population the archive re-adds
    # (fewer when the repair turns offspring into duplicates pymoo then drops)
    budget = CONFIG.n_gen * CONFIG.pop_size + 2 + CONFIG.pop_size
    assert all(0.85 * budget <= n <= budget for n in counts.values()), counts
    joint = archives["joint"]["X"]
    assert (joint[:, n_width:] < space.upper[n_width:]).any(), "the joint search prunes weights somewhere"
    assert (archives["channel-only"]["X"][:, n_width:] == space.upper[n_width:]).all()
    assert (archives["weight-only"]["X"][:, :n_width] == space.upper[:n_width]).all()
    with pytest.raises(SearchError, match="weight_stage 0.3, not 0.5"):  # a resumed run keeps its settings
        run_fronts(space, latency_of(space), Recorder(space), tmp_path, CONFIG, progress=False, weight_stage=0.5)
    (tmp_path / "joint" / "weight_stage.json").write_text("{truncated")
    with pytest.raises(SearchError, match="weight_stage.json: unreadable"):
        run_fronts(space, latency_of(space), Recorder(space), tmp_path, CONFIG, progress=False)
    for z in archives.values():  # no zeros in a layer the device runs dense, in any method
        np.testing.assert_array_equal(latency_of(space).repair(z["X"]), z["X"])
    assert (tmp_path / "summary.json").exists() and (tmp_path / "fronts.png").is_file()
    # fronts.png shows pareto.csv: each method's top-1 along latency, and the budget
    (ax,) = figures[0].axes
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    for method, front in pd.read_csv(tmp_path / "pareto.csv").groupby("method"):
        front = front.sort_values("latency_ms")
        np.testing.assert_allclose(lines.pop(method).get_xydata(), front[["latency_ms", "top1"]], rtol=1e-12)
    assert [line.get_xdata()[0] for line in lines.values()] == [1.0]


def test_fixed_genes_of_the_baselines(space, latency_of):
    n_width = space.n_width
    channel_only, weight_only = fixed_genes(space, "channel-only"), fixed_genes(space, "weight-only")
    assert channel_only.mask[n_width:].all() and not channel_only.mask[:n_width].any()
    assert weight_only.mask[:n_width].all() and not weight_only.mask[n_width:].any()
    assert fixed_genes(space, "joint") is None
    with pytest.raises(ValueError, match="unknown method"):
        fixed_genes(space, "random")
    with pytest.raises(ValueError, match="weight_stage 1.5"):
        run_fronts(space, latency_of(space), Recorder(space), "unused", CONFIG, weight_stage=1.5)


def test_a_repeated_run_resumes_to_the_same_fronts_without_new_evaluations(space, latency_of, tmp_path):
    first, _ = run(space, latency_of(space), tmp_path)
    again, estimator = run(space, latency_of(space), tmp_path)
    for method, table in first.fronts.items():
        pd.testing.assert_frame_equal(table, again.fronts[method])
    assert first.hypervolume == again.hypervolume
    # nothing searched again: only the two ends fixing the reference point, the uniform sweep and the fronts' top-1
    # column are scored
    top1_lookups = sum(len(t) for t in again.fronts.values())
    assert sum(len(X) for X in estimator.seen) == 2 + len(again.fronts["uniform"]) + top1_lookups
    written = pd.read_csv(tmp_path / "pareto.csv")
    assert set(written["method"]) == {"joint", "channel-only", "weight-only", "uniform"}
    n_width = space.n_width
    genes = np.array([[int(g) for g in row.split(",")] for row in written["genes"]])
    np.testing.assert_array_equal(written["weight_pruned_layers"], (genes[:, n_width:] < 9).sum(axis=1))
    assert (written.loc[written["method"] == "channel-only", "weight_pruned_layers"] == 0).all()
    budgets = pd.read_csv(tmp_path / "budgets.csv")
    assert (budgets.loc[budgets["found"], "latency_ms"] <= budgets.loc[budgets["found"], "budget_ms"]).all()


@pytest.mark.parametrize("weight_stage", [0.3, 0.0], ids=["staged", "one_stage"])
def test_joint_is_a_widths_search_then_the_weight_stage_unless_asked_for_one_stage(space, latency_of, tmp_path,
                                                                                   weight_stage):
    latency = latency_of(space)
    run_fronts(space, latency, Recorder(space), tmp_path, CONFIG, methods=("joint",), progress=False,
               repair=latency.repair, weight_stage=weight_stage)
    X = np.unique(np.load(tmp_path / "joint" / "archive.npz")["X"], axis=0)
    assert len(X) <= CONFIG.n_gen * CONFIG.pop_size + 2  # the same budget as every other method
    n_width = space.n_width
    sparse = (X[:, n_width:] < space.upper[n_width:]).any(axis=1)
    dense_widths = {tuple(x[:n_width]) for x in X[~sparse]}
    from_dense = np.array([tuple(x[:n_width]) in dense_widths for x in X[sparse]])
    if weight_stage:  # sparse layers only on widths the widths-only search evaluated (its front, the scan's full)
        assert sparse.sum() >= CONFIG.pop_size and from_dense.all()
    else:  # one NSGA-II over widths and densities: random widths with random densities from the start
        assert not from_dense.all()
