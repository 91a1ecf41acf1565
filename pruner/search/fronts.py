"""One search run: the accuracy-latency fronts of joint, channel-only and weight-only pruning and of uniform
width multipliers, with the same estimator, predictor and budget, and the files a user reads."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from profiler.runtimes import Runtime
from pruner.accuracy.estimate import TOP1, Estimator, as_loss_fn
from pruner.search.duration import Duration
from pruner.search.engine import FixedGenes, SearchConfig, SearchError, SearchProblem, search
from pruner.search.pareto import (
    LATENCY,
    LOSS,
    best_under_budgets,
    hypervolume,
    hypervolumes,
    non_dominated,
    pareto_front,
    plot_fronts,
)
from pruner.search.sensitivity import scan_candidates, scan_layers, sparsified
from pruner.search.space import SearchSpace

METHODS = ("joint", "channel-only", "weight-only")
MULTIPLIERS = tuple(round(0.1 * i, 1) for i in range(1, 11))
WEIGHT_STAGE = Runtime.weight_stage  # the joint method's share of evaluations for its weight stage (sensitivity)


def fixed_genes(space: SearchSpace, method: str) -> FixedGenes | None:
    """The genes a method leaves alone: densities at 1.0 for channel-only, widths at 1.0 for weight-only."""
    if method == "joint":
        return None
    n_width = space.n_width
    mask = np.zeros(space.n_var, dtype=bool)
    if method == "channel-only":
        mask[n_width:] = True
    elif method == "weight-only":
        mask[:n_width] = True
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return FixedGenes(mask, space.upper)


def uniform_candidate(space: SearchSpace, multiplier: float) -> np.ndarray:
    """Every width gene at `multiplier` (within its bounds), every layer dense: the uniform baseline."""
    width = int(np.argmin(np.abs(np.asarray(space.width_grid) - multiplier)))
    return np.clip(np.r_[[width] * space.n_width, space.upper[space.n_width:]],
                   space.lower, space.upper)


def uniform_sweep(
    problem: SearchProblem, to_candidate: Callable[[float], np.ndarray], multipliers: Sequence[float]
) -> pd.DataFrame:
    """Evaluate the uniform-width-multiplier baseline: one candidate per multiplier, sorted by latency."""
    genes = np.stack([np.asarray(to_candidate(m), dtype=int) for m in multipliers])
    bad = np.flatnonzero(np.any((genes < problem.lower) | (genes > problem.upper), axis=1))
    if bad.size:
        raise SearchError(f"multipliers {[multipliers[i] for i in bad]} give candidates outside the bounds")
    F = problem.objectives(genes)
    table = pd.DataFrame(genes, columns=problem.gene_names())
    table.insert(0, "multiplier", list(multipliers))
    table[LATENCY], table[LOSS] = F[:, 1], F[:, 0]
    return table.sort_values(LATENCY, kind="stable").reset_index(drop=True)



def reference_point(problem: SearchProblem, margin: float = 0.1) -> np.ndarray:
    """The one (loss, latency) reference point of a search's hypervolumes, fixed before it starts: the worst loss and
    latency of the smallest and the full candidate (repaired), plus `margin` of each. Every method's progress bar and
    summary.json measure against it, so adding a method changes no other's figure."""
    ends = problem.objectives(problem.repaired(np.stack([problem.lower, problem.upper])))
    worst = ends.max(axis=0)
    return worst + margin * np.abs(worst)


@dataclass
class Fronts:
    """Each method's front (genes, latency_ms, loss, top1, weight_pruned_layers), their hypervolumes against one
    reference point (`reference_point`: the figure the progress bars show last), and the joint front's best
    candidate under each budget."""

    fronts: dict[str, pd.DataFrame]
    hypervolume: dict[str, float]
    ref_point: np.ndarray
    budgets: pd.DataFrame


