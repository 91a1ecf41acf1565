"""XNNPACK's sparse-inference rules (profiler.xnnpack) on hand-built TFLite graphs, each rule on both sides; the
harness's NCHW wrapper keeps its cluster over the gate whatever the kernel's density."""

import numpy as np
import pytest

from profiler import xnnpack
from profiler.harness import random_weights
from profiler.kernel import KernelSpec
from profiler.runtimes import get_runtime
from profiler.tflite_writer import TFLiteModel

XNNPACK = get_runtime("xnnpack")


def weights_with_zeros(cout: int, cin: int, zeros: int) -> np.ndarray:
    """A (cout, cin, 1, 1) weight with exactly `zeros` zero entries."""
    w = np.random.default_rng(0).uniform(0.5, 1.0, cout * cin).astype(np.float32)
    w[:zeros] = 0.0
    return w.reshape(cout, cin, 1, 1)


def graph(stem_cin=3, stem_padding="explicit", zeros=240, inside=None, leak=False, exit_mean=True) -> TFLiteModel:
    """input -> 3x3/2 stem -> 1x1 conv (20 -> 15, `zeros` of its 300 weights zero) -> [inside op] -> MEAN."""
    m = TFLiteModel()
    x = m.input("input", (1, 16, 16, stem_cin))
    stem_w = np.ones((20, 3, 3, stem_cin), np.float32)
    if stem_padding == "explicit":
        x = m.conv2d(m.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], "stem/pad"), m.constant("stem/w", stem_w),
                     m.constant("stem/b", np.zeros(20, np.float32)), 2, "valid", "relu", (1, 8, 8, 20), "stem")
    else:
        x = m.conv2d(x, m.constant("stem/w", stem_w), m.constant("stem/b", np.zeros(20, np.float32)), 2, "same",
                     "relu", (1, 8, 8, 20), "stem")
    spec = KernelSpec("conv", 8, 8, 20, 15)
    y = XNNPACK.lower(m, x, spec, weights_with_zeros(15, 20, zeros), np.zeros(15, np.float32), "pw")
    outputs = []
    if inside == "maxpool":
        y = m.max_pool2d(y, 2, 2, (1, 4, 4, 15), "pool2")
    elif inside == "relu6":
        y = m.activation(y, "relu6", "act")
    if leak:  # the 1x1 conv's output also leaves the graph: a value consumed outside the cluster
        outputs.append(y)
    out = m.mean(y, [1, 2], name="mean") if exit_mean else m.reshape(y, (1, 8 * 8 * 15), "flat")
    m.outputs = [out, *outputs]
    return m


def test_a_well_formed_cluster_over_the_gate_runs_sparse():
    (cluster,) = xnnpack.analyse(graph(zeros=240))
    assert cluster.nodes == ("stem", "pw", "mean") and cluster.gated == ("pw",)
    assert (cluster.params, cluster.zeros, cluster.blocked) == (300, 240, "")
    assert cluster.sparse and xnnpack.verdict(graph(zeros=240))["sparse"]


@pytest.mark.parametrize(("zeros", "sparse"), [(198, False), (200, False), (201, True)])
def test_the_gate_needs_more_than_two_thirds_zeros(zeros, sparse):
    """0.66 and exactly 2/3 stay dense (num_zeroes * 3 <= num_params * 2); 0.67 runs sparse."""
    verdict = xnnpack.verdict(graph(zeros=zeros))
    assert verdict["sparse"] is sparse
    assert verdict["zero_share"] == pytest.approx(zeros / 300, abs=1e-4)
    assert ("needs more than 2/3" in verdict["reason"]) is not sparse


@pytest.mark.parametrize("stem", [{"stem_cin": 1}, {"stem_padding": "same"}])
def test_the_entry_needs_three_channels_and_explicit_padding(stem):
    assert xnnpack.analyse(graph(**stem)) == []
    verdict = xnnpack.verdict(graph(**stem))
    assert not verdict["sparse"] and verdict["reason"].startswith("no entry")


def test_an_incompatible_node_inside_blocks_the_cluster_and_a_compatible_one_does_not():
    (blocked,) = xnnpack.analyse(graph(inside="maxpool"))
    assert not blocked.sparse and "pool2" in blocked.blocked and "MAX_POOL_2D" in blocked.blocked
    (fine,) = xnnpack.analyse(graph(inside="relu6"))
    assert fine.sparse and "act" in fine.nodes


def test_a_value_consumed_outside_the_cluster_blocks_it():
    (cluster,) = xnnpack.analyse(graph(leak=True))
    assert not cluster.sparse and "graph output" in cluster.blocked
    (no_exit,) = xnnpack.analyse(graph(exit_mean=False))
    assert not no_exit.sparse and "RESHAPE" in no_exit.blocked


@pytest.mark.parametrize("spec", [KernelSpec("conv", 7, 7, 64, 320, layout="nchw"),
                                  KernelSpec("conv", 7, 7, 64, 320, density=0.2, layout="nchw"),
                                  KernelSpec("dwconv", 14, 14, 96, 96, k=3, groups=96, layout="nchw")],
                         ids=lambda s: s.name())
def test_the_nchw_wrapper_keeps_its_cluster_sparse_whatever_the_kernel(spec):
    """The profiler's NCHW harness asks the same rules: with and without the kernel (its baseline) it runs sparse."""
    for kernel in (random_weights(spec, np.random.default_rng(0)), None):
        (cluster,) = xnnpack.analyse(XNNPACK.nchw_wrapper(spec, kernel))
        assert cluster.sparse, cluster.reason()
        assert ("kernel" in cluster.nodes) is (kernel is not None)


def test_the_cifar_mobilenet_v2_can_enter_xnnpacks_sparse_path():
    """The built-in 32x32 MobileNetV2: its stem is XNNPACK's entry and its whole body one cluster, which runs sparse
    once its 1x1 convs are more than 2/3 zeros (and dense before)."""
    import torch

    from pruner.deploy.export import export
    from pruner.model.apply import apply_candidate, make_permanent
    from pruner.model.graph import analyze
    from pruner.model.reference import build_model
    from pruner.search.space import SearchSpace, density_bounds

    model = build_model("mobilenet_v2_cifar", width_mult=0.25).eval()
    space = SearchSpace(analyze(model, (1, 3, 32, 32)), density_bounds=density_bounds(get_runtime("xnnpack")))
    dense = export(model, (1, 3, 32, 32), get_runtime("xnnpack", "1x4"))
    (cluster,) = dense.analysis
    assert not cluster.blocked and not cluster.sparse and cluster.entry == "features.0.0"
    assert len(cluster.gated) == len([layer for layer in space.graph.prunable if layer.k == 1])
    assert model.features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (2, 2)
    sparse = make_permanent(apply_candidate(model, space, space.lower, "1x4"))
    assert export(sparse, (1, 3, 32, 32), get_runtime("xnnpack", "1x4")).verdict["sparse"]
