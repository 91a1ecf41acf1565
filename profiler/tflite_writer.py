"""A TFLite flatbuffer writer without TensorFlow: dense and sparse constant tensors and the ops JCW needs.

Ops are collected as plain records and serialised once by `to_bytes` with the schema's generated
builders from the `tflite` package. Sparse tensors use SparsityParameters: CSR over the last
dimension, or 1x4 blocks for FULLY_CONNECTED weights (TFLite's fast sparse kernel). Every file has
a "serving_default" SignatureDef (inputs "input", outputs "output"; numbered when several), which
signature runners and ai-edge-quantizer call the model through, and may carry metadata entries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import flatbuffers
import numpy as np


def _schema(name: str):
    """A generated module of the tflite schema (the package re-exports classes under the same names)."""
    return importlib.import_module(f"tflite.{name}")


ActivationFunctionType = _schema("ActivationFunctionType")
AddOptions = _schema("AddOptions")
Buffer = _schema("Buffer")
BuiltinOperator = _schema("BuiltinOperator")
BuiltinOptions = _schema("BuiltinOptions")
ConcatenationOptions = _schema("ConcatenationOptions")
Conv2DOptions = _schema("Conv2DOptions")
DensifyOptions = _schema("DensifyOptions")
DepthwiseConv2DOptions = _schema("DepthwiseConv2DOptions")
DimensionMetadata = _schema("DimensionMetadata")
DimensionType = _schema("DimensionType")
FullyConnectedOptions = _schema("FullyConnectedOptions")
Int32Vector = _schema("Int32Vector")
Metadata = _schema("Metadata")
Uint8Vector = _schema("Uint8Vector")
Uint16Vector = _schema("Uint16Vector")
Model = _schema("Model")
MulOptions = _schema("MulOptions")
Operator = _schema("Operator")
OperatorCode = _schema("OperatorCode")
PadOptions = _schema("PadOptions")
PadV2Options = _schema("PadV2Options")
Pool2DOptions = _schema("Pool2DOptions")
Padding = _schema("Padding")
ReducerOptions = _schema("ReducerOptions")
ReshapeOptions = _schema("ReshapeOptions")
ResizeBilinearOptions = _schema("ResizeBilinearOptions")
ResizeNearestNeighborOptions = _schema("ResizeNearestNeighborOptions")
SignatureDef = _schema("SignatureDef")
SparseIndexVector = _schema("SparseIndexVector")
SparsityParameters = _schema("SparsityParameters")
SubGraph = _schema("SubGraph")
Tensor = _schema("Tensor")
TensorMap = _schema("TensorMap")
TensorType = _schema("TensorType")

ACTIVATION = {
    "none": ActivationFunctionType.ActivationFunctionType.NONE,
    "relu": ActivationFunctionType.ActivationFunctionType.RELU,
    "relu6": ActivationFunctionType.ActivationFunctionType.RELU6,
}
OP = BuiltinOperator.BuiltinOperator
_OPT = BuiltinOptions.BuiltinOptions
_PAD = {"same": Padding.Padding.SAME, "valid": Padding.Padding.VALID}
SIGNATURE_KEY = "serving_default"


def decode_padding(value: int) -> str:
    """A Conv2D/DepthwiseConv2D options' Padding value as "same" or "valid"."""
    return next(name for name, v in _PAD.items() if v == value)


@dataclass
class Sparsity:
    """TFLite SparsityParameters: traversal order, block map and per-dimension metadata."""

    traversal_order: list[int]
    block_map: list[int]
    # per traversed dimension: ("dense", size) or ("csr", segments, indices)
    dims: list[tuple]


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: int
    buffer: int = 0
    sparsity: Sparsity | None = None


@dataclass
class _Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options_type: int
    options: tuple  # (module, {Field: value})
    version: int = 1


