"""One search run: the accuracy-latency fronts of joint, channel-only and weight-only pruning and of uniform
width multipliers, with the same estimator, predictor and budget, and the files a user reads."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pruner.estimate import LOSS, TOP1, Estimator
from pruner.search import (
    FixedGenes,
    SearchConfig,
    SearchProblem,
    best_under_budgets,
    hypervolumes,
    pareto_front,
    plot_fronts,
    search,
    shared_ref_point,
    uniform_sweep,
)
from pruner.space import SearchSpace

METHODS = ("joint", "channel-only", "weight-only")
MULTIPLIERS = tuple(round(0.1 * i, 1) for i in range(1, 11))


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


@dataclass
class Fronts:
    """Each method's front (genes, latency_ms, loss, top1, weight_pruned_layers), their hypervolumes against one
    reference point, and the joint front's best candidate under each budget."""

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
) -> Fronts:
    """Search each method (checkpointed under out/<method>, so an interrupted run resumes; each starts from the
    uniform-width candidates), sweep uniform multipliers, and write pareto.csv, pareto_layers.csv,
    fronts.png, summary.json and budgets.csv to `out`.

    `repair` maps new candidates to ones at least as good before they are evaluated, for every method alike;
    pass `CandidateLatency.densify` so no candidate zeroes weights in a layer the device runs dense."""
    out, config = Path(out), config or SearchConfig()
    out.mkdir(parents=True, exist_ok=True)

    archive: list[tuple[np.ndarray, np.ndarray]] = []  # every candidate the current method's search evaluates

    def objectives(X: np.ndarray) -> np.ndarray:
        F = np.column_stack([estimator(X)[:, LOSS], latency(X)])
        archive.append((np.asarray(X, dtype=int), F))
        return F

    problem = SearchProblem(space.lower, space.upper, objectives, names=space.gene_names, repair=repair)
    distinct = {tuple(uniform_candidate(space, m)): m for m in reversed(MULTIPLIERS)}  # bounds merge some
    seeds = np.array(list(distinct))  # every method starts from the uniform candidates (where its genes allow)
    fronts = {}
    for method in methods:
        saved = out / method / "archive.npz"  # what earlier (interrupted) runs of this search evaluated

        def keep(X_pop: np.ndarray, saved: Path = saved) -> None:
            """Save the archive every generation, so a resumed search's front is the uninterrupted one's."""
            _save_archive(saved, archive)
            if on_generation is not None:
                on_generation(X_pop)

        archive.clear()
        if saved.exists():
            with np.load(saved) as z:
                archive.append((z["X"], z["F"]))
        result = search(problem, config, run_dir=out / method, fixed=fixed_genes(space, method), progress=progress,
                        seeds=seeds, on_generation=keep)
        archive.append((result.X, result.F))
        _save_archive(saved, archive)
        fronts[method] = pareto_front(*_stacked(archive), space.gene_names)
    uniform = uniform_sweep(problem, lambda m: uniform_candidate(space, m), sorted(distinct.values()))
    fronts["uniform"] = uniform.drop(columns="multiplier")
    n_width = space.n_width
    for table in fronts.values():
        genes = table[list(space.gene_names)].to_numpy(int)
        table["top1"] = estimator(genes)[:, TOP1] if len(genes) else []
        table["weight_pruned_layers"] = (genes[:, n_width:] < space.upper[n_width:]).sum(axis=1)
        table.insert(0, "genes", [",".join(map(str, g)) for g in genes])
    ref = shared_ref_point(fronts)
    result = Fronts(fronts, hypervolumes(fronts, ref), ref, best_under_budgets(fronts["joint"], budgets)
                    if "joint" in fronts else pd.DataFrame())
    _write(space, result, out, config)
    return result


def _stacked(archive: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([x for x, _ in archive]), np.vstack([f for _, f in archive])


def _save_archive(path: Path, archive: list[tuple[np.ndarray, np.ndarray]]) -> None:
    X, F = _stacked(archive)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, X=X, F=F)
    tmp.replace(path)


def _write(space: SearchSpace, result: Fronts, out: Path, config: SearchConfig) -> None:
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
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
