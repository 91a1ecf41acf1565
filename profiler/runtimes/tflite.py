"""What LiteRT (TFLite) runtimes share: the network builder over profiler.tflite_writer (NHWC), the lowering of a
KernelSpec to TFLite ops, the empty-harness baseline and the reading of .tflite files.

The same lowering builds the one-kernel models the profiler measures and the whole pruned networks the pruner
exports, so the predictor learns the latency of what is deployed. Two settings of a runtime shape it: whether a
sparse weight of a 1x1 conv or fully connected layer feeds FULLY_CONNECTED directly (`sparse_fc`; otherwise sparse
weights are stored sparse behind a DENSIFY op) and whether stride-1 convs with k > 1 use TFLite's SAME padding
(`same_padding`; otherwise an explicit PAD then VALID, the subgraph XNNPACK needs to run a cluster in NCHW).
Activations TFLite fuses (relu, relu6) are fused into the op; the others follow it as ops of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from profiler.errors import UserError
from profiler.kernel import FUSED_ACTIVATIONS, KernelSpec
from profiler.runtimes.base import Network, Runtime
from profiler.tflite_reader import layer_specs, read_model
from profiler.tflite_writer import TFLiteModel


def runs_as_sparse_fc(spec: KernelSpec) -> bool:
    """Whether a runtime with `sparse_fc` runs this kernel as a FULLY_CONNECTED on sparse weights."""
    return spec.is_sparse and (spec.op == "fc" or (spec.op == "conv" and spec.k == 1 and spec.stride == 1))


class TFLiteRuntime(Runtime):
    """A LiteRT runtime: .tflite files, NHWC, lowered as the class settings say."""

    sparse_fc: ClassVar[bool] = False
    same_padding: ClassVar[bool] = False
    dense_storage_runs_dense: ClassVar[bool] = False
    """Whether a weight stored dense runs at density 1.0 whatever its zeros (else its zeros count)."""
    metadata: ClassVar[Mapping[str, bytes]] = {}
    """Model metadata entries every file of the runtime carries (name -> bytes)."""

    def network(self) -> TFLiteNetwork:
        return TFLiteNetwork(self)

    def baseline_model(self, spec: KernelSpec) -> tuple[str, bytes]:
        """The empty harness (input -> RESHAPE -> output): the runtime's per-invoke cost."""
        m = TFLiteModel(metadata=dict(self.metadata))
        m.outputs = [m.reshape(m.input("x", (1, 4)), (4, 1), "y")]
        return "empty_tflite", m.to_bytes()

    def lower(self, m: TFLiteModel, x: int, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray, name: str) -> int:
        """Append `spec` to a TFLite model, reading NHWC tensor `x` ([N, cin] for "fc"); return the output.

        `weight` is in PyTorch's layout (cout, cin / groups, k, k), or (cout, cin) for "fc".
        """
        if spec.activation in FUSED_ACTIVATIONS:
            return self._lower_op(m, x, spec, weight, bias, name)
        y = self._lower_op(m, x, spec.replace(activation="none"), weight, bias, name)
        return m.activation(y, spec.activation, f"{name}/{spec.activation}")

    def _weight(self, m: TFLiteModel, name: str, weight: np.ndarray, sparse: bool, fc_block4: bool = False) -> int:
        """A weight tensor: dense, sparse fed straight to FULLY_CONNECTED (`sparse_fc`), or sparse + DENSIFY."""
        if not sparse:
            return m.constant(name, weight)
        tensor = m.sparse_constant(name, weight, block4=fc_block4)
        return tensor if self.sparse_fc and weight.ndim == 2 else m.densify(tensor, f"{name}/dense")

    def _lower_op(self, m: TFLiteModel, x: int, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray,
                  name: str) -> int:
        """The conv or fully connected op(s) of `spec`, its activation fused (relu, relu6 or none)."""
        b = m.constant(f"{name}/bias", np.asarray(bias, np.float32))
        oh, ow = spec.out_hw
        if spec.op == "fc" or (self.sparse_fc and runs_as_sparse_fc(spec)):
            w2 = weight.reshape(spec.cout, spec.cin)
            block4 = self.sparse_fc and spec.is_sparse and spec.block == "4x1" and spec.cin % 4 == 0
            w = self._weight(m, f"{name}/weight", w2, spec.is_sparse, fc_block4=block4)
            if spec.op == "fc":
                return m.fully_connected(x, w, b, spec.activation, (m.shape(x)[0], spec.cout), name)
            rows = m.reshape(x, (spec.h * spec.w, spec.cin), f"{name}/flatten")
            y = m.fully_connected(rows, w, b, spec.activation, (spec.h * spec.w, spec.cout), f"{name}/fc")
            return m.reshape(y, (1, oh, ow, spec.cout), name)
        if spec.k == 1:
            padding = "valid"
        elif spec.stride == 1 and self.same_padding:
            padding = "same"
        else:
            p = spec.k // 2
            x = m.pad(x, [(0, 0), (p, p), (p, p), (0, 0)], f"{name}/pad")
            padding = "valid"
        out_shape = (m.shape(x)[0], oh, ow, spec.cout)
        if spec.op == "dwconv":
            w = m.constant(f"{name}/weight", weight.transpose(1, 2, 3, 0))  # (1, k, k, C)
            return m.depthwise_conv2d(x, w, b, spec.stride, padding, spec.activation, out_shape, name)
        w = self._weight(m, f"{name}/weight", weight.transpose(0, 2, 3, 1), spec.is_sparse)  # OHWI, I = cin / groups
        return m.conv2d(x, w, b, spec.stride, padding, spec.activation, out_shape, name)

    def read_layers(self, data: bytes, source: str = "model") -> dict[str, KernelSpec]:
        """The conv-like layers of a .tflite file as this runtime runs them (profiler.tflite_reader)."""
        try:
            m = read_model(data, source)
        except UserError:
            raise
        except Exception as err:  # a truncated or foreign flatbuffer fails in many ways (struct, index, attributes)
            raise UserError(f"{source}: not a readable TFLite model ({type(err).__name__}: {err})") from None
        try:
            specs = layer_specs(m, self.block, self.dense_storage_runs_dense)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
        if not specs:
            raise UserError(f"{source}: no conv, depthwise conv or fully connected layer to price")
        return self.as_run(specs, self.analyse_model(m))

    def analyse_model(self, m: TFLiteModel) -> tuple:
        """`analyse` of a TFLiteModel (a written network's, or one read back from a file)."""
        return ()

    def analyse(self, net: Network) -> tuple:
        return self.analyse_model(net.m)


