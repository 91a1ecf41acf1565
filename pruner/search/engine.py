"""Model-agnostic JCW search: pymoo NSGA-II over integer gene vectors, objectives (estimated loss, latency ms).

The engine knows nothing of models: a `SearchProblem` gives integer bounds, a batched evaluator and an
optional repair. It runs NSGA-II with JCW's operators and anchor survival (pruner.search.survival), repairs every new
candidate, checkpoints every generation (pruner.search.state) so an interrupted run resumes to the very same result,
and shows the current front's size and hypervolume (pruner.search.pareto). Genes can be held fixed (`FixedGenes`: the
channel-only and weight-only baselines).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.algorithm import Algorithm
from pymoo.core.callback import Callback
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.termination.max_gen import MaximumGenerationTermination
from tqdm import tqdm

from profiler.errors import UserError
from pruner.search.pareto import hypervolume, non_dominated, pareto_front
from pruner.search.state import CHECKPOINT, Evaluations, load_state, refuse_old_checkpoint, save_state
from pruner.search.survival import AnchorSurvival, spread_anchors


class SearchError(UserError, ValueError):
    """A search setting or evaluator output that does not fit the run."""


Evaluate = Callable[[np.ndarray], np.ndarray]
RepairFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class SearchProblem:
    """What the engine searches: inclusive integer gene bounds, a batched (loss, latency ms) evaluator, and
    optionally a repair that maps each new candidate to one at least as good before it is evaluated."""

    lower: np.ndarray
    upper: np.ndarray
    evaluate: Evaluate  # X [n, d] int -> [n, 2] float: (estimated loss, predicted latency ms) per row
    names: tuple[str, ...] | None = None
    repair: RepairFn | None = None  # X [n, d] int -> X' [n, d] int within the bounds

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=int)
        self.upper = np.asarray(self.upper, dtype=int)
        if self.lower.ndim != 1 or self.lower.shape != self.upper.shape:
            raise SearchError(f"lower {self.lower.shape} and upper {self.upper.shape} must be equal-length vectors")
        bad = np.flatnonzero(self.lower > self.upper)
        if bad.size:
            raise SearchError(f"genes {bad.tolist()} have lower > upper")
        if self.names is not None and len(self.names) != len(self.lower):
            raise SearchError(f"{len(self.names)} gene names for {len(self.lower)} genes")

    @property
    def n_var(self) -> int:
        """Number of genes."""
        return len(self.lower)

    def gene_names(self) -> list[str]:
        """Column names for the genes: the given names or g0, g1, ..."""
        return list(self.names) if self.names is not None else [f"g{i}" for i in range(self.n_var)]

    def objectives(self, X: np.ndarray) -> np.ndarray:
        """Evaluate integer rows and check the evaluator's answer is [n, 2] finite floats."""
        X = np.atleast_2d(np.asarray(X)).astype(int)
        F = np.asarray(self.evaluate(X), dtype=float)
        if F.shape != (len(X), 2):
            raise SearchError(f"evaluate returned shape {F.shape} for {len(X)} candidates; expected ({len(X)}, 2)")
        if not np.all(np.isfinite(F)):
            raise SearchError(
                f"evaluate returned non-finite objectives for rows {np.flatnonzero(~np.isfinite(F).all(1))}"
            )
        return F

    def repaired(self, X: np.ndarray) -> np.ndarray:
        """Integer rows after the repair (unchanged without one), checked to keep their shape and bounds."""
        X = np.atleast_2d(np.asarray(X)).astype(int)
        if self.repair is None:
            return X
        Xr = np.asarray(self.repair(X))
        if Xr.shape != X.shape:
            raise SearchError(f"repair returned shape {Xr.shape} for candidates of shape {X.shape}")
        bad = np.flatnonzero(np.any((Xr < self.lower) | (Xr > self.upper), axis=1))
        if bad.size:
            raise SearchError(f"repair moved rows {bad.tolist()} outside the gene bounds")
        return Xr.astype(int)


