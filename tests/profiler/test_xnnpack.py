"""XNNPACK's sparse-inference rules (profiler.xnnpack, ported from LiteRT 1.4.0's delegate and XNNPACK 8b3d5687eb)
on hand-built TFLite graphs (xnnpack_graphs.py), each rule on both sides; test_xnnpack_observed.py checks them
against what XNNPACK executes on arm-emu.
The harness's NCHW wrapper keeps its cluster over the gate whatever the kernel's density."""

import numpy as np
import pytest

from profiler import xnnpack
from profiler.harness import random_weights
from profiler.kernel import KernelSpec
from profiler.runtimes import get_runtime
from profiler.tflite_writer import _OPT, ACTIVATION, OP, FullyConnectedOptions, TFLiteModel
from tests.profiler.xnnpack_graphs import graph, pointwise, pool_then, stem

XNNPACK = get_runtime("xnnpack")


def test_a_well_formed_cluster_over_the_gate_runs_sparse():
    (cluster,) = xnnpack.analyse(graph(zeros=240))
    assert cluster.nodes == ("stem", "pw", "mean") and cluster.gated == ("pw",)
    assert (cluster.entries, cluster.exits, cluster.nchw) == (("stem",), ("mean",), ("stem", "pw"))
    assert (cluster.params, cluster.zeros, cluster.blocked, cluster.hint) == (300, 240, "", True)
    assert cluster.sparse and xnnpack.verdict(graph(zeros=240))["sparse"]


@pytest.mark.parametrize(("zeros", "sparse"), [(198, False), (200, False), (201, True)])
def test_the_gate_needs_more_than_two_thirds_zeros(zeros, sparse):
    """0.66 and exactly 2/3 stay dense (num_zeroes * 3 <= num_params * 2); 0.67 runs sparse."""
    verdict = xnnpack.verdict(graph(zeros=zeros))
    assert verdict["sparse"] is sparse
    assert verdict["zero_share"] == pytest.approx(zeros / 300, abs=1e-4)
    assert ("needs more than 2/3" in verdict["reason"]) is not sparse


def test_without_a_densify_nothing_runs_sparse_and_with_one_anywhere_dense_stored_zeros_count():
    (dense,) = xnnpack.analyse(graph(zeros=240, stored="dense"))
    assert dense.passes and not dense.hint and not dense.sparse and dense.cause == "form"
    assert "no DENSIFY" in dense.reason()
    m = graph(zeros=240, stored="dense")  # one DENSIFY on the stem's weight (not gated) turns the hint on
    conv = next(op for op in m.ops if op.code == OP.CONV_2D)
    conv.inputs[1] = m.densify(m.sparse_constant("stem/w/sparse", np.ones((20, 3, 3, 3), np.float32)), "stem/w/d")
    m.ops.insert(0, m.ops.pop())
    (hinted,) = xnnpack.analyse(m)
    assert hinted.sparse and hinted.zeros == 240


def test_the_entry_needs_three_channels_and_explicit_padding():
    assert xnnpack.analyse(graph(stem_cin=1)) == []
    assert xnnpack.verdict(graph(stem_cin=1))["reason"].startswith("no entry")
    (same,) = xnnpack.analyse(graph(stem_padding="same"))
    assert not same.sparse and same.cause == "form" and "SAME" in same.blocked and "L434" in same.blocked


def test_an_incompatible_node_inside_blocks_the_cluster_and_compatible_ones_do_not():
    (blocked,) = xnnpack.analyse(graph(inside="maxpool"))
    assert not blocked.sparse and "'pool2' is a MAX_POOL_2D" in blocked.blocked and blocked.cause == "network"
    for unary in ("relu6", "hardswish", "sigmoid", "hardsigmoid"):
        (fine,) = xnnpack.analyse(graph(inside=unary))
        assert fine.sparse, (unary, fine.reason())


def test_a_value_read_outside_the_cluster_blocks_it():
    (cluster,) = xnnpack.analyse(graph(leak=True))
    assert not cluster.sparse and "output of the model" in cluster.blocked and "L834" in cluster.blocked
    (no_exit,) = xnnpack.analyse(graph(end="reshape"))
    assert not no_exit.sparse and "reaches no exit" in no_exit.blocked and "L729" in no_exit.blocked


