"""Pricing candidates with a kernel predictor, on a real MobileNetV2's search space.

The predictor here is the conftest's formula (not a fitted model) whose sparse kernels pay only below 40% density,
like TFLite's built-in sparse kernels on x86, so the expected prices and repairs can be computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from profiler.kernel import KernelSpec
from profiler.runtimes import get_runtime
from pruner.search.latency import CandidateLatency, profiling_plan
from pruner.search.space import SearchSpace


@pytest.fixture(scope="module")
def priced(space, predict) -> CandidateLatency:
    return CandidateLatency(space, predict, "1x4", overhead_ms=0.5)


def test_latency_is_the_sum_of_each_layers_faster_form_plus_overhead(space, priced, predict):
    x = space.sample(np.random.default_rng(0), 1)[0]
    specs = list(space.kernel_specs(x, "1x4").values())
    faster = [min(predict([s])[0], predict([s.replace(density=1.0)])[0]) for s in specs]
    assert priced(x[None])[0] == pytest.approx(sum(faster) + 0.5)
    assert priced(space.full()[None])[0] == pytest.approx(predict(specs_at(space, space.full())).sum() + 0.5)


def specs_at(space: SearchSpace, x: np.ndarray) -> list[KernelSpec]:
    return list(space.kernel_specs(x, "1x4").values())


def test_densify_sets_dense_exactly_the_layers_the_device_runs_dense(space, priced):
    X = space.sample(np.random.default_rng(1), 8)
    repaired = priced.repair(X)
    n_width = space.n_width
    np.testing.assert_array_equal(repaired[:, :n_width], X[:, :n_width])  # widths untouched
    for x, r in zip(X, repaired, strict=True):
        choices = priced.layer_choices(x)
        for j, layer in enumerate(space.graph.prunable):
            runs_dense = choices[layer.name][0].density == 1.0
            expected = space.upper[n_width + j] if runs_dense else x[n_width + j]
            assert r[n_width + j] == expected, layer.name
    changed = repaired != X
    assert changed.any() and (repaired[changed] == space.upper[np.nonzero(changed)[1]]).all()
    # the same price: the repair only removes zeros that bought no speed
    np.testing.assert_allclose(priced(repaired), priced(X))
    kept_sparse = repaired[:, n_width:] < space.upper[n_width:]
    assert kept_sparse.any(), "below density 0.4 sparse pays in this formula: some layers stay sparse"


def test_the_repair_leaves_dense_candidates_alone(space, priced):
    np.testing.assert_array_equal(priced.repair(space.full()[None]), space.full()[None])


def test_prefer_dense_agrees_with_the_search_price(space, priced, predict):
    x = space.lower
    specs = [s for s in specs_at(space, x) if s.is_sparse]
    chosen = get_runtime("builtin").storage_chooser(predict)(specs)
    choices = {spec.key(): spec for spec, _ in priced.layer_choices(x).values()}
    assert chosen == [s.key() not in choices for s in specs]  # stored dense <=> the priced spec is the dense twin


def test_profiling_plan_holds_the_full_and_smallest_kernels_and_a_dense_twin_of_each_sparse_one(space):
    plan = profiling_plan(space, get_runtime("builtin", "1x4"), candidates=4)
    keys = {s.key() for s in plan}
    assert len(keys) == len(plan)
    for x in (space.lower, space.full()):
        assert {s.key() for s in specs_at(space, x)} <= keys
    assert all(s.replace(density=1.0).key() in keys for s in plan if s.is_sparse)