def run_fronts(
    space: SearchSpace,
    latency: Callable[[np.ndarray], np.ndarray],
    estimator: Estimator,
    out: str | Path,
    config: SearchConfig | None = None,
    budgets: Sequence[float] = (),
    methods: Sequence[str] = METHODS,
    progress: bool = True,
    on_generation: Callable[[np.ndarray], None] | None = None,
    repair: Callable[[np.ndarray], np.ndarray] | None = None,
    weight_stage: float = WEIGHT_STAGE,
    record: Mapping | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Fronts:
    """Search each method (checkpointed under out/<method>, so an interrupted run resumes; each starts from the
    uniform-width candidates), sweep uniform multipliers, and write pareto.csv, pareto_layers.csv,
    fronts.png, summary.json and budgets.csv to `out`.

    `repair` maps new candidates to ones at least as good before they are evaluated, for every method alike;
    pass `CandidateLatency.repair` so no candidate zeroes weights in a layer the device runs dense.
    `weight_stage` is the share of the joint method's evaluations spent adding sparse layers to the front of
    a widths-only search (pruner.search.sensitivity); 0 runs JCW's single NSGA-II over widths and densities instead.
    Every method gets the same budget of evaluations. `record` (JSON values: where the model, data, device and
    predictor came from) is written into summary.json. With `progress`, the search's size is said before it starts
    and its remaining time after its first generation (timed by `clock`), and each method's bar shows the
    hypervolume of everything it has evaluated against `reference_point`: its last value is the method's
    hypervolume in summary.json."""
    out, config = Path(out), config or SearchConfig()
    if not 0 <= weight_stage < 1:
        raise SearchError(f"weight_stage {weight_stage}: the joint method's share of evaluations, in [0, 1)")
    out.mkdir(parents=True, exist_ok=True)
    archive: list[tuple[np.ndarray, np.ndarray]] = []  # every candidate the current method's search evaluates

    def objectives(X: np.ndarray) -> np.ndarray:
        F = np.column_stack([as_loss_fn(estimator)(X), latency(X)])
        archive.append((np.asarray(X, dtype=int), F))
        return F

    problem = SearchProblem(space.lower, space.upper, objectives, names=space.gene_names, repair=repair)
    distinct = {tuple(uniform_candidate(space, m)): m for m in reversed(MULTIPLIERS)}  # bounds merge some
    duration = Duration(methods, config.n_gen, config.pop_size, len(distinct),
                        tqdm.write if progress else lambda line: None, clock)
    duration.size()
    ref = reference_point(problem)
    run = _MethodRun(space, problem, config, out, np.array(list(distinct)), archive, weight_stage,
                     repair or (lambda X: X), progress, on_generation, ref, duration)
    fronts = {method: run(method) for method in methods}
    uniform = uniform_sweep(problem, lambda m: uniform_candidate(space, m), sorted(distinct.values()))
    fronts["uniform"] = uniform.drop(columns="multiplier")
    for table in fronts.values():
        genes = table[list(space.gene_names)].to_numpy(int)
        table["top1"] = estimator(genes)[:, TOP1] if len(genes) else []
        table["weight_pruned_layers"] = space.weight_pruned_layers(genes) if len(genes) else []
        table.insert(0, "genes", [",".join(map(str, g)) for g in genes])
    result = Fronts(fronts, hypervolumes(fronts, ref), ref, best_under_budgets(fronts["joint"], budgets)
                    if "joint" in fronts else pd.DataFrame())
    _write(space, result, out, config, weight_stage, record or {})
    return result


@dataclass
class _MethodRun:
    """One method's search within run_fronts: its NSGA-II (checkpointed under out/<method>, starting from the
    uniform `seeds`), the joint method's weight stage, and the archive of everything it evaluated, saved every
    generation so a resumed search's front is the uninterrupted one's. `stage_repair` is the weight stage's repair
    (keep every density where the search has none). Its bars show the archive's hypervolume against `ref`;
    `duration` hears of every generation."""

    space: SearchSpace
    problem: SearchProblem
    config: SearchConfig
    out: Path
    seeds: np.ndarray
    archive: list[tuple[np.ndarray, np.ndarray]]
    weight_stage: float
    stage_repair: Callable[[np.ndarray], np.ndarray]
    progress: bool
    on_generation: Callable[[np.ndarray], None] | None
    ref: np.ndarray
    duration: Duration

    def hypervolume(self, F: np.ndarray | None = None) -> float:
        """The hypervolume of everything this method has evaluated (not only the population `F`), against `ref`."""
        return hypervolume(_stacked(self.archive)[1], self.ref)

    def __call__(self, method: str) -> pd.DataFrame:
        """The method's front, searched (or resumed) now."""
        saved = self.out / method / "archive.npz"  # what earlier (interrupted) runs of this search evaluated

        def keep(X_pop: np.ndarray) -> None:
            _save_archive(saved, self.archive)
            if self.on_generation is not None:
                self.on_generation(X_pop)

        self.archive.clear()
        if saved.exists():
            with np.load(saved) as z:
                self.archive.append((z["X"], z["F"]))
        config = self.config
        widths_gens = config.n_gen
        if method == "joint":
            _check_weight_stage(self.out / method / "weight_stage.json", self.weight_stage)
            widths_gens = _widths_generations(self.space, config, self.weight_stage, self.stage_repair)
        staged = widths_gens < config.n_gen
        self.duration.method_started()
        result = search(self.problem, dataclasses.replace(config, n_gen=widths_gens) if staged else config,
                        run_dir=self.out / method, fixed=fixed_genes(self.space, "channel-only" if staged else method),
                        progress=self.progress, seeds=self.seeds, on_generation=keep,
                        desc=f"search {method}: widths" if staged else f"search {method}", hv_of=self.hypervolume,
                        on_progress=lambda done, new: self.duration.generation_done(method, done, new))
        self.archive.append((result.X, result.F))
        _save_archive(saved, self.archive)
        if staged:
            _weight_stage(self.space, self.problem.evaluate, self.archive, (config.n_gen - widths_gens) *
                          config.pop_size, self.stage_repair, self.progress, f"search {method}: weight stage",
                          self.hypervolume)
            _save_archive(saved, self.archive)
        return pareto_front(*_stacked(self.archive), self.space.gene_names)


def _check_weight_stage(path: Path, weight_stage: float) -> None:
    """Record the joint method's weight_stage in its run directory, or refuse a directory run with another."""
    if path.exists():
        try:
            saved = json.loads(path.read_text())["weight_stage"]
        except (ValueError, KeyError, TypeError) as e:
            raise SearchError(f"{path}: unreadable ({e}); use another run directory") from e
        if saved != weight_stage:
            raise SearchError(f"{path}: this run used weight_stage {saved}, not {weight_stage}; use another run "
                              "directory")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"weight_stage": weight_stage}))