def test_every_value_of_a_cluster_node_must_be_fp32_or_fp16():
    m = graph()
    m.tensors[next(op for op in m.ops if op.code == OP.CONV_2D and m.tensors[op.outputs[0]].name == "pw").outputs[0]
              ].dtype = 9  # INT8, as a quantized model would have it
    (cluster,) = xnnpack.analyse(m)
    assert not cluster.sparse and "neither fp32 nor fp16" in cluster.blocked and "L369" in cluster.blocked


@pytest.mark.parametrize("end", ["mean3", "sum"])
def test_any_mean_or_sum_of_a_4d_value_is_an_exit(end):
    (cluster,) = xnnpack.analyse(graph(end=end))
    assert cluster.sparse and cluster.exits == ("mean" if end == "mean3" else "sum",)


def se_graph(gate: str = "sigmoid") -> TFLiteModel:
    """stem -> 1x1 -> squeeze-and-excite (MEAN keep_dims -> 1x1 -> relu -> 1x1 -> gate -> MUL) -> MEAN."""
    m = TFLiteModel()
    y = pointwise(m, stem(m, m.input("input", (1, 16, 16, 3))), 240)
    s = m.mean(y, [1, 2], keep_dims=True, name="se/squeeze")
    s = pointwise(m, s, 50, "se/reduce", cout=4)
    s = pointwise(m, m.activation(s, "relu", "se/relu"), 50, "se/expand", cout=15)
    y = m.mul(y, m.activation(s, gate, "se/gate"), name="se/scale")
    m.outputs = [m.mean(y, [1, 2], name="mean")]
    return m


@pytest.mark.parametrize("gate", ["sigmoid", "hardsigmoid"])
def test_a_squeeze_and_excite_block_runs_inside_the_cluster_and_its_convs_count(gate):
    """The squeeze MEAN has a compatible consumer: it loses its exit flag and stays inside (subgraph.c L712)."""
    (cluster,) = xnnpack.analyse(se_graph(gate))
    assert cluster.sparse and cluster.exits == ("mean",)
    assert cluster.gated == ("pw", "se/reduce", "se/expand") and cluster.params == 300 + 60 + 60


