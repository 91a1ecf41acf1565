"""The JCW search engine on a synthetic pruning problem: anchors, determinism, resume, baselines, outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

from pruner.search.engine import FixedGenes, SearchConfig, SearchError, SearchProblem, search
from pruner.search.fronts import uniform_sweep
from pruner.search.pareto import best_under_budgets, hypervolumes, pareto_front, plot_fronts, shared_ref_point
from pruner.search.state import CHECKPOINT, OLD_CHECKPOINT, CheckpointError
from pruner.search.survival import AnchorSurvival

N_LAYERS = 6
COST = np.array([3.0, 2.0, 2.5, 1.5, 2.0, 1.0])  # ms of each layer at full width and density
SENSITIVITY_W = np.array([4.0, 1.0, 3.0, 0.5, 2.0, 1.5])
SENSITIVITY_D = np.array([0.5, 3.0, 1.0, 2.5, 0.8, 2.0])
GENERATIONS = 25


def synthetic(calls: list | None = None) -> SearchProblem:
    """Widths then densities on the grid 0.1..1.0; latency ~ sum of width x width x density terms, convex loss."""
    lower = np.array([7, 4, 5, 4, 4, 4] + [7, 2, 2, 2, 2, 4])
    upper = np.full(2 * N_LAYERS, 9)

    def evaluate(X: np.ndarray) -> np.ndarray:  # a closure: the checkpoint must not need to pickle it
        if calls is not None:
            calls.append(X.copy())
        v = (X + 1) / 10
        w, d = v[:, :N_LAYERS], v[:, N_LAYERS:]
        w_in = np.column_stack([np.ones(len(X)), w[:, :-1]])
        latency = 0.3 + (COST * w * w_in * (0.3 + 0.7 * d)).sum(axis=1)
        loss = (
            0.5
            + (SENSITIVITY_W * (1 - w) ** 2).sum(axis=1)
            + (SENSITIVITY_D * (1 - d) ** 2).sum(axis=1)
            + 2.0 * ((1 - w) * (1 - d)).sum(axis=1)
            + 1.5 * ((1 - w) * (1 - w_in)).sum(axis=1)
        )
        return np.column_stack([loss, latency])

    return SearchProblem(
        lower, upper, evaluate, tuple(f"w{i}" for i in range(N_LAYERS)) + tuple(f"d{i}" for i in range(N_LAYERS))
    )


def density_mask() -> np.ndarray:
    return np.arange(2 * N_LAYERS) >= N_LAYERS


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.F, b.F)
    pd.testing.assert_frame_equal(a.front, b.front)


@pytest.fixture(scope="module")
def joint():
    return search(synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3), progress=False)


def test_anchor_survival_takes_each_anchors_nearest_first():
    rng = np.random.default_rng(0)
    F = np.column_stack([rng.uniform(0, 5, 200), rng.uniform(1, 10, 200)])
    anchors = np.array([1.5, 4.0, 6.5, 9.5])
    pop = Population.new(X=np.arange(200)[:, None], F=F)
    problem = Problem(n_var=1, n_obj=2)
    survivors = AnchorSurvival(anchors).do(problem, pop, n_survive=len(anchors))
    nearest = {int(np.argmin(np.abs(F[:, 1] - a))) for a in anchors}
    assert set(survivors.get("X")[:, 0].tolist()) == nearest
    # plain rank-and-crowding keeps the non-dominated extremes instead, not one candidate per anchor
    plain = RankAndCrowding().do(problem, pop, n_survive=len(anchors), random_state=np.random.default_rng(0))
    assert set(plain.get("X")[:, 0].tolist()) != nearest


def near_anchor_counts(F: np.ndarray, anchors: np.ndarray, tolerance: float) -> np.ndarray:
    return np.array([np.sum(np.abs(F[:, 1] - a) <= tolerance) for a in anchors])


def test_custom_survival_keeps_candidates_near_every_anchor(joint):
    tolerance = 0.02 * (joint.anchors[-1] - joint.anchors[0])
    counts = near_anchor_counts(joint.F, joint.anchors, tolerance)
    assert np.all(counts >= 3), counts
    assert len(joint.F) == 64 and joint.generations == GENERATIONS
    assert len(np.unique(joint.X, axis=0)) == len(joint.X)  # duplicates removed
    x, space = joint.X, synthetic()
    assert np.all((x >= space.lower) & (x <= space.upper))
    # plain NSGA-II survival, same budget, leaves some anchors (nearly) bare
    plain = search(synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3, survival="nsga2"), progress=False)
    assert plain.anchors is None
    assert np.any(near_anchor_counts(plain.F, joint.anchors, tolerance) < 3)


def test_explicit_anchors_put_candidates_at_the_budgets():
    budgets = (5.0, 9.0)
    result = search(synthetic(), SearchConfig(n_gen=15, seed=2, anchors=budgets), progress=False)
    np.testing.assert_array_equal(result.anchors, budgets)
    assert np.all(near_anchor_counts(result.F, result.anchors, 0.1) >= 4)


def test_same_seed_same_front_other_seed_differs(joint):
    again = search(synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3), progress=False)
    assert_same(joint, again)
    other = search(synthetic(), SearchConfig(n_gen=GENERATIONS, seed=4), progress=False)
    assert not np.array_equal(joint.X, other.X)


class Crash(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, joint):
    problem, config = synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3)
    calls: list = []

    def crashing(X):
        if len(calls) == 10:  # the end-points evaluation, then 9 generations: die inside the 10th
            raise Crash
        calls.append(X)
        return problem.evaluate(X)

    with pytest.raises(Crash):
        search(SearchProblem(problem.lower, problem.upper, crashing, problem.names), config, tmp_path, progress=False)
    assert (tmp_path / CHECKPOINT).exists()

    resumed_calls: list = []
    resumed = search(synthetic(resumed_calls), config, tmp_path, progress=False)
    assert_same(resumed, joint)
    assert len(resumed_calls) == GENERATIONS - 9  # only the missing generations were evaluated

    # a finished run directory answers without evaluating anything
    finished_calls: list = []
    assert_same(search(synthetic(finished_calls), config, tmp_path, progress=False), joint)
    assert finished_calls == []


def test_shortening_a_finished_run_equals_the_shorter_run(tmp_path, joint):
    search(synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3), tmp_path, progress=False)
    calls: list = []
    shorter = search(synthetic(calls), SearchConfig(n_gen=GENERATIONS // 2, seed=3), tmp_path, progress=False)
    assert_same(shorter, search(synthetic(), SearchConfig(n_gen=GENERATIONS // 2, seed=3), progress=False))
    assert calls == [] and shorter.generations == GENERATIONS // 2


def test_extending_a_finished_run_equals_the_longer_run(tmp_path, joint):
    search(synthetic(), SearchConfig(n_gen=GENERATIONS // 2, seed=3), tmp_path, progress=False)
    extended = search(synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3), tmp_path, progress=False)
    assert_same(extended, joint)


def test_resume_refuses_a_run_directory_with_other_settings(tmp_path):
    search(synthetic(), SearchConfig(n_gen=2, seed=3), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="seed"):
        search(synthetic(), SearchConfig(n_gen=2, seed=5), tmp_path, progress=False)
    mask = density_mask()
    with pytest.raises(CheckpointError, match="fixed_mask"):
        search(
            synthetic(), SearchConfig(n_gen=2, seed=3), tmp_path, FixedGenes(mask, synthetic().upper), progress=False
        )
    with pytest.raises(CheckpointError, match="repair"):
        search(with_repair(synthetic()), SearchConfig(n_gen=2, seed=3), tmp_path, progress=False)


def with_repair(problem: SearchProblem, idle: tuple[int, int] = (2, 5)) -> SearchProblem:
    """The problem with a repair that sets density genes in `idle` (densities that buy no speed) to dense."""

    def repair(X: np.ndarray) -> np.ndarray:
        d = X[:, N_LAYERS:]
        return np.column_stack([X[:, :N_LAYERS], np.where((d >= idle[0]) & (d <= idle[1]), 9, d)])

    return SearchProblem(problem.lower, problem.upper, problem.evaluate, problem.names, repair)


@pytest.mark.parametrize("fix_widths", [False, True], ids=["joint", "weight_only"])
def test_repair_reaches_every_evaluated_candidate_and_breeds(fix_widths):
    calls: list = []
    problem = with_repair(synthetic(calls))
    fixed = FixedGenes(~density_mask(), problem.upper) if fix_widths else None
    result = search(problem, SearchConfig(n_gen=6, seed=2), fixed=fixed, progress=False)
    seen = np.concatenate(calls)
    densities = seen[:, N_LAYERS:]
    assert not np.any((densities >= 2) & (densities <= 5))  # the ends, the samples and every child were repaired
    assert np.any((densities > 5) & (densities < 9))  # what the repair leaves alone is still searched
    assert not np.any((result.X[:, N_LAYERS:] >= 2) & (result.X[:, N_LAYERS:] <= 5))  # the repaired genes survive
    if fix_widths:
        assert np.all(seen[:, :N_LAYERS] == 9)


def test_a_repair_that_leaves_the_bounds_is_a_clear_error():
    problem = synthetic()
    broken = SearchProblem(problem.lower, problem.upper, problem.evaluate, repair=lambda X: X + 1)
    with pytest.raises(SearchError, match="repair moved rows"):
        search(broken, SearchConfig(n_gen=2), progress=False)


@pytest.mark.parametrize("fix_densities", [True, False], ids=["channel_only", "weight_only"])
def test_fixed_gene_baselines_never_change_the_fixed_genes(fix_densities):
    calls: list = []
    problem = synthetic(calls)
    mask = density_mask() if fix_densities else ~density_mask()
    result = search(problem, SearchConfig(n_gen=10, seed=1), fixed=FixedGenes(mask, problem.upper), progress=False)
    seen = np.concatenate(calls)
    assert np.all(seen[:, mask] == problem.upper[mask])  # every evaluated candidate, not only the survivors
    assert np.all(result.X[:, mask] == problem.upper[mask])
    assert np.all(result.front.to_numpy()[:, :12][:, mask] == problem.upper[mask])
    assert len(np.unique(seen[:, ~mask], axis=0)) > 64  # the free genes were searched
    assert result.evaluations == 10 * 64


def test_joint_front_beats_the_baselines_at_equal_budget(joint):
    problem, config = synthetic(), SearchConfig(n_gen=GENERATIONS, seed=3)
    fronts = {"joint": joint.front}
    for name, mask in (("channel_only", density_mask()), ("weight_only", ~density_mask())):
        fronts[name] = search(problem, config, fixed=FixedGenes(mask, problem.upper), progress=False).front

    def uniform(multiplier: float) -> np.ndarray:
        x = np.full(problem.n_var, 9)
        x[:N_LAYERS] = np.maximum(problem.lower[:N_LAYERS], round(multiplier * 10) - 1)
        return x

    sweep = uniform_sweep(problem, uniform, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert sweep["latency_ms"].is_monotonic_increasing and list(sweep["multiplier"]) == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    fronts["uniform"] = sweep
    hv = hypervolumes(fronts)
    assert hv["joint"] > max(hv["channel_only"], hv["weight_only"], hv["uniform"]), hv


def test_hypervolume_of_a_dominating_front_is_larger(joint):
    worse = joint.front.assign(loss=joint.front["loss"] + 0.2, latency_ms=joint.front["latency_ms"] * 1.05)
    fronts = {"front": joint.front, "worse": worse}
    ref = shared_ref_point(fronts)
    assert np.all(ref >= worse[["loss", "latency_ms"]].to_numpy().max(axis=0))
    hv = hypervolumes(fronts)
    assert hv["front"] > hv["worse"] > 0
    assert hypervolumes(fronts, ref_point=[0.0, 0.0]) == {"front": 0.0, "worse": 0.0}


def test_front_is_non_dominated_and_sorted(joint):
    front = joint.front
    F = front[["loss", "latency_ms"]].to_numpy()
    assert front["latency_ms"].is_monotonic_increasing
    assert np.all(np.diff(front["loss"]) < 0)  # two objectives: along rising latency the loss must fall
    for f in joint.F:  # nothing in the population dominates a front member
        assert not np.any(np.all(f <= F, axis=1) & np.any(f < F, axis=1))
    assert list(front.columns[:3]) == ["w0", "w1", "w2"]


def test_budget_picks_are_feasible_and_lowest_loss(joint):
    population = pareto_front(joint.X, joint.F, synthetic().gene_names())
    fastest = population["latency_ms"].min()
    budgets = [fastest * 0.5, *np.quantile(joint.F[:, 1], [0.1, 0.5, 0.9])]
    picks = best_under_budgets(population, budgets)
    assert list(picks["found"]) == [False, True, True, True]
    assert "no candidate within" in picks.loc[0, "note"] and f"{fastest:.4g}" in picks.loc[0, "note"]
    for _, pick in picks[picks["found"]].iterrows():
        assert pick["latency_ms"] <= pick["budget_ms"]
        feasible = joint.F[joint.F[:, 1] <= pick["budget_ms"]]
        assert pick["loss"] == feasible[:, 0].min()
    assert picks.loc[1:, "loss"].is_monotonic_decreasing
    empty = best_under_budgets(population.iloc[:0], [1.0])
    assert not empty.loc[0, "found"] and "empty" in empty.loc[0, "note"]


def test_the_fronts_plot_draws_each_front_along_latency_and_each_budget(joint, tmp_path):
    fronts = {"joint": joint.front, "half": joint.front.iloc[::2].sample(frac=1, random_state=0)}  # any row order
    figure = plot_fronts(fronts, tmp_path / "fronts.png", budgets=[4, 8])
    assert (tmp_path / "fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figure.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name, front in fronts.items():
        line, ordered = lines.pop(f"{name} ({len(front)})"), front.sort_values("latency_ms")
        np.testing.assert_array_equal(line.get_xdata(), ordered["latency_ms"])
        np.testing.assert_array_equal(line.get_ydata(), ordered["loss"])
    assert sorted(line.get_xdata()[0] for line in lines.values()) == [4, 8]  # the rest: one vertical line a budget
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latency (ms)", "loss")


def test_bad_evaluator_output_is_a_clear_error():
    problem = synthetic()
    broken = SearchProblem(problem.lower, problem.upper, lambda X: problem.evaluate(X)[:, :1])
    with pytest.raises(SearchError, match="expected"):
        search(broken, SearchConfig(n_gen=2), progress=False)
    with pytest.raises(SearchError, match="outside the bounds"):
        search(problem, SearchConfig(n_gen=2), fixed=FixedGenes(density_mask(), np.zeros(12, int)), progress=False)


def test_seeds_start_in_the_first_generation_and_in_the_checkpoint_settings(tmp_path):
    calls: list = []
    seed = np.array([8, 5, 6, 5, 5, 5] + [9] * N_LAYERS)
    search(synthetic(calls), SearchConfig(n_gen=1, pop_size=16), tmp_path, progress=False, seeds=seed[None])
    first = np.vstack(calls)[:16]
    assert any(np.array_equal(row, seed) for row in first)
    with pytest.raises(CheckpointError, match="seeds"):
        search(synthetic(), SearchConfig(n_gen=2, pop_size=16), tmp_path, progress=False)


def test_on_generation_sees_each_generations_full_population():
    seen: list = []
    fixed = FixedGenes(density_mask(), np.full(2 * N_LAYERS, 9))
    search(synthetic(), SearchConfig(n_gen=3, pop_size=16), progress=False, fixed=fixed, on_generation=seen.append)
    assert len(seen) == 3
    assert all(X.shape == (16, 2 * N_LAYERS) and (X[:, density_mask()] == 9).all() for X in seen)


def one_line_search_error(run_dir, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as err:
        search(synthetic(), SearchConfig(n_gen=3, seed=3), run_dir, progress=False)
    assert "\n" not in str(err.value) and "use another run directory" in str(err.value)


def test_a_planted_pickle_in_a_run_directory_is_never_unpickled(planted_pickle, tmp_path):
    marker, payload = tmp_path / "marker", planted_pickle(tmp_path / "marker")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / OLD_CHECKPOINT).write_bytes(payload)  # an older jcw's checkpoint name
    one_line_search_error(tmp_path / "old", f"{tmp_path / 'old' / OLD_CHECKPOINT}: a pickled checkpoint")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / CHECKPOINT).write_bytes(payload)  # under the current name
    one_line_search_error(tmp_path / "new", f"{tmp_path / 'new' / CHECKPOINT}: not a readable search checkpoint")
    assert not marker.exists()


def _tampered(z: dict) -> dict:
    """The arrays of a genuine checkpoint with the first evaluated candidate's first gene moved within bounds."""
    X = z["X"].copy()
    X[0, 0] = 8 if X[0, 0] == 9 else 9
    return {**z, "X": X}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda z: {"a": np.arange(3)}, "not a readable search checkpoint"),
        (lambda z: {**z, "header": np.array("[1, 2]")}, "checkpoint version None"),
        (lambda z: {**z, "header": np.array(json.dumps({**json.loads(str(z["header"])), "version": 2}))},
         "checkpoint version 2, expected 3"),
        (lambda z: {**z, "header": np.array(json.dumps({**json.loads(str(z["header"])), "ref_point": [1.0]}))},
         r"malformed checkpoint \(ref_point\)"),
        (lambda z: {**z, "X": z["X"][:, :-1]}, r"malformed checkpoint \(X\)"),
        (lambda z: {**z, "F": np.full_like(z["F"], np.nan)}, r"malformed checkpoint \(F\)"),
        (lambda z: {**z, "sizes": z["sizes"][:-1]}, r"malformed checkpoint \(sizes\)"),
        (_tampered, "its evaluations do not replay this run's candidates"),
    ],
    ids=["foreign_arrays", "header_not_a_mapping", "other_version", "bad_ref_point", "other_gene_count",
         "non_finite_objectives", "sizes_short", "evaluations_of_other_candidates"],
)
def test_a_malformed_checkpoint_is_a_one_line_error(tmp_path, change, message):
    search(synthetic(), SearchConfig(n_gen=2, seed=3), tmp_path, progress=False)
    with np.load(tmp_path / CHECKPOINT) as z:
        arrays = change(dict(z))
    with open(tmp_path / CHECKPOINT, "wb") as f:
        np.savez(f, **arrays)
    one_line_search_error(tmp_path, f"{tmp_path / CHECKPOINT}: .*{message}")


@pytest.mark.parametrize("damage", ["truncated", "single_array"])
def test_a_truncated_or_foreign_checkpoint_file_is_a_one_line_error(tmp_path, damage):
    search(synthetic(), SearchConfig(n_gen=2, seed=3), tmp_path, progress=False)
    path = tmp_path / CHECKPOINT
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with open(path, "wb") as f:
            np.save(f, np.arange(4))
    one_line_search_error(tmp_path, f"{path}: not a readable search checkpoint")
