"""Read a TFLite file back: the `TFLiteModel` it holds, and the KernelSpecs of its layers as stored.

`read_model` rebuilds the profiler's own in-memory model (tensors, buffers, ops with their options) from the
flatbuffer with the `tflite` package's generated schema, so `profiler.xnnpack.analyse` judges a file exactly as it
judges a model being exported. `layer_specs` maps its conv-like ops to KernelSpecs: CONV_2D (with a zero PAD before
it fused, as the exporter writes k > 1 convs), DEPTHWISE_CONV_2D, FULLY_CONNECTED and the built-in kernels'
RESHAPE -> FULLY_CONNECTED -> RESHAPE form of a sparse 1x1 conv. Every other op (adds, pooling, reshapes) is part of
a network's per-network overhead, as in the predictor's network model. A TFLite runtime reads files with these
(profiler.runtimes.tflite.TFLiteRuntime.read_layers).
"""

from __future__ import annotations

import importlib
import inspect

import flatbuffers
import numpy as np
import tflite

from profiler.errors import UserError
from profiler.kernel import ACTIVATIONS, KernelSpec
from profiler.tflite_writer import ACTIVATION, OP, Sparsity, TFLiteModel, _Op, _Tensor

_OPTIONS = {v: k for k, v in vars(tflite.BuiltinOptions).items() if isinstance(v, int) and not k.startswith("_")}
_INDEX_VECTORS = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
                  tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
                  tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}
_FUSED = {v: k for k, v in ACTIVATION.items()}
_NUMPY = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
          tflite.TensorType.INT8: np.int8, tflite.TensorType.UINT8: np.uint8}
"""Numpy types of the weight tensors a layer may hold (float, or integer when quantized)."""
_STANDALONE = {OP.RELU: "relu", OP.RELU6: "relu6", OP.HARD_SWISH: "hardswish", OP.LOGISTIC: "sigmoid"}
"""One-op activations after a layer, as TFLiteModel.activation writes them (silu and hardsigmoid take two ops)."""


def read_model(data: bytes, source: str = "model") -> TFLiteModel:
    """The single-subgraph TFLite model serialised in `data`, as the `TFLiteModel` that writes it."""
    if not tflite.Model.ModelBufferHasIdentifier(data, 0):
        raise UserError(f"{source}: not a TFLite file (no TFL3 identifier)")
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise UserError(f"{source}: {model.SubgraphsLength()} subgraphs; only single-subgraph models are read")
    graph = model.Subgraphs(0)
    codes = [(_builtin_code(c), c.Version()) for c in map(model.OperatorCodes, range(model.OperatorCodesLength()))]
    buffers = [b"" if b.DataIsNone() else b.DataAsNumpy().tobytes()
               for b in map(model.Buffers, range(model.BuffersLength()))]
    tensors = [_tensor(graph.Tensors(i)) for i in range(graph.TensorsLength())]
    ops = [_op(graph.Operators(i), codes) for i in range(graph.OperatorsLength())]
    return TFLiteModel(tensors, buffers, ops, graph.InputsAsNumpy().tolist(), graph.OutputsAsNumpy().tolist())


def _builtin_code(code) -> int:
    """An OperatorCode's op: its builtin_code field read as stored, or the deprecated field in older files. (The
    `tflite` package's accessor returns the deprecated field for codes below 127, which ai-edge-quantizer leaves 0
    for the QUANTIZE and DEQUANTIZE it adds.)"""
    offset = code._tab.Offset(10)  # builtin_code, the table's fourth field
    stored = code._tab.Get(flatbuffers.number_types.Int32Flags, offset + code._tab.Pos) if offset else 0
    return max(stored, code.DeprecatedBuiltinCode())


def _tensor(t) -> _Tensor:
    shape = () if t.ShapeIsNone() else tuple(int(s) for s in t.ShapeAsNumpy())
    return _Tensor(t.Name().decode(), shape, t.Type(), t.Buffer(), _sparsity(t.Sparsity()))


