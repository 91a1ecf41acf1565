"""JCW's anchor survival: one NSGA-II population serves several latency budgets at once.

K anchor latencies are spread between the smallest and the full model. For every anchor the merged
population is ranked by non-dominated sorting on (loss, |latency - anchor|), ties inside a front broken by
closeness to the anchor; the next population is then filled round-robin over the anchors, each anchor taking
its best individual not yet taken. Objectives are (loss, latency), both minimised.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.population import Population
from pymoo.core.survival import Survival
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def spread_anchors(latency_min: float, latency_max: float, k: int) -> np.ndarray:
    """K anchor latencies evenly spaced over [min, max], so every part of the latency range keeps candidates."""
    if k < 1:
        raise ValueError(f"need at least one anchor, got {k}")
    if not latency_min <= latency_max:
        raise ValueError(f"latency range [{latency_min}, {latency_max}] is empty")
    return np.linspace(latency_min, latency_max, k)


def anchor_order(F: np.ndarray, anchor: float, nds: NonDominatedSorting) -> np.ndarray:
    """Indices of F best-first for one anchor: front by front on (loss, |latency - anchor|), nearest first."""
    distance = np.abs(F[:, 1] - anchor)
    fronts = nds.do(np.column_stack([F[:, 0], distance]))
    return np.concatenate([front[np.lexsort((F[front, 0], distance[front]))] for front in fronts])


def round_robin(orders: list[np.ndarray], n_survive: int) -> np.ndarray:
    """Take each order's best not-yet-taken index in turn until n_survive are taken; returns them in pick order."""
    taken = np.zeros(len(orders[0]), dtype=bool)
    cursors = [0] * len(orders)
    picked: list[int] = []
    while len(picked) < n_survive:
        for a, order in enumerate(orders):
            while cursors[a] < len(order) and taken[order[cursors[a]]]:
                cursors[a] += 1
            if cursors[a] < len(order) and len(picked) < n_survive:
                taken[order[cursors[a]]] = True
                picked.append(int(order[cursors[a]]))
    return np.array(picked, dtype=int)


class AnchorSurvival(Survival):
    """JCW's survival as a pymoo Survival (feasible-first handling comes from the base class)."""

    def __init__(self, anchors: np.ndarray) -> None:
        super().__init__(filter_infeasible=True)
        self.anchors = np.asarray(anchors, dtype=float)
        self.nds = NonDominatedSorting()

    def _do(self, problem, pop, *args, n_survive=None, random_state=None, **kwargs) -> Population:
        """Select n_survive individuals round-robin over the anchors' rankings."""
        F = pop.get("F").astype(float, copy=False)
        orders = [anchor_order(F, anchor, self.nds) for anchor in self.anchors]
        survivors = pop[round_robin(orders, n_survive)]
        # NSGA2's tournament compares by domination, then by "crowding" (larger wins): earlier picks win ties.
        # "rank" is the plain non-dominated rank on (loss, latency), which NSGA2 uses to report its optimum.
        ranks = np.empty(len(survivors), dtype=int)
        for k, front in enumerate(self.nds.do(survivors.get("F").astype(float, copy=False))):
            ranks[front] = k
        survivors.set("rank", ranks, "crowding", -np.arange(len(survivors), dtype=float))
        return survivors