@dataclass(frozen=True)
class FixedGenes:
    """Genes held at given values (baselines: channel-only fixes densities, weight-only fixes widths)."""

    mask: np.ndarray  # bool [d]: True where the gene is fixed
    values: np.ndarray  # int [d]: the full-length vector whose entries at `mask` are used

    def expand(self, X_free: np.ndarray) -> np.ndarray:
        """Full gene vectors from the free genes' values."""
        X_free = np.atleast_2d(X_free)
        X = np.tile(np.asarray(self.values, dtype=int), (len(X_free), 1))
        X[:, ~np.asarray(self.mask, dtype=bool)] = X_free
        return X


def restrict(problem: SearchProblem, fixed: FixedGenes) -> SearchProblem:
    """The problem over the free genes only, so the optimiser never touches the fixed ones."""
    mask, values = np.asarray(fixed.mask, dtype=bool), np.asarray(fixed.values, dtype=int)
    if mask.shape != problem.lower.shape or values.shape != problem.lower.shape:
        raise SearchError(f"fixed mask {mask.shape} and values {values.shape} must have {problem.n_var} genes")
    if mask.all():
        raise SearchError("every gene is fixed: nothing to search")
    bad = np.flatnonzero(mask & ((values < problem.lower) | (values > problem.upper)))
    if bad.size:
        raise SearchError(f"fixed values of genes {bad.tolist()} are outside the bounds")
    names = None if problem.names is None else tuple(n for n, m in zip(problem.names, mask, strict=True) if not m)
    repair = None if problem.repair is None else lambda X: problem.repaired(fixed.expand(X))[:, ~mask]
    return SearchProblem(problem.lower[~mask], problem.upper[~mask], lambda X: problem.evaluate(fixed.expand(X)),
                         names, repair)


class PymooProblem(Problem):
    """A SearchProblem as a vectorised pymoo Problem with integer variables and objectives (loss, latency)."""

    def __init__(self, problem: SearchProblem) -> None:
        super().__init__(n_var=problem.n_var, n_obj=2, xl=problem.lower, xu=problem.upper, vtype=int)
        self.search_problem = problem

    def _evaluate(self, X, out, *args, **kwargs) -> None:
        out["F"] = self.search_problem.objectives(np.rint(X))


class ProblemRepair(Repair):
    """Applies the SearchProblem's repair to new candidates (pymoo keeps the repaired genes, so they breed)."""

    def _do(self, problem, X, **kwargs) -> np.ndarray:
        return problem.search_problem.repaired(np.rint(X)).astype(X.dtype)


@dataclass(frozen=True)
class SearchConfig:
    """NSGA-II settings; defaults are JCW's (population 64, 128 generations, SBX 0.5/0.5, PM eta 15 p 1/n)."""

    n_gen: int = 128
    pop_size: int = 64
    seed: int = 0
    survival: str = "jcw"  # "jcw" (anchor round-robin) or "nsga2" (rank and crowding)
    n_anchors: int = 8
    sbx_eta: float = 0.5
    sbx_prob: float = 0.5
    pm_eta: float = 15.0
    include_ends: bool = True  # start from the smallest and the full candidate too, so the front spans every budget
    latency_range: tuple[float, float] | None = None  # anchors' span; None: latencies of the lower and upper vectors
    anchors: tuple[float, ...] | None = None  # explicit anchor latencies (e.g. the budgets); overrides the two above
    ref_point: tuple[float, float] | None = None  # progress-bar HV reference; None: 1.1 x worst of lower/upper

    def __post_init__(self) -> None:
        if self.survival not in ("jcw", "nsga2"):
            raise SearchError(f"survival must be 'jcw' or 'nsga2', got {self.survival!r}")
        if self.anchors is not None and not self.anchors:
            raise SearchError("anchors, when given, must hold at least one latency")
        if self.n_gen < 1 or self.pop_size < 2 or self.n_anchors < 1:
            raise SearchError(f"need n_gen >= 1, pop_size >= 2, n_anchors >= 1; got {self}")