class TFLiteNetwork(Network):
    """A network written as TFLite (NHWC) for a TFLiteRuntime; NCHW shapes given are transposed."""

    def __init__(self, runtime: TFLiteRuntime):
        self.runtime, self.m = runtime, TFLiteModel(metadata=dict(runtime.metadata))

    def input(self, shape: tuple[int, ...]) -> int:
        if len(shape) == 2:
            return self.m.input("input", shape)
        n, c, h, w = shape
        return self.m.input("input", (n, h, w, c))

    def kernel(self, x, spec, weight, bias, name):
        return self.runtime.lower(self.m, x, spec, weight, bias, name)

    def add(self, a, b, activation, name):
        if activation in FUSED_ACTIVATIONS:
            return self.m.add(a, b, activation, name)
        return self.m.activation(self.m.add(a, b, "none", name), activation, f"{name}/{activation}")

    def mul(self, a, b, name):
        a, b = sorted((a, b), key=lambda t: -int(np.prod(self.m.shape(t))))
        return self.m.mul(a, b, name=name)

    def concat(self, xs, name):
        return self.m.concatenation(xs, 3, name)

    def resize(self, x, size, mode, align_corners, name):
        return self.m.resize(x, size, mode, align_corners, name)

    def avg_pool(self, x, k, stride, pad, name):
        if pad:
            x = self.m.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], f"{name}/pad")
        n, h, w, c = self.m.shape(x)
        return self.m.average_pool2d(x, k, stride, (n, (h - k) // stride + 1, (w - k) // stride + 1, c), name)

    def max_pool(self, x, k, stride, pad, name):
        if pad:
            x = self.m.padv2(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], -3.4e38, f"{name}/pad")
        n, h, w, c = self.m.shape(x)
        return self.m.max_pool2d(x, k, stride, (n, (h - k) // stride + 1, (w - k) // stride + 1, c), name)

    def activation(self, x, activation, name):
        return self.m.activation(x, activation, name)

    def pool(self, x, name):
        return self.m.mean(x, [1, 2], keep_dims=True, name=name)

    def flatten(self, x, name):
        n, h, w, c = self.m.shape(x)
        if (h, w) != (1, 1):
            raise UserError(f"{name}: flatten of a {h}x{w} feature map (NHWC order differs); pool first")
        return self.m.reshape(x, (n, c), name)

    def unflatten(self, x, name):
        n, c = self.m.shape(x)
        return self.m.reshape(x, (n, 1, 1, c), name)

    def finish(self, outputs):
        self.m.outputs = list(outputs)
        return self.m.to_bytes()
