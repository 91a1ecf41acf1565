"""The joint search's weight stage on a real MobileNetV2's search space: the layer scan and the sparsified front.

Latency is the conftest's formula (sparse pays below 40% density) and the loss a known function
of the densities, so the ranking the scan must find can be computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from pruner.search.latency import CandidateLatency
from pruner.search.sensitivity import scan_candidates, scan_layers, sparsified
from pruner.search.space import SearchSpace


@pytest.fixture(scope="module")
def latency(space, latency_of) -> CandidateLatency:
    return latency_of(space)


def weights(space: SearchSpace) -> np.ndarray:
    """Each density gene's loss weight: what zeroing that layer's weights costs."""
    return np.random.default_rng(0).uniform(0.1, 1.0, space.n_var - space.n_width)


def objectives_of(space: SearchSpace, latency: CandidateLatency, calls: list):
    def objectives(X: np.ndarray) -> np.ndarray:
        calls.append(np.array(X))
        density = np.asarray(space.density_grid)[X[:, space.n_width:]]
        return np.column_stack([0.1 + ((1 - density) * weights(space)).sum(axis=1), latency(X)])

    return objectives


def test_scan_ranks_the_layers_that_pay_by_loss_added_per_ms_saved(space, latency, sparse_pays_below):
    calls: list = []
    scan = scan_layers(space, objectives_of(space, latency, calls), latency.repair)
    # exactly the layers whose lowest allowed density is below where sparse pays
    lowest = np.asarray(space.density_grid)[space.lower[space.n_width:]]
    expected = np.flatnonzero(lowest < sparse_pays_below) + space.n_width
    assert sorted(scan.genes.tolist()) == expected.tolist() and len(expected) >= 5
    assert len(scan_candidates(space, latency.repair)) == len(expected)
    # the ranking, by hand
    full = latency(space.full()[None])[0]
    by_hand = []
    for gene in scan.genes:
        x = space.full()
        x[gene] = space.lower[gene]
        loss_added = (1 - space.density_grid[space.lower[gene]]) * weights(space)[gene - space.n_width]
        by_hand.append(loss_added / (full - latency(x[None])[0]))
    np.testing.assert_allclose(scan.loss_per_ms, by_hand)
    assert np.all(np.diff(scan.loss_per_ms) >= 0)
    np.testing.assert_array_equal(scan.levels, space.lower[scan.genes])
    assert sum(len(X) for X in calls) == len(expected) + 1 == scan.evaluated + 1  # each layer once, and the full model
    assert len(scan_layers(space, objectives_of(space, latency, []), latency.repair, limit=3).genes) == 3


def test_sparsified_gives_every_front_candidate_its_cheapest_layers_first(space, latency):
    scan = scan_layers(space, objectives_of(space, latency, []), latency.repair)
    front = np.vstack([space.full(), np.clip(space.full() - 3, space.lower, space.upper)])
    front[:, space.n_width:] = space.upper[space.n_width:]  # dense, like a widths-only search's front
    out = sparsified(front, scan, latency.repair, budget=5)
    assert len(out) == 5 and len(np.unique(out, axis=0)) == 5
    assert not (out[:, None] == front[None]).all(-1).any()  # new candidates only
    for i, k in enumerate([1, 1, 2, 2, 3]):  # k = 1 for every row, then k = 2, ...
        expected = front[i % 2].copy()
        expected[scan.genes[:k]] = scan.levels[:k]
        np.testing.assert_array_equal(out[i], latency.repair(expected[None])[0])
    everything = sparsified(front, scan, latency.repair, budget=10_000)
    assert len(everything) == 2 * len(scan.genes)  # one new candidate per row and k
    assert len(sparsified(front, scan, latency.repair, budget=0)) == 0