@dataclass
class TFLiteModel:
    """A single-subgraph TFLite model under construction; methods add ops and return tensor ids."""

    tensors: list[_Tensor] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])
    ops: list[_Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)
    """Model metadata entries (name -> bytes), e.g. XNNPACK's "reduced_precision_support"."""

    # ---- tensors -------------------------------------------------------------------------------
    def input(self, name: str, shape: tuple[int, ...]) -> int:
        tid = self._tensor(name, shape, TensorType.TensorType.FLOAT32)
        self.inputs.append(tid)
        return tid

    def constant(self, name: str, array: np.ndarray) -> int:
        """A dense constant (float32 or int32)."""
        array = np.ascontiguousarray(array)
        dtype = TensorType.TensorType.INT32 if array.dtype.kind == "i" else TensorType.TensorType.FLOAT32
        array = array.astype(np.int32 if array.dtype.kind == "i" else np.float32)
        self.buffers.append(array.tobytes())
        return self._tensor(name, array.shape, dtype, buffer=len(self.buffers) - 1)

    def sparse_constant(self, name: str, array: np.ndarray, block4: bool = False) -> int:
        """A float32 constant stored sparse: CSR on the last dim, or 1x4 blocks of a 2-D matrix."""
        values, sparsity = (encode_block1x4 if block4 else encode_csr)(np.asarray(array, np.float32))
        self.buffers.append(values.tobytes())
        return self._tensor(
            name, array.shape, TensorType.TensorType.FLOAT32, buffer=len(self.buffers) - 1, sparsity=sparsity
        )

    def _tensor(self, name, shape, dtype, buffer=0, sparsity=None) -> int:
        self.tensors.append(_Tensor(name, tuple(int(s) for s in shape), dtype, buffer, sparsity))
        return len(self.tensors) - 1

    def shape(self, tid: int) -> tuple[int, ...]:
        return self.tensors[tid].shape

    def _op(self, code, inputs, out_shape, options_type=0, options=(None, {}), name="") -> int:
        out = self._tensor(name or f"t{len(self.tensors)}", out_shape, TensorType.TensorType.FLOAT32)
        self.ops.append(_Op(code, list(inputs), [out], options_type, options))
        return out

    # ---- ops -------------------------------------------------------------------------------------
    def conv2d(self, x, w, b, stride, padding, activation, out_shape, name="") -> int:
        opts = {"Padding": _PAD[padding], "StrideW": stride, "StrideH": stride,
                "FusedActivationFunction": ACTIVATION[activation],
                "DilationWFactor": 1, "DilationHFactor": 1}
        return self._op(OP.CONV_2D, [x, w, b], out_shape, _OPT.Conv2DOptions, (Conv2DOptions, opts), name)

    def depthwise_conv2d(self, x, w, b, stride, padding, activation, out_shape, name="") -> int:
        opts = {"Padding": _PAD[padding], "StrideW": stride, "StrideH": stride, "DepthMultiplier": 1,
                "FusedActivationFunction": ACTIVATION[activation],
                "DilationWFactor": 1, "DilationHFactor": 1}
        return self._op(OP.DEPTHWISE_CONV_2D, [x, w, b], out_shape, _OPT.DepthwiseConv2DOptions,
                        (DepthwiseConv2DOptions, opts), name)

    def fully_connected(self, x, w, b, activation, out_shape, name="") -> int:
        """FULLY_CONNECTED; reading a sparse weight directly it is op version 8, as TensorFlow's converter writes it
        (tflite/tools/versioning/op_version.cc: "FullyConnected with sparse weight is supported at version 8"), the
        version the XNNPACK delegate refuses (xnnpack_delegate.cc L2935 at LiteRT v1.4.0), so the built-in kernels run
        it under the default settings too instead of XNNPACK reading the compressed values as dense ones."""
        opts = {"FusedActivationFunction": ACTIVATION[activation], "KeepNumDims": False}
        out = self._op(OP.FULLY_CONNECTED, [x, w, b], out_shape, _OPT.FullyConnectedOptions,
                       (FullyConnectedOptions, opts), name)
        if self.tensors[w].sparsity is not None:
            self.ops[-1].version = 8
        return out

    def densify(self, sparse, name="") -> int:
        return self._op(OP.DENSIFY, [sparse], self.shape(sparse), _OPT.DensifyOptions,
                        (DensifyOptions, {}), name)

    def pad(self, x, pads: list[tuple[int, int]], name="") -> int:
        shape = tuple(s + a + b for s, (a, b) in zip(self.shape(x), pads, strict=True))
        paddings = self.constant(f"{name or 'pad'}/paddings", np.array(pads, np.int32))
        return self._op(OP.PAD, [x, paddings], shape, _OPT.PadOptions, (PadOptions, {}), name)

    def padv2(self, x, pads: list[tuple[int, int]], value: float, name="") -> int:
        """PAD with a constant value (e.g. -inf before a max pool, as PyTorch pads)."""
        shape = tuple(s + a + b for s, (a, b) in zip(self.shape(x), pads, strict=True))
        paddings = self.constant(f"{name or 'pad'}/paddings", np.array(pads, np.int32))
        fill = self.constant(f"{name or 'pad'}/value", np.array(value, np.float32))
        return self._op(OP.PADV2, [x, paddings, fill], shape, _OPT.PadV2Options, (PadV2Options, {}), name)

    def max_pool2d(self, x, k: int, stride: int, out_shape, name="") -> int:
        """A VALID max pool (pad first with padv2 for PyTorch's symmetric padding)."""
        opts = {"Padding": _PAD["valid"], "StrideW": stride, "StrideH": stride, "FilterWidth": k, "FilterHeight": k,
                "FusedActivationFunction": ACTIVATION["none"]}
        return self._op(OP.MAX_POOL_2D, [x], out_shape, _OPT.Pool2DOptions, (Pool2DOptions, opts), name)

    def average_pool2d(self, x, k: int, stride: int, out_shape, name="") -> int:
        """A VALID average pool (pad with zeros first for PyTorch's count_include_pad padding)."""
        opts = {"Padding": _PAD["valid"], "StrideW": stride, "StrideH": stride, "FilterWidth": k, "FilterHeight": k,
                "FusedActivationFunction": ACTIVATION["none"]}
        return self._op(OP.AVERAGE_POOL_2D, [x], out_shape, _OPT.Pool2DOptions, (Pool2DOptions, opts), name)

    def mean(self, x, axes: list[int], keep_dims=False, name="") -> int:
        shape = [s for i, s in enumerate(self.shape(x)) if i not in axes or keep_dims]
        if keep_dims:
            shape = [1 if i in axes else s for i, s in enumerate(self.shape(x))]
        axis = self.constant(f"{name or 'mean'}/axis", np.array(axes, np.int32))
        return self._op(OP.MEAN, [x, axis], tuple(shape), _OPT.ReducerOptions,
                        (ReducerOptions, {"KeepDims": keep_dims}), name)

    def add(self, a, b, activation="none", name="") -> int:
        """Elementwise sum; either input may broadcast."""
        return self._op(OP.ADD, [a, b], np.broadcast_shapes(self.shape(a), self.shape(b)), _OPT.AddOptions,
                        (AddOptions, {"FusedActivationFunction": ACTIVATION[activation]}), name)

    def mul(self, a, b, activation="none", name="") -> int:
        """Elementwise product; either input may broadcast (a squeeze-and-excite scale of shape (N, 1, 1, C))."""
        return self._op(OP.MUL, [a, b], np.broadcast_shapes(self.shape(a), self.shape(b)), _OPT.MulOptions,
                        (MulOptions, {"FusedActivationFunction": ACTIVATION[activation]}), name)

    def activation(self, x, activation: str, name="") -> int:
        """A standalone activation, the op(s) computing it exactly as PyTorch does:
        hardswish HARD_SWISH, sigmoid LOGISTIC, silu x * LOGISTIC(x), hardsigmoid (1 / 6) * relu6(3 + x).

        hardsigmoid's constants have x's rank, all dims 1, and come first: XNNPACK's NCHW check takes a static first
        input of at most one non-unit dim but, for a static second input, counts the first input's dims
        (src/subgraph.c L618 at XNNPACK 8b3d5687eb), so `x + 3` would keep a whole cluster dense on ARM."""
        if activation in ("relu", "relu6", "hardswish", "sigmoid"):
            code = {"relu": OP.RELU, "relu6": OP.RELU6, "hardswish": OP.HARD_SWISH, "sigmoid": OP.LOGISTIC}
            return self._op(code[activation], [x], self.shape(x), name=name)
        if activation == "silu":
            return self.mul(x, self.activation(x, "sigmoid", f"{name}/sigmoid"), name=name)
        if activation == "hardsigmoid":
            ones = (1,) * len(self.shape(x))
            three = self.constant(f"{name}/three", np.full(ones, 3.0, np.float32))
            sixth = self.constant(f"{name}/sixth", np.full(ones, 1 / 6, np.float32))
            return self.mul(sixth, self.add(three, x, "relu6", f"{name}/relu6"), name=name)
        raise ValueError(f"no standalone op for activation {activation!r}")

    def concatenation(self, xs: list[int], axis: int, name="") -> int:
        shape = list(self.shape(xs[0]))
        shape[axis] = sum(self.shape(x)[axis] for x in xs)
        return self._op(OP.CONCATENATION, xs, tuple(shape), _OPT.ConcatenationOptions,
                        (ConcatenationOptions, {"Axis": axis, "FusedActivationFunction": ACTIVATION["none"]}), name)

    def resize(self, x, size: tuple[int, int], mode: str, align_corners: bool, name="") -> int:
        """RESIZE_NEAREST_NEIGHBOR or RESIZE_BILINEAR of an NHWC tensor to `size`, PyTorch's sampling: nearest
        floors the source index (no half-pixel centres), bilinear without align_corners samples half-pixel centres."""
        n, _, _, c = self.shape(x)
        new_size = self.constant(f"{name or 'resize'}/size", np.array(size, np.int32))
        if mode == "nearest":
            opts = {"AlignCorners": False, "HalfPixelCenters": False}
            return self._op(OP.RESIZE_NEAREST_NEIGHBOR, [x, new_size], (n, *size, c),
                            _OPT.ResizeNearestNeighborOptions, (ResizeNearestNeighborOptions, opts), name)
        opts = {"AlignCorners": align_corners, "HalfPixelCenters": not align_corners}
        return self._op(OP.RESIZE_BILINEAR, [x, new_size], (n, *size, c), _OPT.ResizeBilinearOptions,
                        (ResizeBilinearOptions, opts), name)

    def reshape(self, x, shape: tuple[int, ...], name="") -> int:
        new_shape = self.constant(f"{name or 'reshape'}/shape", np.array(shape, np.int32))
        return self._op(OP.RESHAPE, [x, new_shape], tuple(shape), _OPT.ReshapeOptions,
                        (ReshapeOptions, {}), name)

    # ---- serialisation --------------------------------------------------------------------------
    def to_bytes(self, description: str = "jcw") -> bytes:
        return _serialise(self, description)


