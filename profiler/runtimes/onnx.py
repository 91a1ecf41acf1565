"""onnxruntime: a dense runtime. It densifies sparse initializers at load, so a weight's zeros never change its
latency; channel pruning is what it rewards. Models are NCHW, written with profiler.onnx_writer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.kernel import KernelSpec
from profiler.runtimes.base import Network, Runtime


class OnnxRuntime(Runtime):
    name = "onnx"
    description = "onnxruntime (dense: sparse initializers are densified at load)"
    suffix = ".onnx"
    package = "onnxruntime"

    def network(self) -> OnnxNetwork:
        return OnnxNetwork()

    def baseline_model(self, spec: KernelSpec) -> tuple[str, bytes]:
        """The empty harness (input -> Identity -> output): the runtime's per-invoke cost."""
        m = OnnxNetwork().m
        m.outputs = [m.node("Identity", [m.input("x", (1, 4))], (1, 4), "y")]
        return "empty_onnx", m.to_bytes()

    def read_layers(self, data: bytes, source: str = "model") -> dict[str, KernelSpec]:
        from profiler.onnx_reader import read_onnx  # onnx costs a quarter second to import

        return read_onnx(data, self.block, source)

    def run_density(self, df: pd.DataFrame) -> np.ndarray:
        """Every kernel runs dense: the zeros are held in dense weights."""
        return np.ones(len(df), dtype=np.float64)


class OnnxNetwork(Network):
    """A network written as ONNX (NCHW, like PyTorch)."""

    def __init__(self):
        from profiler.onnx_writer import OnnxModel  # onnx costs a quarter second to import; TFLite runs never need it

        self.m = OnnxModel()

    def input(self, shape):
        return self.m.input("input", shape)

    def kernel(self, x, spec, weight, bias, name):
        w = self.m.constant(f"{name}/weight", weight)
        b = self.m.constant(f"{name}/bias", bias)
        if spec.op == "fc":
            y = self.m.node("Gemm", [x, w, b], (self.m.shapes[x][0], spec.cout), name, transB=1)
        else:
            p, (oh, ow) = spec.k // 2, spec.out_hw
            y = self.m.node("Conv", [x, w, b], (self.m.shapes[x][0], spec.cout, oh, ow), name,
                            kernel_shape=[spec.k, spec.k], strides=[spec.stride] * 2, pads=[p] * 4, group=spec.groups)
        return self.m.activation(y, spec.activation, name)

    def add(self, a, b, activation, name):
        return self.m.activation(self.m.node("Add", [a, b], self.m.shapes[a], name), activation, name)

    def mul(self, a, b, name):
        a, b = sorted((a, b), key=lambda t: -int(np.prod(self.m.shapes[t])))
        return self.m.node("Mul", [a, b], self.m.shapes[a], name)

    def concat(self, xs, name):
        n, _, h, w = self.m.shapes[xs[0]]
        return self.m.node("Concat", xs, (n, sum(self.m.shapes[x][1] for x in xs), h, w), name, axis=1)

    def resize(self, x, size, mode, align_corners, name):
        n, c = self.m.shapes[x][:2]
        sizes = self.m.constant(f"{name}/sizes", np.array([n, c, *size], np.int64))
        if mode == "nearest":
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            attrs = {"mode": "linear",
                     "coordinate_transformation_mode": "align_corners" if align_corners else "pytorch_half_pixel"}
        return self.m.node("Resize", [x, "", "", sizes], (n, c, *size), name, **attrs)

    def _pooled(self, x, k, stride, pad):
        n, c, h, w = self.m.shapes[x]
        return (n, c, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)

    def avg_pool(self, x, k, stride, pad, name):
        return self.m.node("AveragePool", [x], self._pooled(x, k, stride, pad), name, kernel_shape=[k, k],
                           strides=[stride] * 2, pads=[pad] * 4, count_include_pad=1)

    def max_pool(self, x, k, stride, pad, name):
        return self.m.node("MaxPool", [x], self._pooled(x, k, stride, pad), name, kernel_shape=[k, k],
                           strides=[stride] * 2, pads=[pad] * 4)

    def activation(self, x, activation, name):
        return self.m.activation(x, activation, name)

    def pool(self, x, name):
        n, c = self.m.shapes[x][:2]
        return self.m.node("GlobalAveragePool", [x], (n, c, 1, 1), name)

    def flatten(self, x, name):
        n, c = self.m.shapes[x][:2]
        return self.m.node("Flatten", [x], (n, c), name, axis=1)

    def unflatten(self, x, name):
        n, c = self.m.shapes[x]
        return self.m.node("Reshape", [x, self.m.constant(f"{name}/shape", np.array([n, c, 1, 1]))], (n, c, 1, 1),
                           name)

    def finish(self, outputs):
        self.m.outputs = list(outputs)
        return self.m.to_bytes()
