"""Read an ONNX model back as the KernelSpecs of its layers: Conv and Gemm nodes, each with the activation after it.

The counterpart of `profiler.tflite_reader` for onnxruntime devices. Shapes come from ONNX shape inference; a
layer's density is its weight initializer's nonzero share (onnxruntime runs it dense, holding the zeros, as the
profiler measured it). Every other node is part of a network's per-network overhead.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from profiler.errors import UserError
from profiler.kernel import ACTIVATIONS, KernelSpec

_ACTIVATIONS = {"Relu": "relu", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid"}
"""One-node activations after a layer, as OnnxModel.activation writes them (relu6 is a Clip, silu x * Sigmoid(x))."""


def read_onnx(data: bytes, block: str, source: str = "model") -> dict[str, KernelSpec]:
    """The layers of an ONNX model (a file's bytes) by node name, in graph order; errors name `source`."""
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
    except Exception as err:  # protobuf and onnx raise many types on foreign bytes
        raise UserError(f"{source}: not a readable ONNX model ({type(err).__name__}: {err})") from None
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in (*graph.input, *graph.value_info, *graph.output)}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def activation(node) -> str:
        out = node.output[0]
        after = sorted(readers.get(out, []), key=lambda n: n.op_type != "Sigmoid")
        if out in outputs or not after:
            return "none"
        if len(after) == 1:
            act = _ACTIVATIONS.get(after[0].op_type)
            if after[0].op_type == "Clip" and [float(weights.get(i, np.nan)) for i in after[0].input[1:]] == [0, 6]:
                act = "relu6"
        else:
            silu = [n.op_type for n in after] == ["Sigmoid", "Mul"] and \
                sorted(after[1].input) == sorted((out, after[0].output[0]))
            act = "silu" if silu else None
        return act if act in ACTIVATIONS else "none"

    specs = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = weights.get(node.input[1])
        name = node.name or node.output[0]
        try:
            if weight is None:
                raise UserError("its weight is not a constant initializer")
            density = round(np.count_nonzero(weight) / weight.size, 6)
            if node.op_type == "Gemm":
                cout, cin = weight.shape if attrs.get("transB", 0) else weight.shape[::-1]
                specs[name] = KernelSpec("fc", 1, 1, cin, cout, density=density, block=block,
                                         activation=activation(node))
                continue
            _, cin, h, w = shapes[node.input[0]]
            cout, _, kh, kw = weight.shape
            strides, groups = attrs.get("strides", [1, 1]), attrs.get("group", 1)
            if kh != kw or strides[0] != strides[1]:
                raise UserError(f"{kh}x{kw} kernel, strides {strides}: KernelSpec layers are square")
            op = "dwconv" if groups > 1 and groups == cin == cout else "conv"
            specs[name] = KernelSpec(op, h, w, cin, cout, kh, strides[0], groups, 1.0 if op == "dwconv" else density,
                                     block, activation(node))
        except (UserError, KeyError, ValueError) as err:
            raise UserError(f"{source}: layer '{name}': {err}") from None
    if not specs:
        raise UserError(f"{source}: no Conv or Gemm layer to price")
    return specs