def test_depthwise_same_padding_runs_at_stride_one_and_blocks_at_stride_two():
    def dw(stride):
        m = TFLiteModel()
        x = stem(m, m.input("input", (1, 16, 16, 3)))
        out = (1, 8 // stride, 8 // stride, 20)
        x = m.depthwise_conv2d(x, m.constant("dw/w", np.ones((1, 3, 3, 20), np.float32)),
                               m.constant("dw/b", np.zeros(20, np.float32)), stride, "same", "relu", out, "dw")
        m.outputs = [m.mean(pointwise(m, x, 240), [1, 2], name="mean")]
        return xnnpack.analyse(m)[0]

    assert dw(1).sparse and "dw" in dw(1).nchw
    assert not dw(2).sparse and dw(2).cause == "form" and "L487" in dw(2).blocked


@pytest.mark.parametrize(("where", "shape", "runs"), [("first", (1, 1, 1, 15), True), ("second", (1, 1, 1, 15), False),
                                                      ("second", (1, 1, 1, 1), False), ("first", (), False)])
def test_a_constant_of_add_or_mul_runs_first_in_4d_only(where, shape, runs):
    """XNNPACK checks a static second input by the first input's dims (subgraph.c L618): only `k * x` runs."""
    m = TFLiteModel()
    y = pointwise(m, stem(m, m.input("input", (1, 16, 16, 3))), 240)
    k = m.constant("k", np.full(shape, 2.0, np.float32))
    y = m.mul(k, y, name="scale") if where == "first" else m.mul(y, k, name="scale")
    m.outputs = [m.mean(y, [1, 2], name="mean")]
    (cluster,) = xnnpack.analyse(m)
    assert cluster.sparse is runs
    if not runs:
        assert cluster.cause == "form" and "'scale'" in cluster.blocked and ("L618" in cluster.blocked) is bool(shape)


def test_two_entries_joined_by_an_add_make_one_cluster():
    m = TFLiteModel()
    x = m.input("input", (1, 16, 16, 3))
    y = m.add(stem(m, x, "stem_a"), stem(m, x, "stem_b"), name="join")
    m.outputs = [m.mean(pointwise(m, y, 240), [1, 2], name="mean")]
    (cluster,) = xnnpack.analyse(m)
    assert cluster.sparse and cluster.entries == ("stem_a", "stem_b")


@pytest.mark.parametrize("keep", [False, True])
def test_a_fully_connected_layer_joins_only_with_keep_num_dims(keep):
    """Without keep_num_dims the delegate puts a reshape before it (delegate.cc L4570): it stays out; with it, it
    joins the cluster and its 150 dense weights count (240 / 450 zeros: dense)."""
    m = TFLiteModel()
    y = m.mean(pointwise(m, stem(m, m.input("input", (1, 16, 16, 3))), 240), [1, 2], keep_dims=keep, name="mean")
    opts = {"FusedActivationFunction": ACTIVATION["none"], "KeepNumDims": keep}
    fc = m._op(OP.FULLY_CONNECTED, [y, m.constant("fc/w", np.ones((10, 15), np.float32)),
                                    m.constant("fc/b", np.zeros(10, np.float32))],
               (1, 1, 1, 10) if keep else (1, 10), _OPT.FullyConnectedOptions, (FullyConnectedOptions, opts), "fc")
    m.outputs = [fc]
    (cluster,) = xnnpack.analyse(m)
    assert ("fc" in cluster.gated) is keep and cluster.sparse is not keep
    assert cluster.params == (450 if keep else 300)


@pytest.mark.parametrize(("size", "runs"), [(8, True), (1, False)])
def test_a_bilinear_resize_runs_nchw_on_maps_larger_than_one(size, runs):
    m = TFLiteModel()
    y = pointwise(m, stem(m, m.input("input", (1, 2 * size, 2 * size, 3))), 240)
    y = m.resize(y, (2 * size, 2 * size), "bilinear", False, "up")
    m.outputs = [m.mean(y, [1, 2], name="mean")]
    assert xnnpack.analyse(m)[0].sparse is runs


def test_an_exit_less_run_of_compatible_nodes_passes_and_computes_wrong_results():
    """stem -> 1x1 -> MAX_POOL -> sigmoid -> MEAN: the MEAN's compatible producer starts the pass, and {stem, 1x1},
    whose last value only MAX_POOL reads, is never checked (subgraph.c L834): the 1x1 conv dangles. A RELU instead of
    the sigmoid fuses into the pool's clamp (subgraph.c L1507), no exit has a compatible producer: all dense."""
    (broken,) = xnnpack.analyse(pool_then("sigmoid"))
    assert broken.broken and not broken.sparse and broken.dangling == ("pw",) and "BROKEN" in broken.reason()
    (dense,) = xnnpack.analyse(pool_then("relu"))
    assert not dense.broken and not dense.sparse and "MAX_POOL_2D" in dense.blocked


def two_paths(join: bool) -> TFLiteModel:
    """stem -> 1x1 on one input; a second input upsampled by a nearest resize (the built-in kernels run it: the graph
    is cut into partitions) -> stem2 -> 1x1; joined by an ADD before a MEAN, or each ending in its own MEAN."""
    m = TFLiteModel()
    a = pointwise(m, stem(m, m.input("input", (1, 16, 16, 3))), 240, stored="sparse" if join else "dense")
    up = m.resize(m.input("small", (1, 8, 8, 3)), (16, 16), "nearest", False, "up")
    b = pointwise(m, stem(m, up, "stem2"), 240, "pw2")
    m.outputs = [m.mean(m.add(b, a, name="join"), [1, 2], name="mean")] if join else \
        [m.mean(a, [1, 2], name="mean_a"), m.mean(b, [1, 2], name="mean_b")]
    return m


def test_an_op_the_delegate_does_not_take_cuts_the_graph_into_partitions():
    """Partitions are cut as TFLite cuts them (graph_info.cc): a value from another partition is an external input
    (subgraph.c L756), a cluster needs an exit in its own partition, and the hint is the partition's own: the
    DENSIFY after the cut does not turn it on before it."""
    first, second = xnnpack.analyse(two_paths(join=True))
    assert first.entries == ("stem",) and "reaches no exit" in first.blocked
    assert second.entries == ("stem2",) and "'join' reads 'pw', an input of its delegated partition" in second.blocked
    before, after = xnnpack.analyse(two_paths(join=False))
    assert before.passes and not before.hint and not before.sparse and "no DENSIFY" in before.reason()
    assert after.hint and after.sparse


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