def _widths_generations(
    space: SearchSpace, config: SearchConfig, weight_stage: float, repair: Callable[[np.ndarray], np.ndarray]
) -> int:
    """Generations of the joint method's widths-only search: what leaves its weight stage `weight_stage` of the
    evaluations, and at least twice the layer scan (all of them when weight_stage is 0)."""
    if weight_stage <= 0:
        return config.n_gen
    total = config.n_gen * config.pop_size
    stage = max(round(weight_stage * total), 2 * len(scan_candidates(space, repair)))
    return max(1, (total - stage) // config.pop_size)


def _weight_stage(
    space: SearchSpace,
    objectives: Callable[[np.ndarray], np.ndarray],
    archive: list[tuple[np.ndarray, np.ndarray]],
    budget: int,
    repair: Callable[[np.ndarray], np.ndarray],
    progress: bool = True,
    desc: str = "weight stage",
    shown_hv: Callable[[], float] | None = None,
) -> None:
    """The joint method's second stage: scan the layers, then add the cheapest to the widths-only front, within
    `budget` evaluations (a progress bar labelled `desc` counts them and shows `shown_hv()`); candidates the archive
    holds (a resumed run) are not evaluated again."""
    X, F = _stacked(archive)
    known = {tuple(x): f for x, f in zip(X.tolist(), F, strict=True)}
    bar = tqdm(total=budget, desc=desc, unit="eval", disable=not progress)

    def evaluate_new(Xq: np.ndarray) -> np.ndarray:
        new = [x for x in dict.fromkeys(map(tuple, Xq.tolist())) if x not in known]
        if new:
            known.update(zip(new, objectives(np.array(new, dtype=int)), strict=True))
            if shown_hv is not None:
                bar.set_postfix(hv=f"{shown_hv():.4g}", refresh=False)
            bar.update(len(new))
        return np.array([known[tuple(x)] for x in Xq.tolist()])

    dense = space.weight_pruned_layers(X) == 0  # the widths-only search's rows
    front = np.unique(X[dense][non_dominated(F[dense])], axis=0)  # sorted: the same order when resumed
    with bar:
        scan = scan_layers(space, evaluate_new, repair, limit=budget)
        evaluate_new(sparsified(front, scan, repair, budget - scan.evaluated))


def _stacked(archive: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([x for x, _ in archive]), np.vstack([f for _, f in archive])


def _save_archive(path: Path, archive: list[tuple[np.ndarray, np.ndarray]]) -> None:
    X, F = _stacked(archive)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, X=X, F=F)
    tmp.replace(path)


def _write(
    space: SearchSpace, result: Fronts, out: Path, config: SearchConfig, weight_stage: float, record: Mapping
) -> None:
    summary_cols = ["method", "genes", "latency_ms", "loss", "top1", "weight_pruned_layers"]
    table = pd.concat([t.assign(method=m) for m, t in result.fronts.items()], ignore_index=True)
    table[summary_cols].to_csv(out / "pareto.csv", index=False)
    layers = []
    for row in table.itertuples(index=False):
        genes = np.array([int(g) for g in row.genes.split(",")])
        per_layer = space.table(genes)[["layer", "op", "cin", "cout", "full_cout", "density"]]
        layers.append(per_layer.assign(method=row.method, genes=row.genes, latency_ms=row.latency_ms))
    pd.concat(layers, ignore_index=True).to_csv(out / "pareto_layers.csv", index=False)
    plot_fronts(result.fronts, out / "fronts.png", y="top1",
                budgets=result.budgets["budget_ms"].tolist() if len(result.budgets) else ())
    result.budgets.to_csv(out / "budgets.csv", index=False)
    summary = {
        "hypervolume": result.hypervolume,
        "ref_point": {"loss": result.ref_point[0], "latency_ms": result.ref_point[1]},
        "front_sizes": {m: len(t) for m, t in result.fronts.items()},
        "config": dataclasses.asdict(config),
        "weight_stage": weight_stage,
        **record,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
