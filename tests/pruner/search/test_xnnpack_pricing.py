"""Pricing, repairing and exporting candidates for an XNNPACK device: one rule (profiler.xnnpack) for the search's
price, its repair and the exporter's verdict, on a real 3-channel MobileNetV2 and its real TFLite export.

The predictor is a formula, so prices can be computed by hand: a kernel costs its MACs in the nhwc layout and a
quarter of its nonzero MACs in the nchw layout (XNNPACK's sparse CHW kernels)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from predictor import load, save
from predictor.latency import LatencyModel
from profiler.kernel import KernelSpec
from profiler.runtimes import get_runtime
from profiler.sparsity import zero_count
from pruner.deploy.export import export
from pruner.model.apply import apply_candidate, make_permanent
from pruner.model.graph import analyze
from pruner.model.reference import MobileNetV2
from pruner.search.latency import CandidateLatency, model_cluster, profiling_plan
from pruner.search.space import SearchSpace, density_bounds

SHAPE = (1, 3, 32, 32)

XNNPACK = get_runtime("xnnpack", "1x4")


def predict(specs: list[KernelSpec]) -> np.ndarray:
    return np.array([s.macs / 1e6 * (s.density / 4 if s.layout == "nchw" else 1.0) for s in specs])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MobileNetV2(10, 0.35, in_channels=3).eval()


@pytest.fixture(scope="module")
def space(model):
    return SearchSpace(analyze(model, SHAPE), density_bounds=density_bounds(get_runtime("xnnpack")))


@pytest.fixture(scope="module")
def priced(model, space):
    return CandidateLatency(space, predict, "1x4", 0.5, model_cluster(model, SHAPE, XNNPACK))


def zero_share(space, priced, x) -> float:
    specs = space.kernel_specs(x, "1x4")
    gated = [specs[n] for n in priced.cluster.gated]
    return sum(zero_count(s) for s in gated) / sum(s.cin * s.cout for s in gated)


def with_densities(space, level: int, widths: int | None = None) -> np.ndarray:
    """The full candidate with every density gene at grid index `level` (within its bounds)."""
    x = space.full()
    x[space.n_width:] = np.clip(level, space.lower[space.n_width:], space.upper[space.n_width:])
    if widths is not None:
        x[: space.n_width] = np.clip(widths, space.lower[: space.n_width], space.upper[: space.n_width])
    return x


def test_the_cluster_spans_the_network_and_counts_every_1x1_conv(model, priced):
    cluster = priced.cluster
    assert not cluster.blocked
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(cluster.gated) == {n for n, m in convs.items() if m.kernel_size == (1, 1)}
    assert {n for n, m in convs.items() if m.groups > 1} <= cluster.layers  # depthwise convs inside
    assert "classifier.1" not in cluster.layers  # the classifier reads the global mean: outside


def test_a_one_channel_model_never_runs_sparse():
    cluster = model_cluster(MobileNetV2(10, 0.35, in_channels=1), (1, 1, 32, 32), XNNPACK)
    assert cluster.blocked.startswith("no entry") and not cluster.layers


def test_a_candidate_under_the_gate_is_priced_dense_and_one_over_it_sparse(space, priced):
    under, over = with_densities(space, 5), with_densities(space, 0)  # densities 0.6 and the floors (0.1/0.2)
    assert zero_share(space, priced, under) < 2 / 3 < zero_share(space, priced, over)
    dense_price = predict([s.replace(density=1.0) for s in space.kernel_specs(space.full(), "1x4").values()]).sum()
    assert priced(under[None])[0] == pytest.approx(dense_price + 0.5)  # zeros under the gate buy nothing
    specs = space.kernel_specs(over, "1x4")
    expected = sum(predict([s.replace(layout="nchw") if priced.cluster.runs_nchw(n, s) else s.replace(density=1.0)])[0]
                   for n, s in specs.items())
    assert priced(over[None])[0] == pytest.approx(expected + 0.5)
    assert priced(over[None])[0] < 0.5 * priced(under[None])[0]


def test_the_repair_densifies_far_misses_pushes_near_misses_over_and_keeps_sparse_ones(space, priced):
    far, over = with_densities(space, 6), with_densities(space, 0)
    near = with_densities(space, 3)  # density 0.4 everywhere: 60% zeros, a near miss
    assert 2 / 3 - 0.15 < zero_share(space, priced, near) < 2 / 3
    repaired = priced.gate_repair(np.vstack([far, near, over]))
    assert np.array_equal(repaired[0, space.n_width:], space.upper[space.n_width:])
    assert zero_share(space, priced, repaired[1]) > 2 / 3
    assert np.all(repaired[1] <= near) and np.all(repaired[1] >= space.lower)
    assert np.array_equal(repaired[2], over)


def test_the_default_floors_cannot_cross_the_gate_and_the_xnnpack_floors_can(model, priced):
    jcw = SearchSpace(analyze(model, SHAPE))
    assert zero_share(jcw, priced, jcw.lower) <= 2 / 3  # JCW's floors top out under the gate (66.1% at 224 px)
    assert zero_share(priced.space, priced, priced.space.lower) > 2 / 3


@pytest.mark.parametrize("level", [0, 2, 3, 6])
def test_the_exporter_and_the_search_agree_on_the_regime(model, space, priced, level):
    """The exported file's verdict (zeros in its real weights) is the search's (zeros counted from densities)."""
    x = with_densities(space, level)
    exported = export(make_permanent(apply_candidate(model, space, x)), SHAPE, "xnnpack")
    assert exported.verdict["sparse"] == priced.cluster.sparse(space.kernel_specs(x, "1x4"))
    nchw = [layer.name for layer in exported.layers if layer.spec.layout == "nchw"]
    assert bool(nchw) == exported.verdict["sparse"]
    assert set(nchw) <= priced.cluster.layers


def test_the_plan_holds_dense_nhwc_and_both_nchw_forms(space, priced):
    plan = profiling_plan(space, XNNPACK, candidates=3, cluster=priced.cluster)
    assert all(s.density == 1.0 for s in plan if s.layout == "nhwc")
    nchw = [s for s in plan if s.layout == "nchw"]
    assert any(s.is_sparse for s in nchw) and any(s.op == "dwconv" for s in nchw)
    keys = {p.key() for p in plan}
    assert all(s.replace(density=1.0).key() in keys for s in nchw)


def test_a_network_running_sparse_gets_the_sparse_overhead(space, priced):
    """XNNPACK's CHW layout conversions, adds and mean cost differently: the search adds each regime's overhead."""
    both = dataclasses.replace(priced, sparse_overhead_ms=7.0)
    under, over = with_densities(space, 5), with_densities(space, 0)
    assert both(under[None])[0] == pytest.approx(priced(under[None])[0])
    assert both(over[None])[0] == pytest.approx(priced(over[None])[0] - 0.5 + 7.0)


def test_the_predictor_fits_and_keeps_an_overhead_per_regime(tmp_path):
    """A real LatencyModel: networks with nchw kernels fit `sparse_overhead`, the others `overhead`; both saved."""
    specs = [KernelSpec("conv", 8, 8, c, c, layout=layout) for c in (8, 16, 32, 64) for layout in ("nhwc", "nchw")]
    table = pd.DataFrame([s.to_row() | {"latency_ms": s.macs / 1e5 * (0.5 if s.layout == "nchw" else 1.0),
                                        "device": "d", "runtime": "xnnpack", "runtime_version": "r"} for s in specs])
    model = LatencyModel.fit(table)
    dense_net, sparse_net = specs[0::2], specs[1::2]
    sums = [float(model.predict(n).sum()) for n in (dense_net, sparse_net)]
    model.fit_overhead([dense_net, sparse_net], [sums[0] + 1.0, sums[1] + 3.0])
    assert model.network_overhead(dense_net) == pytest.approx(1.0)
    assert model.network_overhead(sparse_net) == pytest.approx(3.0)
    save(model, tmp_path / "m.jcwm")
    loaded = load(tmp_path / "m.jcwm")
    assert loaded.predict_network(sparse_net) == pytest.approx(model.predict_network(sparse_net), rel=1e-6)
    assert loaded.sparse_overhead == model.sparse_overhead