def _sparsity(sp) -> Sparsity | None:
    if sp is None:
        return None
    dims = []
    for d in map(sp.DimMetadata, range(sp.DimMetadataLength())):
        if d.Format() == tflite.DimensionType.DENSE:
            dims.append(("dense", d.DenseSize()))
        else:
            dims.append(("csr", _index_vector(d.ArraySegmentsType(), d.ArraySegments()),
                         _index_vector(d.ArrayIndicesType(), d.ArrayIndices())))
    block_map = [] if sp.BlockMapIsNone() else sp.BlockMapAsNumpy().tolist()
    return Sparsity(sp.TraversalOrderAsNumpy().tolist(), block_map, dims)


def _index_vector(kind: int, table) -> np.ndarray:
    vector = _INDEX_VECTORS[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy()


def _op(op, codes: list[tuple[int, int]]) -> _Op:
    kind = op.BuiltinOptionsType()
    options = (None, {})
    if kind:  # every scalar field of the op's options table, keyed as the writer's Add{Field} functions are
        name = _OPTIONS[kind]
        module, cls = importlib.import_module(f"tflite.{name}"), getattr(tflite, name)
        table, fields = op.BuiltinOptions(), cls()
        fields.Init(table.Bytes, table.Pos)
        scalar = [f[3:] for f in dir(module) if f.startswith("Add") and hasattr(cls, f[3:])
                  and len(inspect.signature(getattr(cls, f[3:])).parameters) == 1]
        options = (module, {f: getattr(fields, f)() for f in scalar})
    code, version = codes[op.OpcodeIndex()]
    return _Op(code, op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist(), kind, options, version)


def layer_specs(m: TFLiteModel, block: str, dense_storage_runs_dense: bool = False) -> dict[str, KernelSpec]:
    """The KernelSpec of every conv-like layer by name (its output tensor's), in graph order, at its stored density.

    Density is the stored weights' nonzero share (behind a DENSIFY when stored sparse); with
    `dense_storage_runs_dense` a weight stored dense counts as dense (1.0) whatever its zeros, as runtimes that
    densify nothing but sparse storage run it. The file does not say which block its weights were pruned in: the
    specs carry `block`, the device's. Which layers run sparse is the runtime's to say (Runtime.as_run).
    """
    graph = _Graph(m)
    specs = {}
    for op in m.ops:
        if op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED):
            try:
                name, spec = _layer(graph, op, block, dense_storage_runs_dense)
            except UserError as err:
                raise UserError(f"layer '{m.tensors[op.outputs[0]].name}': {err}") from None
            specs[name] = spec
    return specs


class _Graph:
    """A TFLiteModel with each tensor's producing op and reading ops."""

    def __init__(self, m: TFLiteModel):
        self.m = m
        self.producer = {t: op for op in m.ops for t in op.outputs}
        self.readers: dict[int, list[_Op]] = {}
        for op in m.ops:
            for t in op.inputs:
                self.readers.setdefault(t, []).append(op)

    def made_by(self, tensor: int, code: int) -> _Op | None:
        """The op that produces `tensor` if it is a `code` op."""
        op = self.producer.get(tensor)
        return op if op is not None and op.code == code else None

    def only_reader(self, tensor: int) -> _Op | None:
        """The one op reading `tensor`, if no other op reads it and it is no graph output."""
        ops = self.readers.get(tensor, [])
        return ops[0] if len(ops) == 1 and tensor not in self.m.outputs else None


def _layer(g: _Graph, op: _Op, block: str, dense_storage_runs_dense: bool) -> tuple[str, KernelSpec]:
    """A CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED op as a named KernelSpec (its layer's output names it)."""
    m, x, out, weight = g.m, op.inputs[0], op.outputs[0], g.m.tensors[op.inputs[1]].shape
    density = _density(g, op, dense_storage_runs_dense)
    if op.code == OP.FULLY_CONNECTED:
        flatten, back = g.made_by(x, OP.RESHAPE), g.only_reader(out)
        if flatten and len(m.shape(flatten.inputs[0])) == 4 and back and back.code == OP.RESHAPE and \
                len(m.shape(back.outputs[0])) == 4:  # the built-in kernels' sparse 1x1 conv: RESHAPE-FC-RESHAPE
            _, h, w, cin = m.shape(flatten.inputs[0])
            out = back.outputs[0]
            return m.tensors[out].name, KernelSpec("conv", h, w, cin, weight[0], density=density, block=block,
                                                   activation=_activation(g, op, out))
        return m.tensors[out].name, KernelSpec("fc", 1, 1, weight[1], weight[0], density=density, block=block,
                                               activation=_activation(g, op, out))
    act = _activation(g, op, out)
    if (pad := g.made_by(x, OP.PAD)) and g.only_reader(x) is op:  # explicit padding, as XNNPACK fuses it
        x = pad.inputs[0]
    _, h, w, cin = m.shape(x)
    fields = op.options[1]
    stride = fields["StrideH"]
    if weight[1] != weight[2] or stride != fields["StrideW"]:
        raise UserError(f"{weight[1]}x{weight[2]} kernel, strides {stride}, {fields['StrideW']}: KernelSpec layers "
                        "are square")
    if op.code == OP.CONV_2D:  # weights OHWI: groups from the input channels each filter reads
        return m.tensors[out].name, KernelSpec("conv", h, w, cin, weight[0], weight[1], stride, cin // weight[3],
                                               density, block, act)
    if fields["DepthMultiplier"] != 1:
        raise UserError(f"depth multiplier {fields['DepthMultiplier']} (only 1 is read)")
    return m.tensors[out].name, KernelSpec("dwconv", h, w, cin, cin, weight[1], stride, cin, block=block,
                                           activation=act)


def _activation(g: _Graph, op: _Op, out: int) -> str:
    """The op's fused activation, or else the activation applied to its layer's output `out` on its own."""
    code = op.options[1].get("FusedActivationFunction", ACTIVATION["none"])
    if code not in _FUSED:
        raise UserError(f"fused activation {code} is none KernelSpec knows")
    if _FUSED[code] != "none" or out in g.m.outputs:
        return _FUSED[code]
    readers = g.readers.get(out, [])
    if len(readers) == 1 and readers[0].code in _STANDALONE:
        act = _STANDALONE[readers[0].code]
    elif len(readers) == 1 and _is_hardsigmoid(g, readers[0]):
        act = "hardsigmoid"
    elif sorted(r.code for r in readers) == sorted((OP.LOGISTIC, OP.MUL)):  # silu: x * LOGISTIC(x)
        sigmoid, mul = sorted(readers, key=lambda r: r.code != OP.LOGISTIC)
        act = "silu" if sorted(mul.inputs) == sorted((out, sigmoid.outputs[0])) else "none"
    else:
        act = "none"
    return act if act in ACTIVATIONS else "none"


def _is_hardsigmoid(g: _Graph, add: _Op) -> bool:
    """Whether `add` starts (1 / 6) * relu6(3 + x), PyTorch's hardsigmoid as TFLiteModel.activation writes it (the
    constants on either side: older files put them second)."""
    mul = g.only_reader(add.outputs[0])
    return (add.code == OP.ADD and add.options[1].get("FusedActivationFunction") == ACTIVATION["relu6"]
            and 3.0 in (_constant(g.m, t) for t in add.inputs) and mul is not None and mul.code == OP.MUL
            and np.float32(1 / 6) in (_constant(g.m, t) for t in mul.inputs))


def _constant(m: TFLiteModel, tensor: int) -> float | None:
    """A scalar float constant's value (None for anything else)."""
    t = m.tensors[tensor]
    values = np.frombuffer(m.buffers[t.buffer], dtype=np.float32) if t.buffer else ()
    return float(values[0]) if len(values) == 1 else None


def _density(g: _Graph, op: _Op, dense_storage_runs_dense: bool) -> float:
    """The nonzero share of the op's weight as stored (behind a DENSIFY if sparse); 1.0 for a weight stored dense
    when `dense_storage_runs_dense`."""
    tensor = op.inputs[1]
    if densify := g.made_by(tensor, OP.DENSIFY):
        tensor = densify.inputs[0]
    t = g.m.tensors[tensor]
    if dense_storage_runs_dense and t.sparsity is None:
        return 1.0
    if t.dtype not in _NUMPY:
        raise UserError(f"weight '{t.name}' is of TFLite type {t.dtype}, which no layer reader knows")
    values = np.frombuffer(g.m.buffers[t.buffer], dtype=_NUMPY[t.dtype])
    return round(np.count_nonzero(values) / max(1, int(np.prod(t.shape))), 6)