class EndsAndRandomSampling(Sampling):
    """IntegerRandomSampling whose first rows are the lower (smallest) and upper (full) candidates, then `seeds`."""

    def __init__(self, seeds: np.ndarray | None = None):
        super().__init__()
        self.seeds = np.zeros((0, 0), dtype=int) if seeds is None else np.atleast_2d(seeds).astype(int)

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs) -> np.ndarray:
        X = IntegerRandomSampling()._do(problem, n_samples, random_state=random_state)
        first = np.stack([problem.xl, problem.xu])
        if self.seeds.size:
            first = np.vstack([first, np.clip(self.seeds, problem.xl, problem.xu)])
        first = first[:n_samples]
        X[: len(first)] = first
        return X


def make_algorithm(
    config: SearchConfig, n_var: int, anchors: np.ndarray | None, seeds: np.ndarray | None = None
) -> NSGA2:
    """NSGA-II with JCW's integer operators (children rounded to the grid, duplicates removed) and survival.

    `seeds` are candidates placed in the initial population after the two ends (with include_ends)."""
    survival = AnchorSurvival(anchors) if config.survival == "jcw" else RankAndCrowding()
    return NSGA2(
        pop_size=config.pop_size,
        sampling=EndsAndRandomSampling(seeds) if config.include_ends else IntegerRandomSampling(),
        crossover=SBX(prob=config.sbx_prob, eta=config.sbx_eta, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, prob_var=1.0 / n_var, eta=config.pm_eta, vtype=float, repair=RoundingRepair()),
        survival=survival,
        eliminate_duplicates=True,
        repair=ProblemRepair(),
    )




HvOf = Callable[[np.ndarray], float]  # the population's objectives -> the hypervolume a progress bar shows


class Progress(Callback):
    """pymoo Callback driving a tqdm bar: generations, the population's front size and a hypervolume, `hv_of` the
    population's objectives (default: its front's against `ref_point`)."""

    def __init__(self, total: int, initial: int, ref_point: np.ndarray, enabled: bool, desc: str = "search",
                 hv_of: HvOf | None = None) -> None:
        super().__init__()
        self.hv_of = hv_of or (lambda F: hypervolume(F, ref_point))
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="gen", disable=not enabled)

    def notify(self, algorithm: Algorithm) -> None:
        """Advance one generation and show the current front."""
        F = algorithm.pop.get("F")
        self.bar.set_postfix(front=len(non_dominated(F)), hv=f"{self.hv_of(F):.4g}", refresh=False)
        self.bar.update(1)


@dataclass
class SearchResult:
    """A finished search: the final population (full gene vectors), its Pareto front and the run's settings."""

    X: np.ndarray
    F: np.ndarray  # columns (loss, latency ms)
    front: pd.DataFrame  # genes, latency_ms, loss; non-dominated, sorted by latency
    anchors: np.ndarray | None
    ref_point: np.ndarray
    generations: int
    evaluations: int


def generations_done(algorithm: Algorithm) -> int:
    """Completed generations (the initial population counts as the first)."""
    return algorithm.n_iter - 1 if algorithm.is_initialized else 0



def run_settings(config: SearchConfig, problem: SearchProblem, fixed: FixedGenes | None, seeds: np.ndarray) -> dict:
    """What a checkpoint must share with the run resuming it, as JSON values (n_gen may differ: runs extend)."""
    mask = np.zeros(problem.n_var, bool) if fixed is None else np.asarray(fixed.mask, dtype=bool)
    settings = {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "n_gen"},
        "lower": problem.lower.tolist(),
        "upper": problem.upper.tolist(),
        "fixed_mask": mask.tolist(),
        "fixed_values": None if fixed is None else np.asarray(fixed.values, dtype=int).tolist(),
        "seeds": seeds.tolist(),
        "repair": problem.repair is not None,
    }
    return json.loads(json.dumps(settings))  # tuples as lists, as read back



