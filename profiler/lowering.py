"""Lowering: one function per runtime flavour turns a KernelSpec and its weights into runtime ops.

The same functions build the one-kernel models the profiler measures and the whole pruned
networks the pruner exports, so the predictor learns the latency of what is deployed.

Flavours:
  "xnnpack": LiteRT with the XNNPACK delegate. Sparse weights are stored sparse behind a DENSIFY op;
             convs with k > 1 use explicit PAD + VALID, 1x1 convs VALID: the subgraph shape XNNPACK
             needs to run 1x1 convs sparse on ARM (on x86 with AVX it runs them dense).
  "builtin": LiteRT's built-in kernels (XNNPACK off). A sparse stride-1 1x1 conv becomes
             RESHAPE -> FULLY_CONNECTED on sparse weights -> RESHAPE (1x4 blocks along cin when the
             block is "4x1", CSR otherwise); other sparse convs are densified at load.
  "onnx":    onnxruntime, NCHW, dense weights holding the zeros.

Activations TFLite fuses (relu, relu6) are fused into the op; the others (hardswish, hardsigmoid, silu, sigmoid)
follow it as ops of their own (TFLiteModel.activation, OnnxModel.activation), and the kernel's output is theirs.
Grouped convs are CONV_2D / Conv with a filter reading cin / groups channels; they are never sparse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from profiler.kernel import FUSED_ACTIVATIONS, KernelSpec
from profiler.tflite_writer import TFLiteModel

if TYPE_CHECKING:  # onnx costs a quarter second to import; TFLite-only runs never need it
    from profiler.onnx_writer import OnnxModel

FLAVOURS = ("xnnpack", "builtin", "onnx")
TFLITE_FLAVOURS = ("xnnpack", "builtin")


def runs_as_sparse_fc(spec: KernelSpec) -> bool:
    """True if the built-in flavour runs this kernel as a sparse FULLY_CONNECTED."""
    return spec.is_sparse and (spec.op == "fc" or (spec.op == "conv" and spec.k == 1 and spec.stride == 1))


def _weight(m: TFLiteModel, name: str, weight: np.ndarray, sparse: bool, flavour: str, fc_block4=False) -> int:
    """A weight tensor: dense, sparse fed straight to FULLY_CONNECTED (built-in), or sparse + DENSIFY."""
    if not sparse:
        return m.constant(name, weight)
    tensor = m.sparse_constant(name, weight, block4=fc_block4)
    feeds_fc_directly = flavour == "builtin" and weight.ndim == 2
    return tensor if feeds_fc_directly else m.densify(tensor, f"{name}/dense")


def lower_tflite(
    m: TFLiteModel, x: int, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray, flavour: str, name: str
) -> int:
    """Append `spec` to a TFLite model, reading NHWC tensor `x` ([N, cin] for "fc"); return the output.

    `weight` is in PyTorch's layout (cout, cin / groups, k, k), or (cout, cin) for "fc".
    """
    if flavour not in TFLITE_FLAVOURS:
        raise ValueError(f"unknown TFLite flavour {flavour!r}; expected one of {', '.join(TFLITE_FLAVOURS)}")
    if spec.activation in FUSED_ACTIVATIONS:
        return _lower_tflite_op(m, x, spec, weight, bias, flavour, name)
    y = _lower_tflite_op(m, x, spec.replace(activation="none"), weight, bias, flavour, name)
    return m.activation(y, spec.activation, f"{name}/{spec.activation}")


def _lower_tflite_op(
    m: TFLiteModel, x: int, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray, flavour: str, name: str
) -> int:
    """The conv or fully connected op(s) of `spec`, its activation fused (relu, relu6 or none)."""
    sparse = spec.is_sparse
    b = m.constant(f"{name}/bias", np.asarray(bias, np.float32))
    oh, ow = spec.out_hw
    if spec.op == "fc" or (flavour == "builtin" and runs_as_sparse_fc(spec)):
        w2 = weight.reshape(spec.cout, spec.cin)
        block4 = flavour == "builtin" and sparse and spec.block == "4x1" and spec.cin % 4 == 0
        w = _weight(m, f"{name}/weight", w2, sparse, flavour, fc_block4=block4)
        if spec.op == "fc":
            n = m.shape(x)[0]
            return m.fully_connected(x, w, b, spec.activation, (n, spec.cout), name)
        rows = m.reshape(x, (spec.h * spec.w, spec.cin), f"{name}/flatten")
        y = m.fully_connected(rows, w, b, spec.activation, (spec.h * spec.w, spec.cout), f"{name}/fc")
        return m.reshape(y, (1, oh, ow, spec.cout), name)

    if spec.k == 1:
        padding = "valid"
    elif spec.stride == 1 and flavour == "builtin":
        padding = "same"
    else:
        p = spec.k // 2
        x = m.pad(x, [(0, 0), (p, p), (p, p), (0, 0)], f"{name}/pad")
        padding = "valid"
    out_shape = (m.shape(x)[0], oh, ow, spec.cout)
    if spec.op == "dwconv":
        w = m.constant(f"{name}/weight", weight.transpose(1, 2, 3, 0))  # (1, k, k, C)
        return m.depthwise_conv2d(x, w, b, spec.stride, padding, spec.activation, out_shape, name)
    w = _weight(m, f"{name}/weight", weight.transpose(0, 2, 3, 1), sparse, flavour)  # OHWI, I = cin / groups
    return m.conv2d(x, w, b, spec.stride, padding, spec.activation, out_shape, name)


def lower_onnx(m: OnnxModel, x: str, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
    """Append `spec` to an ONNX model reading NCHW tensor `x` ([N, cin] for "fc"); return the output."""
    w = m.constant(f"{name}/weight", weight)
    b = m.constant(f"{name}/bias", bias)
    if spec.op == "fc":
        y = m.node("Gemm", [x, w, b], (m.shapes[x][0], spec.cout), name, transB=1)
    else:
        p, (oh, ow) = spec.k // 2, spec.out_hw
        y = m.node(
            "Conv", [x, w, b], (m.shapes[x][0], spec.cout, oh, ow), name,
            kernel_shape=[spec.k, spec.k], strides=[spec.stride] * 2, pads=[p] * 4, group=spec.groups,
        )
    return m.activation(y, spec.activation, name)
