"""An ONNX writer for the same kernels as the TFLite writer (NCHW, dense weights holding the zeros)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class OnnxModel:
    """An ONNX graph under construction; methods add nodes and return the output's name."""

    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.shapes[name] = tuple(shape)
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind == "i" else np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], out_shape: tuple[int, ...], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.shapes[name] = tuple(out_shape)
        return name

    def activation(self, x: str, activation: str, name: str) -> str:
        """`activation` applied to `x` as PyTorch computes it (hardsigmoid is relu6(x + 3) / 6, silu x * sigmoid(x))."""
        shape = self.shapes[x]
        if activation == "relu":
            return self.node("Relu", [x], shape, f"{name}/relu")
        if activation == "relu6":
            lo, hi = self.constant(f"{name}/lo", np.float32(0)), self.constant(f"{name}/hi", np.float32(6))
            return self.node("Clip", [x, lo, hi], shape, f"{name}/relu6")
        if activation == "hardswish":
            return self.node("HardSwish", [x], shape, f"{name}/hardswish")
        if activation == "hardsigmoid":
            return self.node("HardSigmoid", [x], shape, f"{name}/hardsigmoid", alpha=1 / 6, beta=0.5)
        if activation == "sigmoid":
            return self.node("Sigmoid", [x], shape, f"{name}/sigmoid")
        if activation == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x], shape, f"{name}/sigmoid")], shape, f"{name}/silu")
        return x

    def to_bytes(self) -> bytes:
        outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shapes[o])) for o in self.outputs]
        graph = helper.make_graph(self.nodes, "jcw", self.inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jcw")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model.SerializeToString()