def encode_csr(dense: np.ndarray) -> tuple[np.ndarray, Sparsity]:
    """CSR over the last dimension; every leading dimension dense."""
    rows = dense.reshape(-1, dense.shape[-1])
    nz_rows, nz_cols = np.nonzero(rows)
    segments = np.concatenate([[0], np.cumsum(np.bincount(nz_rows, minlength=rows.shape[0]))])
    dims = [("dense", s) for s in dense.shape[:-1]] + [("csr", segments, nz_cols)]
    return rows[nz_rows, nz_cols], Sparsity(list(range(dense.ndim)), [], dims)


def encode_block1x4(dense: np.ndarray) -> tuple[np.ndarray, Sparsity]:
    """A (rows, cols) matrix in 1x4 blocks along cols (cols % 4 == 0): blocks kept if any is nonzero."""
    rows, cols = dense.shape
    if cols % 4:
        raise ValueError(f"1x4 block encoding needs columns divisible by 4, got {cols}")
    blocks = dense.reshape(rows, cols // 4, 4)
    nz_rows, nz_blocks = np.nonzero(np.any(blocks != 0, axis=2))
    segments = np.concatenate([[0], np.cumsum(np.bincount(nz_rows, minlength=rows))])
    dims = [("dense", rows), ("csr", segments, nz_blocks), ("dense", 4)]
    return blocks[nz_rows, nz_blocks].reshape(-1), Sparsity([0, 1, 2], [1], dims)


def _int_vector(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def _table_vector(b: flatbuffers.Builder, start_fn, offsets: list[int]) -> int:
    start_fn(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _aligned_bytes(b: flatbuffers.Builder, data: bytes) -> int:
    """A ubyte vector whose data starts on a 16-byte boundary, as TFLite expects for buffers."""
    b.StartVector(1, len(data), 16)
    b.head = b.Head() - len(data)
    b.Bytes[b.Head():b.Head() + len(data)] = data
    return b.EndVector()


def _index_vector(b: flatbuffers.Builder, values: np.ndarray) -> tuple[int, int]:
    """The narrowest of TFLite's index vectors (uint8, uint16, int32) that holds `values`."""
    peak = int(values.max(initial=0))
    kind = "Uint8Vector" if peak <= 255 else "Uint16Vector" if peak <= 65535 else "Int32Vector"
    module, dtype = {"Uint8Vector": (Uint8Vector, np.uint8), "Uint16Vector": (Uint16Vector, np.uint16),
                     "Int32Vector": (Int32Vector, np.int32)}[kind]
    data = b.CreateNumpyVector(np.asarray(values, dtype=dtype))
    module.Start(b)
    module.AddValues(b, data)
    return module.End(b), getattr(SparseIndexVector.SparseIndexVector, kind)


def _sparsity(b: flatbuffers.Builder, sp: Sparsity) -> int:
    dim_offsets = []
    for dim in sp.dims:
        if dim[0] == "dense":
            DimensionMetadata.Start(b)
            DimensionMetadata.AddFormat(b, DimensionType.DimensionType.DENSE)
            DimensionMetadata.AddDenseSize(b, int(dim[1]))
        else:
            segments, segments_type = _index_vector(b, dim[1])
            indices, indices_type = _index_vector(b, dim[2])
            DimensionMetadata.Start(b)
            DimensionMetadata.AddFormat(b, DimensionType.DimensionType.SPARSE_CSR)
            DimensionMetadata.AddArraySegmentsType(b, segments_type)
            DimensionMetadata.AddArraySegments(b, segments)
            DimensionMetadata.AddArrayIndicesType(b, indices_type)
            DimensionMetadata.AddArrayIndices(b, indices)
        dim_offsets.append(DimensionMetadata.End(b))
    dims = _table_vector(b, SparsityParameters.StartDimMetadataVector, dim_offsets)
    order = _int_vector(b, sp.traversal_order)
    block_map = _int_vector(b, sp.block_map) if sp.block_map else None
    SparsityParameters.Start(b)
    SparsityParameters.AddTraversalOrder(b, order)
    if block_map is not None:
        SparsityParameters.AddBlockMap(b, block_map)
    SparsityParameters.AddDimMetadata(b, dims)
    return SparsityParameters.End(b)


def signature_names(prefix: str, count: int) -> list[str]:
    """The SignatureDef's names of a model's `count` inputs or outputs: `prefix`, or `prefix`_0, _1 ... for several."""
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _signature(b: flatbuffers.Builder, model: TFLiteModel) -> int:
    """The "serving_default" SignatureDef of subgraph 0: its inputs and outputs by signature_names."""
    maps = {}
    for what, tensors in (("input", model.inputs), ("output", model.outputs)):
        offsets = []
        for name, tensor in zip(signature_names(what, len(tensors)), tensors, strict=True):
            text = b.CreateString(name)
            TensorMap.Start(b)
            TensorMap.AddName(b, text)
            TensorMap.AddTensorIndex(b, tensor)
            offsets.append(TensorMap.End(b))
        maps[what] = offsets
    inputs = _table_vector(b, SignatureDef.StartInputsVector, maps["input"])
    outputs = _table_vector(b, SignatureDef.StartOutputsVector, maps["output"])
    key = b.CreateString(SIGNATURE_KEY)
    SignatureDef.Start(b)
    SignatureDef.AddInputs(b, inputs)
    SignatureDef.AddOutputs(b, outputs)
    SignatureDef.AddSignatureKey(b, key)
    SignatureDef.AddSubgraphIndex(b, 0)
    return SignatureDef.End(b)


def _metadata(b: flatbuffers.Builder, model: TFLiteModel, first_buffer: int) -> list[int]:
    """Metadata tables naming buffers first_buffer, first_buffer + 1 ... (the entries' data, in order)."""
    offsets = []
    for i, name in enumerate(model.metadata):
        text = b.CreateString(name)
        Metadata.Start(b)
        Metadata.AddName(b, text)
        Metadata.AddBuffer(b, first_buffer + i)
        offsets.append(Metadata.End(b))
    return offsets


def _serialise(model: TFLiteModel, description: str) -> bytes:
    b = flatbuffers.Builder(1024)
    codes = sorted({(op.code, op.version) for op in model.ops})
    code_index = {c: i for i, c in enumerate(codes)}

    buffer_offsets = []
    for data in [*model.buffers, *model.metadata.values()]:
        vec = _aligned_bytes(b, data) if data else None
        Buffer.Start(b)
        if vec is not None:
            Buffer.AddData(b, vec)
        buffer_offsets.append(Buffer.End(b))

    tensor_offsets = []
    for t in model.tensors:
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.shape)
        sparsity = _sparsity(b, t.sparsity) if t.sparsity else None
        Tensor.Start(b)
        Tensor.AddShape(b, shape)
        Tensor.AddType(b, t.dtype)
        Tensor.AddBuffer(b, t.buffer)
        Tensor.AddName(b, name)
        if sparsity is not None:
            Tensor.AddSparsity(b, sparsity)
        tensor_offsets.append(Tensor.End(b))

    op_offsets = []
    for op in model.ops:
        module, fields = op.options
        options = None
        if module is not None:
            module.Start(b)
            for key, value in fields.items():
                getattr(module, f"Add{key}")(b, value)
            options = module.End(b)
        inputs = _int_vector(b, op.inputs)
        outputs = _int_vector(b, op.outputs)
        Operator.Start(b)
        Operator.AddOpcodeIndex(b, code_index[op.code, op.version])
        Operator.AddInputs(b, inputs)
        Operator.AddOutputs(b, outputs)
        if options is not None:
            Operator.AddBuiltinOptionsType(b, op.options_type)
            Operator.AddBuiltinOptions(b, options)
        op_offsets.append(Operator.End(b))

    tensors = _table_vector(b, SubGraph.StartTensorsVector, tensor_offsets)
    operators = _table_vector(b, SubGraph.StartOperatorsVector, op_offsets)
    inputs = _int_vector(b, model.inputs)
    outputs = _int_vector(b, model.outputs)
    name = b.CreateString("main")
    SubGraph.Start(b)
    SubGraph.AddTensors(b, tensors)
    SubGraph.AddInputs(b, inputs)
    SubGraph.AddOutputs(b, outputs)
    SubGraph.AddOperators(b, operators)
    SubGraph.AddName(b, name)
    subgraph = SubGraph.End(b)

    code_offsets = []
    for code, version in codes:
        OperatorCode.Start(b)
        OperatorCode.AddDeprecatedBuiltinCode(b, min(code, OP.PLACEHOLDER_FOR_GREATER_OP_CODES))
        OperatorCode.AddBuiltinCode(b, code)
        OperatorCode.AddVersion(b, version)
        code_offsets.append(OperatorCode.End(b))

    opcodes = _table_vector(b, Model.StartOperatorCodesVector, code_offsets)
    subgraphs = _table_vector(b, Model.StartSubgraphsVector, [subgraph])
    buffers = _table_vector(b, Model.StartBuffersVector, buffer_offsets)
    signatures = _table_vector(b, Model.StartSignatureDefsVector, [_signature(b, model)])
    metadata = _table_vector(b, Model.StartMetadataVector, _metadata(b, model, len(model.buffers))) \
        if model.metadata else None
    desc = b.CreateString(description)
    Model.Start(b)
    Model.AddVersion(b, 3)
    Model.AddOperatorCodes(b, opcodes)
    Model.AddSubgraphs(b, subgraphs)
    Model.AddDescription(b, desc)
    Model.AddBuffers(b, buffers)
    Model.AddSignatureDefs(b, signatures)
    if metadata is not None:
        Model.AddMetadata(b, metadata)
    b.Finish(Model.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())
