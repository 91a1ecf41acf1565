"""The search's results as tables and plots: non-dominated sets, Pareto fronts, hypervolumes against one
reference point, the best candidate per latency budget, and a plot of several fronts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

LOSS, LATENCY = "loss", "latency_ms"


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of F (objectives minimised)."""
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(NonDominatedSorting().do(np.asarray(F, dtype=float), only_non_dominated_front=True))


def hypervolume(F: np.ndarray, ref_point: Sequence[float] | np.ndarray) -> float:
    """Hypervolume of (loss, latency) points against ref_point; points beyond it add nothing."""
    points = np.asarray(F, dtype=float).reshape(-1, 2)
    ref = np.asarray(ref_point, dtype=float)
    points = points[np.all(points < ref, axis=1)]
    return float(HV(ref_point=ref)(points)) if len(points) else 0.0



def pareto_front(X: np.ndarray, F: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """The non-dominated, de-duplicated candidates as a table (genes, latency_ms, loss), sorted by latency."""
    keep = non_dominated(F)
    table = pd.DataFrame(np.asarray(X, dtype=int)[keep], columns=list(names))
    table[LATENCY], table[LOSS] = np.asarray(F, dtype=float)[keep, 1], np.asarray(F, dtype=float)[keep, 0]
    return table.drop_duplicates().sort_values([LATENCY, LOSS], kind="stable").reset_index(drop=True)



def shared_ref_point(fronts: Mapping[str, pd.DataFrame], margin: float = 0.1) -> np.ndarray:
    """One (loss, latency) reference point for comparing fronts: the worst of each over all fronts, plus margin."""
    worsts = [t[[LOSS, LATENCY]].to_numpy(float).max(axis=0) for t in fronts.values() if len(t)]
    if not worsts:
        raise ValueError("every front is empty: no reference point to derive")
    worst = np.max(worsts, axis=0)
    return worst + margin * np.abs(worst)


def hypervolumes(
    fronts: Mapping[str, pd.DataFrame], ref_point: Sequence[float] | np.ndarray | None = None
) -> dict[str, float]:
    """Hypervolume of every front against one shared reference point (given, or from shared_ref_point)."""
    ref = shared_ref_point(fronts) if ref_point is None else np.asarray(ref_point, dtype=float)
    return {name: hypervolume(t[[LOSS, LATENCY]].to_numpy(float), ref) for name, t in fronts.items()}


def best_under_budgets(front: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    """Per latency budget, the lowest-loss candidate within it; a budget none meets gets a note, not a row of genes."""
    rows = []
    for budget in budgets:
        feasible = front[front[LATENCY] <= budget]
        if feasible.empty:
            fastest = f"{front[LATENCY].min():.4g} ms" if len(front) else "none (empty front)"
            rows.append(
                {
                    "budget_ms": budget,
                    "found": False,
                    "note": f"no candidate within {budget} ms; the fastest is {fastest}",
                }
            )
        else:
            best = feasible.sort_values([LOSS, LATENCY], kind="stable").iloc[0]
            rows.append({"budget_ms": budget, "found": True, "note": "", **best.to_dict()})
    return pd.DataFrame(rows)


def plot_fronts(
    fronts: Mapping[str, pd.DataFrame], path: str | Path, y: str = LOSS, budgets: Sequence[float] = ()
) -> Figure:
    """Save a PNG of the fronts (latency on x, `y` on y; budgets as dashed lines) to compare joint vs baselines;
    returns the figure, so what was plotted can be read back."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, table in fronts.items():
        t = table.sort_values(LATENCY)
        ax.plot(t[LATENCY], t[y], "o-", markersize=3, label=f"{name} ({len(t)})")
    for budget in budgets:
        ax.axvline(budget, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig
