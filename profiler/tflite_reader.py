"""Read a TFLite file back: the `TFLiteModel` it holds, and the KernelSpecs of its layers as the runtime runs them.

`read_model` rebuilds the profiler's own in-memory model (tensors, buffers, ops with their options) from the
flatbuffer with the `tflite` package's generated schema, so `profiler.xnnpack.analyse` judges a file exactly as it
judges a model being exported. `layer_specs` maps its conv-like ops to KernelSpecs: CONV_2D (with a zero PAD before
it fused, as the exporter writes k > 1 convs), DEPTHWISE_CONV_2D, FULLY_CONNECTED and the built-in flavour's
RESHAPE -> FULLY_CONNECTED -> RESHAPE form of a sparse 1x1 conv. Every other op (adds, pooling, reshapes) is part of
a network's per-network overhead, as in the predictor's network model.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import tflite

from profiler import xnnpack
from profiler.errors import UserError
from profiler.kernel import ACTIVATIONS, KernelSpec, runs_chw
from profiler.lowering import TFLITE_FLAVOURS
from profiler.tflite_writer import ACTIVATION, OP, Sparsity, TFLiteModel, _Op, _Tensor

_OPTIONS = {v: k for k, v in vars(tflite.BuiltinOptions).items() if isinstance(v, int) and not k.startswith("_")}
_INDEX_VECTORS = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
                  tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
                  tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}
_FUSED = {v: k for k, v in ACTIVATION.items()}
_STANDALONE = {OP.RELU: "relu", OP.RELU6: "relu6", OP.HARD_SWISH: "hardswish", OP.LOGISTIC: "sigmoid"}
"""Activation ops a conv's output may pass through on its own; those KernelSpec knows are read as the conv's."""


def read_model(data: bytes, source: str = "model") -> TFLiteModel:
    """The single-subgraph TFLite model serialised in `data`, as the `TFLiteModel` that writes it."""
    if not tflite.Model.ModelBufferHasIdentifier(data, 0):
        raise UserError(f"{source}: not a TFLite file (no TFL3 identifier)")
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise UserError(f"{source}: {model.SubgraphsLength()} subgraphs; only single-subgraph models are read")
    graph = model.Subgraphs(0)
    codes = [max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
             for c in map(model.OperatorCodes, range(model.OperatorCodesLength()))]
    buffers = [b"" if b.DataIsNone() else b.DataAsNumpy().tobytes()
               for b in map(model.Buffers, range(model.BuffersLength()))]
    tensors = [_tensor(graph.Tensors(i)) for i in range(graph.TensorsLength())]
    ops = [_op(graph.Operators(i), codes) for i in range(graph.OperatorsLength())]
    return TFLiteModel(tensors, buffers, ops, graph.InputsAsNumpy().tolist(), graph.OutputsAsNumpy().tolist())


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


def _op(op, codes: list[int]) -> _Op:
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
    return _Op(codes[op.OpcodeIndex()], op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist(), kind, options)


def layer_specs(m: TFLiteModel, flavour: str, block: str) -> dict[str, KernelSpec]:
    """The KernelSpec of every conv-like layer by name (its output tensor's), in graph order, as `flavour` runs it.

    Density is the stored weights' nonzero share; the built-in kernels run a weight stored dense as dense (1.0),
    and XNNPACK runs every layer dense NHWC unless its cluster passes the sparse gate, where CHW-capable layers
    take the nchw layout (profiler.xnnpack). The file does not say which block its weights were pruned in: the
    specs carry `block`, the device's.
    """
    producer = {t: op for op in m.ops for t in op.outputs}
    readers: dict[int, list[_Op]] = {}
    for op in m.ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op)

    def only_reader(t: int) -> _Op | None:
        ops = readers.get(t, [])
        return ops[0] if len(ops) == 1 and t not in m.outputs else None

    def name(t: int) -> str:
        return m.tensors[t].name

    def activation(op: _Op) -> str:
        fused = _FUSED.get(op.options[1].get("FusedActivationFunction", ACTIVATION["none"]))
        if fused is None:
            raise UserError(f"fused activation {op.options[1]['FusedActivationFunction']} is none KernelSpec knows")
        after = only_reader(op.outputs[0])
        standalone = _STANDALONE.get(after.code) if after is not None else None
        return standalone if fused == "none" and standalone in ACTIVATIONS else fused

    def density(op: _Op) -> float:
        tensor = op.inputs[1]
        if tensor in producer and producer[tensor].code == OP.DENSIFY:
            tensor = producer[tensor].inputs[0]
        t = m.tensors[tensor]
        if flavour == "builtin" and t.sparsity is None:
            return 1.0
        values = np.frombuffer(m.buffers[t.buffer], dtype=np.float32)
        return round(np.count_nonzero(values) / max(1, int(np.prod(t.shape))), 6)

    specs = {}
    for op in m.ops:
        if op.code not in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED):
            continue
        x, out, weight = op.inputs[0], op.outputs[0], m.tensors[op.inputs[1]].shape
        where = f"layer '{name(out)}'"
        try:
            if op.code == OP.FULLY_CONNECTED:
                source = producer.get(x)
                back = only_reader(out)
                if (source is not None and source.code == OP.RESHAPE and len(m.shape(source.inputs[0])) == 4
                        and back is not None and back.code == OP.RESHAPE and len(m.shape(back.outputs[0])) == 4):
                    _, h, w, cin = m.shape(source.inputs[0])  # the built-in flavour's sparse 1x1 conv
                    specs[name(back.outputs[0])] = KernelSpec("conv", h, w, cin, weight[0], density=density(op),
                                                              block=block, activation=activation(op))
                else:
                    specs[name(out)] = KernelSpec("fc", 1, 1, weight[1], weight[0], density=density(op), block=block,
                                                  activation=activation(op))
                continue
            fields = op.options[1]
            if (pad := producer.get(x)) and pad.code == OP.PAD and only_reader(x) is op:
                x = pad.inputs[0]
            _, h, w, cin = m.shape(x)
            if weight[1] != weight[2] or fields["StrideH"] != fields["StrideW"]:
                raise UserError(f"{weight[1]}x{weight[2]} kernel, strides {fields['StrideH']}, "
                                f"{fields['StrideW']}: KernelSpec layers are square")
            if op.code == OP.DEPTHWISE_CONV_2D:
                if fields["DepthMultiplier"] != 1:
                    raise UserError(f"depth multiplier {fields['DepthMultiplier']} (only 1 is read)")
                spec = KernelSpec("dwconv", h, w, cin, cin, weight[1], fields["StrideH"], cin, block=block,
                                  activation=activation(op))
            else:
                spec = KernelSpec("conv", h, w, cin, weight[0], weight[1], fields["StrideH"], cin // weight[3],
                                  density(op), block, activation(op))
            specs[name(out)] = spec
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    if flavour == "xnnpack":
        nchw = {n for cluster in xnnpack.analyse(m) if cluster.sparse for n in cluster.nodes}
        specs = {n: s.replace(layout="nchw") if n in nchw and runs_chw(s.op, s.k, s.stride) else s.replace(density=1.0)
                 for n, s in specs.items()}
    return specs


def read_tflite(data: bytes, flavour: str, block: str, source: str = "model") -> dict[str, KernelSpec]:
    """The layers of a TFLite model (a file's bytes) as `flavour` ("xnnpack" or "builtin") runs them (`layer_specs`);
    errors name `source`."""
    if flavour not in TFLITE_FLAVOURS:
        raise UserError(f"{source}: a TFLite model, but the latency model prices {flavour} models")
    try:
        m = read_model(data, source)
    except UserError:
        raise
    except Exception as err:  # a truncated or foreign flatbuffer fails in many ways (struct, index, attribute errors)
        raise UserError(f"{source}: not a readable TFLite model ({type(err).__name__}: {err})") from None
    try:
        specs = layer_specs(m, flavour, block)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    if not specs:
        raise UserError(f"{source}: no conv, depthwise conv or fully connected layer to price")
    return specs