def anchors_and_ref_point(problem: SearchProblem, config: SearchConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """JCW's anchor latencies (None for plain NSGA-II survival) and the progress bar's hypervolume reference, from
    the config or, where it leaves them open, from the smallest and the full candidate's objectives."""
    if config.latency_range is None or config.ref_point is None:
        ends = problem.objectives(problem.repaired(np.stack([problem.lower, problem.upper])))
        latency_range = config.latency_range or (float(ends[:, 1].min()), float(ends[:, 1].max()))
        ref_point = np.array(config.ref_point or ends.max(axis=0) * 1.1, dtype=float)
    else:
        latency_range, ref_point = config.latency_range, np.array(config.ref_point, dtype=float)
    if config.survival != "jcw":
        return None, ref_point
    if config.anchors:
        return np.array(config.anchors, dtype=float), ref_point
    return spread_anchors(*latency_range, config.n_anchors), ref_point


def search(
    problem: SearchProblem,
    config: SearchConfig = SearchConfig(),
    run_dir: str | Path | None = None,
    fixed: FixedGenes | None = None,
    progress: bool = True,
    seeds: np.ndarray | None = None,
    on_generation: Callable[[np.ndarray], None] | None = None,
    desc: str = "search",
    hv_of: HvOf | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Run, or resume from run_dir's checkpoint, the search (over the free genes only, given `fixed`).

    `seeds` (full gene vectors) start in the initial population, e.g. dense candidates for a joint search.
    `on_generation(X)` is called with the population's full gene vectors after each generation (JCW retrains
    its supernet there). A resumed run replays its finished generations from the checkpoint without evaluating
    or calling `on_generation` again: the hook ran for them before the interruption, and what it changed lives
    outside the checkpoint (run_fronts' archive is saved by the hook itself; a retrained supernet is not
    restored, so a run whose hook changes the evaluator can differ after resuming). `desc` labels the progress
    bar, `hv_of` gives the hypervolume it shows (Progress), `on_progress(done, new)` hears after each generation how
    many are done and how many of them ran in this call."""
    inner = restrict(problem, fixed) if fixed is not None else problem
    mask = np.zeros(problem.n_var, bool) if fixed is None else np.asarray(fixed.mask, dtype=bool)
    seeds = np.zeros((0, inner.n_var), dtype=int) if seeds is None else np.atleast_2d(seeds).astype(int)[:, ~mask]
    settings = run_settings(config, problem, fixed, seeds)
    path = None
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        path = Path(run_dir) / CHECKPOINT
        refuse_old_checkpoint(path.parent)

    evaluations, done = Evaluations(), 0
    if path is not None and path.exists():
        anchors, ref_point, done, evaluations = load_state(path, settings)
    else:
        anchors, ref_point = anchors_and_ref_point(inner, config)
    algorithm = make_algorithm(config, inner.n_var, anchors, seeds)
    replayed = min(done, config.n_gen)
    answered = evaluations.replaying(path) if replayed else evaluations.recording(inner.evaluate)
    start = PymooProblem(dataclasses.replace(inner, evaluate=answered))
    algorithm.setup(start, termination=MaximumGenerationTermination(config.n_gen), seed=config.seed)
    while generations_done(algorithm) < replayed:
        algorithm.next()
    algorithm.problem = PymooProblem(dataclasses.replace(inner, evaluate=evaluations.recording(inner.evaluate)))

    bar = Progress(config.n_gen, generations_done(algorithm), ref_point, progress, desc, hv_of)
    algorithm.callback = bar
    try:
        while generations_done(algorithm) < config.n_gen and algorithm.has_next():
            algorithm.next()
            if path is not None:
                save_state(path, settings, anchors, ref_point, generations_done(algorithm), evaluations)
            if on_generation is not None:
                X_now = algorithm.pop.get("X").astype(int)
                on_generation(fixed.expand(X_now) if fixed is not None else X_now)
            if on_progress is not None:
                on_progress(generations_done(algorithm), generations_done(algorithm) - replayed)
    finally:
        bar.bar.close()

    X_free, F = algorithm.pop.get("X").astype(int), algorithm.pop.get("F")
    X = fixed.expand(X_free) if fixed is not None else X_free
    return SearchResult(
        X=X,
        F=F,
        front=pareto_front(X, F, problem.gene_names()),
        anchors=anchors,
        ref_point=ref_point,
        generations=generations_done(algorithm),
        evaluations=algorithm.evaluator.n_eval,
    )
