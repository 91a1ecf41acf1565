"""What XNNPACK runs, exactly: which parts of a TFLite graph LiteRT's XNNPACK delegate runs in NCHW ("sparse
inference": every node on a CHW kernel, 1x1 convs as SpMM) and which dense NHWC, ported from the source.

Pinned source (what arm-emu's ai-edge-litert 1.4.0 bundles; the NCHW code is identical across the window of XNNPACK
commits the binary allows):
- LiteRT v1.4.0 (0348ffbe42) `tflite/delegates/xnnpack/xnnpack_delegate.cc` ("delegate.cc") and `tflite/graph_info.cc`;
- XNNPACK 8b3d5687eb8e4a266731ad8a288de6c813c2959b `src/subgraph.c` ("subgraph.c"), `src/subgraph/convolution-2d.c`,
  `src/subgraph/depthwise-convolution-2d.c`.

The steps, each a function below, in the order LiteRT and XNNPACK take them:
1. `_delegated`: the ops the delegate takes (`VisitNode`, delegate.cc L2821-L3129); `_partitions`: TFLite cuts the graph
   into partitions of delegated and other ops (graph_info.cc L135-L230, greedy); each partition is one XNNPACK
   subgraph whose inputs and outputs are "external".
2. The sparse hint, per partition: XNN_FLAG_HINT_SPARSE_INFERENCE is set only when some node of the partition reads
   a DENSIFY of a sparse constant (delegate.cc L6779-L6787, L939-L945, L1145). Without it nothing runs NCHW, whatever
   the zeros; with it, weights stored dense count and run SpMM like densified ones.
3. `_lower`: each op as the delegate defines it: a FULLY_CONNECTED without keep_num_dims gets a reshape before it
   (delegate.cc L4570); a fused activation of a binary op becomes a clamp node after it; stride-1 SAME padding
   becomes explicit (convolution-2d.c L1072, depthwise-convolution-2d.c L764).
4. `_fuse`: `xnn_subgraph_fusion` (subgraph.c L1478): a clamp (RELU, RELU6) into a producer that has one (L1507), a
   zero spatial PAD into the conv or depthwise conv reading it alone (L1534).
5. `_compatibility`: `xnn_check_nchw_compatibility` (subgraph.c L367-L663), node by node.
6. `_rewrite`: `xnn_subgraph_rewrite_for_nchw` (subgraph.c L666-L931), statement for statement: clusters are
   connected components seeded by exits (several entries and exits possible), a node reading an external or
   incompatible value spoils its cluster, every value a cluster node reads must have only NCHW consumers (a model
   output counts as one more consumer, L340), and the gate: more than 2/3 zeros over the cluster's 1x1 convs and
   fully connected nodes (L902). Values its nodes read become NCHW; a node runs a CHW kernel when its output is NCHW
   (convolution-2d.c L192).

`analyse` returns one `Cluster` per component holding an entry (or a conv that would be one but for its form), with
the node and rule that keep it dense; `verdict` / `verdict_of` summarise them for the exporter's sidecar. The same
rules price candidates (profiler.runtimes.xnnpack.SparseCluster) and write files (its network). XNNPACK's CHW path
runs on ARM only (x86 CPUs with AVX never take it), and FP32 files without reduced-precision metadata stay FP32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from profiler.tflite_writer import ACTIVATION, OP, TFLiteModel, decode_padding

GATE = 2 / 3
"""A cluster runs sparse when more than this share of its 1x1-conv and fully-connected weights are zero."""

# layout flags, subgraph.c L345-L348
_NCHW, _NHWC2NCHW, _NCHW2NHWC, _INCOMPATIBLE = 1, 2, 4, 8

_NAMES = {v: k for k, v in vars(OP).items() if isinstance(v, int) and not k.startswith("_")}
_UNARY = {OP.ABS, OP.CEIL, OP.COS, OP.ELU, OP.EXP, OP.FLOOR, OP.GELU, OP.HARD_SWISH, OP.LEAKY_RELU, OP.LOGISTIC,
          OP.NEG, OP.ROUND, OP.RSQRT, OP.SIN, OP.SQRT, OP.SQUARE, OP.TANH, OP.DEQUANTIZE, OP.QUANTIZE}
_CLAMPS = {OP.RELU, OP.RELU6, OP.RELU_N1_TO_1}  # xnn_unary_clamp (delegate.cc VisitUnaryNode)
_BINARY = {OP.ADD, OP.MUL, OP.SUB, OP.DIV, OP.MAXIMUM, OP.MINIMUM, OP.PRELU, OP.SQUARED_DIFFERENCE}
_DELEGATED = _UNARY | _CLAMPS | _BINARY | {
    OP.ASSIGN_VARIABLE, OP.AVERAGE_POOL_2D, OP.BATCH_MATMUL, OP.CONCATENATION, OP.CONV_2D, OP.DENSIFY,
    OP.DEPTH_TO_SPACE, OP.DEPTHWISE_CONV_2D, OP.EXPAND_DIMS, OP.FULLY_CONNECTED, OP.MAX_POOL_2D, OP.MEAN, OP.PAD,
    OP.READ_VARIABLE, OP.REDUCE_MAX, OP.REDUCE_MIN, OP.RESHAPE, OP.RESIZE_BILINEAR, OP.SLICE, OP.SOFTMAX,
    OP.SPACE_TO_DEPTH, OP.SPLIT, OP.STABLEHLO_COMPOSITE, OP.STRIDED_SLICE, OP.SUM, OP.TRANSPOSE, OP.TRANSPOSE_CONV,
    OP.VAR_HANDLE}
"""The builtin ops `VisitNode` has a case for (delegate.cc L2821-L3129); any other op stays with the built-in kernels
(PADV2 and RESIZE_NEAREST_NEIGHBOR among the ones the toolkit writes)."""
_FLOATS = {0: np.float32, 1: np.float16}  # TensorType FLOAT32, FLOAT16: the values all_values_fp accepts


def passes_gate(zeros: float, params: float) -> bool:
    """XNNPACK's sparsity gate, subgraph.c L902: dense when `num_zeroes * 3 <= num_params * 2` (also without params)."""
    return not zeros * 3 <= params * 2


@dataclass(frozen=True)
class Block:
    """What keeps a cluster from running NCHW: the node, the rule (with its source line) and whether the cause is the
    file's form (another form of the same computation runs NCHW) rather than the network."""

    node: str
    rule: str
    form: bool = False

    def __str__(self) -> str:
        return f"'{self.node}' {self.rule}" + (" (the file's form, not the network)" if self.form else "")


@dataclass(frozen=True)
class Cluster:
    """One connected component of NCHW-compatible nodes that holds an entry conv, as XNNPACK's pass sees it.

    `nodes` are layer/op names (their output tensors') in graph order; `gated` the 1x1 convs and fully connected
    nodes whose weights the gate counts (`params` weights, `zeros` of them zero); `hint` whether its partition has
    the sparse hint; `nchw` the nodes that run CHW kernels when it runs sparse; `dangling` its nodes that would read
    NCHW data but write NHWC without being an exit (XNNPACK only checks the values its cluster nodes read, subgraph.c
    L785-L838, so such a cluster passes and computes wrong results)."""

    nodes: tuple[str, ...]
    entries: tuple[str, ...]
    exits: tuple[str, ...]
    gated: tuple[str, ...]
    params: int
    zeros: int
    hint: bool
    block: Block | None = None
    nchw: tuple[str, ...] = ()
    dangling: tuple[str, ...] = ()

    @property
    def entry(self) -> str:
        return self.entries[0] if self.entries else ""

    @property
    def blocked(self) -> str:
        """Why its structure never runs NCHW ("" when it can)."""
        return str(self.block) if self.block else ""

    @property
    def zero_share(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    @property
    def passes(self) -> bool:
        """Its structure allows NCHW and its zeros pass the gate: it runs NCHW as soon as its partition has the hint."""
        return self.block is None and passes_gate(self.zeros, self.params)

    @property
    def sparse(self) -> bool:
        """Whether XNNPACK runs it in NCHW (sparse) and computes it right."""
        return self.passes and self.hint and not self.dangling

    @property
    def broken(self) -> bool:
        """Whether XNNPACK runs it partly NCHW and computes a wrong result (a dangling node; an XNNPACK bug)."""
        return self.passes and self.hint and bool(self.dangling)

    @property
    def cause(self) -> str:
        """What decides its regime: "network" (structure or densities), "form" (how the file writes it) or "ok"."""
        if self.block:
            return "form" if self.block.form else "network"
        if self.passes and not self.hint and not self.dangling:
            return "form"
        return "ok" if self.sparse else "network"

    def reason(self) -> str:
        """Why the cluster runs as it does, in one line."""
        share = f"{self.zero_share:.1%} of its 1x1/FC weights are zero"
        where = f"cluster from '{self.entry}'"
        if self.block:
            return f"{where}: {self.block}"
        if self.dangling and self.passes:
            bug = (f"'{self.dangling[0]}' would read NCHW data and write NHWC (no exit after it; XNNPACK checks only "
                   "the values its cluster nodes read, subgraph.c L834)")
            if self.hint:
                return f"{where}: BROKEN: {share}, runs partly NCHW with wrong results: {bug}"
            return f"{where}: runs dense: stored without DENSIFY on purpose, since with the sparse hint {bug}"
        if not passes_gate(self.zeros, self.params):
            return f"{where}: only {share} (needs more than 2/3, subgraph.c L902)"
        if not self.hint:
            return (f"{where}: {share} but its partition has no DENSIFY, so XNNPACK never tries sparse inference "
                    "(delegate.cc L943, L1145; the file's form)")
        return f"{where}: {share} (> 2/3: runs sparse)"


# -- the graph as the delegate and XNNPACK see it ----------------------------------------------------------------------


@dataclass
class _Node:
    """An XNNPACK node: its TFLite op's name (the op's output tensor), the op, its kind and value ids (TFLite tensor
    ids, then values the delegate adds), kind-specific parameters and the NCHW pass's state: layout flags, cluster
    leader, why it is incompatible (`why`, `form`) and what spoilt its cluster (`block`)."""

    name: str
    op: int
    kind: str  # conv dwconv fc binary unary clamp mean sum pad pool resize d2s reshape other invalid
    inputs: list[int]
    outputs: list[int]
    p: dict = field(default_factory=dict)
    flags: int = 0
    leader: int = 0
    why: str = ""
    form: bool = False
    block: Block | None = None

    def clear(self) -> None:
        """xnn_node_clear: the node is fused away."""
        self.kind, self.inputs, self.outputs = "invalid", [], []


@dataclass
class _Graph:
    """One XNNPACK subgraph (a delegated partition): its nodes in order, its values' shapes and names, the zero count
    of each static value (constants and unpacked weights), its external values and its sparse hint."""

    nodes: list[_Node]
    shapes: dict[int, tuple[int, ...]]
    names: dict[int, str]
    zeros: dict[int, int]
    fp: set[int]
    external_in: set[int] = field(default_factory=set)
    external_out: set[int] = field(default_factory=set)
    hint: bool = False
    cut: str = ""  # an op of the model XNNPACK does not run, and why (the partitions' border)

    def static(self, v: int) -> bool:
        return v in self.zeros

    def new_value(self, like: int, shape: tuple[int, ...], name: str) -> int:
        """A value the delegate adds, of `like`'s type."""
        v = max(self.shapes) + 1
        self.shapes[v], self.names[v] = shape, name
        if like in self.fp:
            self.fp.add(v)
        return v

    def index(self) -> tuple[dict[int, _Node], dict[int, int]]:
        """Each value's producer and its number of consumers, a model or partition output counting once more
        (`xnn_subgraph_analyze_consumers_and_producers`, subgraph.c L291-L342)."""
        producer = {v: n for n in self.nodes for v in n.outputs}
        consumers = {v: 1 for v in self.external_out}
        for n in self.nodes:
            for v in n.inputs:
                consumers[v] = consumers.get(v, 0) + 1
        return producer, consumers


def _values(m: TFLiteModel) -> tuple[dict[int, int], set[int]]:
    """Static tensors with their zero counts (constants, and DENSIFY / DEQUANTIZE outputs of them, which the delegate
    unpacks at prepare time, delegate.cc L6690-L6790), and the static sparse weights among them (the hint's)."""
    zeros, sparse = {}, set()
    for i, t in enumerate(m.tensors):
        if t.buffer and m.buffers[t.buffer]:
            dtype = _FLOATS.get(t.dtype)
            values = np.frombuffer(m.buffers[t.buffer], dtype=dtype) if dtype else ()
            zeros[i] = int(np.prod(t.shape)) - int(np.count_nonzero(values)) if dtype else 0
    for op in m.ops:
        if _unpacks(op, zeros):
            zeros[op.outputs[0]] = zeros[op.inputs[0]]
            if m.tensors[op.inputs[0]].sparsity is not None or op.inputs[0] in sparse:
                sparse.add(op.outputs[0])
    return zeros, sparse


def _unpacks(op, zeros: dict[int, int]) -> bool:
    """A DENSIFY / DEQUANTIZE of static data: weight preprocessing the delegate does at prepare time, no node."""
    return op.code in (OP.DENSIFY, OP.DEQUANTIZE) and len(op.inputs) == 1 and op.inputs[0] in zeros


def _delegated(op) -> str:
    """"" when the XNNPACK delegate takes the op, else why not (the ops and checks the toolkit's files meet)."""
    if op.code not in _DELEGATED:
        return f"{_NAMES.get(op.code, op.code)} has no XNNPACK delegate kernel (delegate.cc VisitNode L2821)"
    if op.code == OP.FULLY_CONNECTED and op.version == 8:
        return "FULLY_CONNECTED version 8 (a sparse weight) is left to the built-in kernels (delegate.cc L2935)"
    if op.code == OP.CONCATENATION and not 2 <= len(op.inputs) <= 5:
        return f"CONCATENATION of {len(op.inputs)} inputs (the delegate takes 2 to 5, delegate.cc L3456)"
    return ""


def _partitions(m: TFLiteModel, zeros: dict[int, int]) -> list[list[int]]:
    """The delegated partitions (op indices in order) as TFLite cuts them: `PartitionGraphIntoIndependentNodeSubsets`
    (graph_info.cc L135-L230), greedy, each subset holding ops of one kind (delegated or not)."""
    delegated = [_unpacks(op, zeros) or not _delegated(op) for op in m.ops]
    produced = {t for op in m.ops for t in op.outputs}
    ready = {t for t in range(len(m.tensors)) if t not in produced}
    done: set[int] = set()
    partitions = []
    while len(done) < len(m.ops):
        kind, subset, progress = None, [], True
        while progress:
            progress = False
            for i, op in enumerate(m.ops):
                if i in done or not all(t in ready for t in op.inputs if t >= 0):
                    continue
                kind = delegated[i] if kind is None else kind
                if delegated[i] == kind:
                    done.add(i)
                    subset.append(i)
                    ready.update(op.outputs)
                    progress = True
        if kind:
            partitions.append(subset)
    return partitions


def _subgraph(m: TFLiteModel, ops: list[int], zeros: dict[int, int], sparse: set[int]) -> _Graph:
    """The XNNPACK subgraph of one delegated partition, its ops lowered as the delegate defines them."""
    g = _Graph([], {i: t.shape for i, t in enumerate(m.tensors)}, {i: t.name for i, t in enumerate(m.tensors)}, zeros,
               {i for i, t in enumerate(m.tensors) if t.dtype in _FLOATS})
    inside = {t for i in ops for t in m.ops[i].outputs}
    read_outside = {t for i, op in enumerate(m.ops) if i not in ops for t in op.inputs}
    for i in ops:
        op = m.ops[i]
        g.hint = g.hint or any(t in sparse for t in op.inputs)  # delegate.cc L939-L945
        if _unpacks(op, zeros):
            continue
        g.external_in.update(t for t in op.inputs if t >= 0 and t not in inside and t not in zeros)
        g.external_out.update(t for t in op.outputs if t in read_outside or t in m.outputs)
        g.nodes.extend(_lower(m, op, g))
    return g


_KINDS = {OP.MEAN: "mean", OP.SUM: "sum", OP.PAD: "pad", OP.MAX_POOL_2D: "pool", OP.AVERAGE_POOL_2D: "pool",
          OP.RESIZE_BILINEAR: "resize", OP.DEPTH_TO_SPACE: "d2s"}


def _lower(m: TFLiteModel, op, g: _Graph) -> list[_Node]:
    """One TFLite op as the XNNPACK node(s) the delegate defines for it."""
    name, out, fields = m.tensors[op.outputs[0]].name, op.outputs[0], op.options[1]
    if op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D):
        w = m.tensors[op.inputs[1]].shape  # OHWI, or (1, kh, kw, C * multiplier)
        k, stride = (w[1], w[2]), (fields["StrideH"], fields["StrideW"])
        dilation = (fields.get("DilationHFactor", 1), fields.get("DilationWFactor", 1))
        same = decode_padding(fields["Padding"]) == "same"
        padding = (0, 0, 0, 0)  # top, right, bottom, left
        if same and stride == (1, 1):  # convolution-2d.c L1072, depthwise-convolution-2d.c L764
            ph, pw = (k[0] - 1) * dilation[0], (k[1] - 1) * dilation[1]
            padding, same = (ph // 2, pw - pw // 2, ph - ph // 2, pw // 2), False
        cin = g.shapes[op.inputs[0]][-1]
        p = {"k": k, "stride": stride, "dilation": dilation, "same": same, "padding": padding}
        if op.code == OP.CONV_2D:
            return [_Node(name, op.code, "conv", list(op.inputs), [out], p | {"groups": cin // w[3], "cin": w[3]})]
        return [_Node(name, op.code, "dwconv", list(op.inputs), [out], p | {"multiplier": w[3] // cin})]
    if op.code == OP.FULLY_CONNECTED:
        if fields.get("KeepNumDims", False):
            return [_Node(name, op.code, "fc", list(op.inputs), [out])]
        flat = g.new_value(op.inputs[0], (-1, m.tensors[op.inputs[1]].shape[1]), f"{name}/reshape")  # L4570
        return [_Node(name, op.code, "reshape", [op.inputs[0]], [flat], {"fc": True}),
                _Node(name, op.code, "fc", [flat, *op.inputs[1:]], [out])]
    if op.code in _BINARY:
        node = _Node(name, op.code, "binary", list(op.inputs), [out])
        if fields.get("FusedActivationFunction", ACTIVATION["none"]) == ACTIVATION["none"]:
            return [node]
        node.outputs = [g.new_value(out, g.shapes[out], f"{name}/unclamped")]  # xnn_insert_clamp_node (L36)
        return [node, _Node(name, op.code, "clamp", list(node.outputs), [out])]
    if op.code in _CLAMPS or op.code in _UNARY:
        return [_Node(name, op.code, "clamp" if op.code in _CLAMPS else "unary", [op.inputs[0]], [out])]
    if op.code in _KINDS:  # axes, paddings and sizes are parameters, not inputs (delegate.cc L956-L971)
        node = _Node(name, op.code, _KINDS[op.code], [op.inputs[0]], [out])
        if op.code == OP.PAD:
            node.p["pads"] = np.frombuffer(m.buffers[m.tensors[op.inputs[1]].buffer], np.int32).reshape(-1, 2)
        return [node]
    return [_Node(name, op.code, "other", [t for t in op.inputs if t >= 0 and t not in g.zeros], list(op.outputs))]


def _fuse(g: _Graph) -> None:
    """`xnn_subgraph_fusion` (subgraph.c L1478), the two fusions that change NCHW clusters: a clamp into a producer that
    has one (L1507), a zero spatial PAD into the [depthwise] conv that alone reads it (L1534)."""
    has_clamp = {"conv", "dwconv", "fc", "pool", "clamp"}  # subgraph.c L1444
    for v in sorted({v for n in g.nodes for v in n.outputs}):
        producer, consumers = g.index()
        if consumers.get(v) != 1 or v not in producer or v in g.external_out:
            continue
        source, reader = producer[v], next(n for n in g.nodes if v in n.inputs)
        if reader.kind == "clamp" and source.kind in has_clamp:
            source.outputs = list(reader.outputs)
            reader.clear()
        elif source.kind == "pad" and reader.kind in ("conv", "dwconv") and not reader.p["same"]:
            pads = source.p["pads"]
            if len(g.shapes[v]) == 4 and not (pads[0].any() or pads[3].any()):  # the toolkit's PAD pads zeros
                top, right, bottom, left = reader.p["padding"]
                reader.p["padding"] = (top + pads[1][0], right + pads[2][1], bottom + pads[1][1], left + pads[2][0])
                reader.inputs[0] = source.inputs[0]
                source.clear()


def _compatibility(g: _Graph, n: _Node) -> tuple[int, str, bool]:
    """`xnn_check_nchw_compatibility` (subgraph.c L367-L663): (layout flags, why 0, whether `why` is the form)."""
    p, dims = n.p, [len(g.shapes[v]) for v in n.inputs]
    if not set(n.inputs + n.outputs) <= g.fp:
        return 0, "has a value that is neither fp32 nor fp16 (all_values_fp, subgraph.c L369)", False
    if n.kind == "fc":
        return _NCHW, "", False  # L378
    if n.kind == "conv":
        k, stride, padding = p["k"], p["stride"], p["padding"]
        if p["groups"] != 1:
            return 0, f"is a grouped conv ({p['groups']} groups, subgraph.c L385)", False
        if p["dilation"] != (1, 1):
            return 0, "is a dilated conv (subgraph.c L393)", False
        if k == (1, 1):
            if any(padding):
                return 0, f"is a 1x1 conv with padding {padding} (subgraph.c L405)", False
            if stride != (1, 1):
                return 0, f"is a 1x1 conv with stride {stride[0]} (subgraph.c L420)", False
            return _NCHW, "", False
        if k != (3, 3):
            return 0, f"is a {k[0]}x{k[1]} conv (only 1x1 convs and the 3x3 entry run NCHW, subgraph.c L470)", False
        if padding != (1, 1, 1, 1):
            if p["same"]:
                return 0, ("is a 3x3 conv with TFLite SAME padding at stride 2, which XNNPACK keeps as padding 0 "
                           "(convolution-2d.c L1072; an entry needs 1 on each side, subgraph.c L434: an explicit PAD "
                           "+ VALID enters)"), True
            return 0, f"is a 3x3 conv with padding {padding} (an entry needs 1 on each side, subgraph.c L434)", False
        if stride != (2, 2):
            return 0, f"is a 3x3 stride-{stride[0]} conv (only a stride-2 one enters a cluster, subgraph.c L450)", False
        if p["cin"] != 3:
            return 0, f"is a 3x3 conv on {p['cin']} channels (an entry reads 3, subgraph.c L460)", False
        return _NHWC2NCHW, "", False
    if n.kind == "dwconv":
        k, stride, padding = p["k"], p["stride"], p["padding"]
        if p["dilation"] != (1, 1):
            return 0, "is a dilated depthwise conv (subgraph.c L477)", False
        if p["same"]:
            return 0, ("is a depthwise conv with TFLite SAME padding at stride 2 (subgraph.c L487; an explicit PAD + "
                       "VALID runs)"), True
        if p["multiplier"] != 1:
            return 0, f"is a depthwise conv with channel multiplier {p['multiplier']} (subgraph.c L493)", False
        if stride[0] != stride[1] or stride[0] not in (1, 2):
            return 0, f"is a depthwise conv with strides {stride} (subgraph.c L500-L518)", False
        if k[0] != k[1] or k[0] not in (3, 5):
            return 0, f"is a {k[0]}x{k[1]} depthwise conv (only 3x3 and 5x5, subgraph.c L523-L575)", False
        if padding != (k[0] // 2,) * 4:
            return 0, f"is a {k[0]}x{k[0]} depthwise conv with padding {padding} (subgraph.c L535, L555)", False
        return _NCHW, "", False
    if n.kind == "d2s":
        return _NCHW2NHWC, "", False  # L577
    if n.kind == "binary":
        if n.op not in (OP.ADD, OP.MUL):
            return 0, f"is a {_NAMES[n.op]} (only ADD and MUL run NCHW, subgraph.c L583)", False
        if dims != [4, 4]:
            low = [v for v, d in zip(n.inputs, dims, strict=True) if d != 4 and g.static(v)]
            if low:
                return 0, (f"has the {len(g.shapes[low[0]])}-D constant '{g.names[low[0]]}' (both inputs must be 4-D, "
                           "subgraph.c L590; a (1,1,1,C) constant runs)"), True
            return 0, "has an input that is not 4-D (subgraph.c L590)", False
        first_dims = sum(d != 1 for d in g.shapes[n.inputs[0]])
        if g.static(n.inputs[0]) and first_dims > 1:
            return 0, "has a constant first input that is neither a scalar nor a vector (subgraph.c L598)", False
        if g.static(n.inputs[1]) and first_dims > 1:
            return 0, (f"has the constant '{g.names[n.inputs[1]]}' second: for a static second input XNNPACK counts "
                       "the first input's non-unit dims (subgraph.c L618); the constant first runs"), True
        return _NCHW, "", False
    if n.kind == "resize":
        h, w = g.shapes[n.inputs[0]][1:3]
        if h > 1 and w > 1:
            return _NCHW, "", False
        return 0, f"is a bilinear resize of a {h}x{w} map (needs height and width > 1, subgraph.c L630)", False
    if n.kind in ("unary", "clamp"):
        if dims == [4]:
            return _NCHW, "", False
        return 0, f"is an elementwise op on a {dims[0]}-D input (needs 4-D, subgraph.c L642)", False
    if n.kind in ("mean", "sum"):
        if dims == [4]:
            return _NCHW | _NCHW2NHWC, "", False
        return 0, f"is a reduction of a {dims[0]}-D input (needs 4-D, subgraph.c L652)", False
    if n.p.get("fc"):
        return 0, ("is a FULLY_CONNECTED without keep_num_dims: the delegate puts a reshape before it (delegate.cc "
                   "L4570)"), True
    return 0, f"is a {_NAMES.get(n.op, n.op)} (no NCHW kernel, subgraph.c L661)", n.op == OP.RESHAPE


def _union(g: _Graph, n: _Node, producer: dict[int, _Node]) -> bool:
    """One node's pass over its inputs in `xnn_subgraph_rewrite_for_nchw` (L689-L724, L736-L778): an external or
    incompatible producer spoils it; a compatible one joins its cluster (leader: the larger index). True on a change."""
    update = False
    for v in n.inputs:
        if g.static(v):
            continue
        if v in g.external_in:  # L701, L755
            n.flags |= _INCOMPATIBLE
            n.block = n.block or Block(n.name, f"reads '{g.names[v]}', an input of its delegated partition (a model "
                                               "input or a value from an op XNNPACK does not run, subgraph.c L756)")
            continue
        source = producer[v]
        if source.flags & (_NHWC2NCHW | _NCHW) and not source.flags & _INCOMPATIBLE:
            source.flags &= ~_NCHW2NHWC
            if source.leader != n.leader:
                source.leader = n.leader = max(source.leader, n.leader)
                update = True
        else:
            n.flags |= _INCOMPATIBLE
            n.block = n.block or source.block or Block(source.name, f"{source.why}, and '{n.name}' reads it",
                                                       source.form)
    return update


def _rewrite(g: _Graph) -> bool:
    """`xnn_subgraph_rewrite_for_nchw` up to the gate (subgraph.c L666-L838), statement for statement: each node's
    flags, cluster leader and, for a spoilt cluster, its leader's `block`. False when no exit has a compatible
    producer (L729: nothing runs NCHW)."""
    for i, n in enumerate(g.nodes):
        n.flags, n.why, n.form = _compatibility(g, n) if n.kind != "invalid" else (0, "", False)
        n.leader, n.block = i, None
    producer, consumers = g.index()
    update = False
    for n in g.nodes:  # exits first (L688-L725)
        if n.flags & _NCHW2NHWC:
            update = _union(g, n, producer) or update
    if not update:
        return False
    while update:  # L734-L779
        update = False
        for n in g.nodes:
            if not n.flags & _INCOMPATIBLE and n.flags & (_NCHW | _NCHW2NHWC):
                update = _union(g, n, producer) or update
    for n in g.nodes:  # L781-L787
        leader = g.nodes[n.leader]
        leader.flags |= n.flags & _INCOMPATIBLE
        leader.block = leader.block or n.block
    members = [n for n in g.nodes if not g.nodes[n.leader].flags & _INCOMPATIBLE and n.flags & (_NCHW2NHWC | _NCHW)]
    nchw_consumers: dict[int, int] = {}
    for n in members:  # L788-L811
        for v in n.inputs:
            if not g.static(v):
                nchw_consumers[v] = nchw_consumers.get(v, 0) + 1
    for n in members:  # L813-L838
        for v in n.inputs:
            if g.static(v) or nchw_consumers[v] == consumers[v]:
                continue
            leader = g.nodes[n.leader]
            leader.flags |= _INCOMPATIBLE
            other = next((o for o in g.nodes if v in o.inputs and not o.flags & (_NCHW2NHWC | _NCHW)), None)
            if other is not None:
                block = Block(other.name, f"{other.why}, and reads '{g.names[v]}', a value of the cluster (subgraph.c "
                                          "L834)", other.form)
            else:
                block = Block(producer[v].name, "is an output of the model or of its delegated partition, and the "
                                                "cluster reads it (subgraph.c L340, L834)")
            leader.block = leader.block or block
    return True


def _clusters(g: _Graph) -> list[Cluster]:
    """The clusters of one subgraph that hold an entry (or a conv that would be one but for its padding), each with
    its gate (subgraph.c L840-L888, L902) and the values it would set NCHW (L889-L931)."""
    exits = _rewrite(g)
    groups: dict[int, list[_Node]] = {}
    for n in g.nodes:
        groups.setdefault(n.leader, []).append(n)
    clusters = []
    for leader, nodes in groups.items():
        entries = [n.name for n in nodes if n.flags & _NHWC2NCHW]
        near = [n for n in nodes if n.kind == "conv" and n.p["k"] == (3, 3) and n.p["stride"] == (2, 2)
                and n.p["cin"] == 3 and n.p["groups"] == 1 and not n.flags]
        if not entries and not near:
            continue
        if near and not entries:
            clusters.append(Cluster((near[0].name,), (near[0].name,), (), (), 0, 0, g.hint,
                                    Block(near[0].name, near[0].why, near[0].form)))
            continue
        block = g.nodes[leader].block if g.nodes[leader].flags & _INCOMPATIBLE else None
        if not exits:  # what kept an exit from a compatible producer, or from being one, else that there is none
            block = next((n.block for n in g.nodes if n.flags & _NCHW2NHWC and n.block), None) or next(
                (Block(n.name, n.why, n.form) for n in g.nodes if n.kind in ("mean", "sum", "d2s") and n.why),
                None) or Block(
                entries[0], "reaches no exit: XNNPACK rewrites a partition only when a MEAN or SUM of a 4-D input "
                            "(or a DEPTH_TO_SPACE) reads a compatible node (subgraph.c L729)"
                            + (f"; the partition ends at {g.cut}" if g.cut else ""))
        members = [n for n in nodes if n.flags & (_NCHW | _NCHW2NHWC)]
        if block is None and not members:  # an entry no compatible node reads: name the first reader
            reader = next((r for e in nodes for r in g.nodes if set(e.outputs) & set(r.inputs)), None)
            if reader is not None:
                block = reader.block or Block(reader.name, f"{reader.why}, and reads the entry '{entries[0]}'",
                                              reader.form)
        gated = [n for n in nodes if n.kind == "fc" or (n.kind == "conv" and max(n.p["k"]) == 1)]
        shapes = [g.shapes[n.inputs[1]] for n in gated]
        nchw = {v for n in members for v in n.inputs if not g.static(v)}
        clusters.append(Cluster(
            nodes=tuple(dict.fromkeys(n.name for n in nodes)), entries=tuple(entries),
            exits=tuple(n.name for n in members if n.flags & _NCHW2NHWC), gated=tuple(n.name for n in gated),
            params=sum(s[0] * s[-1] for s in shapes), zeros=sum(g.zeros[n.inputs[1]] for n in gated), hint=g.hint,
            block=block, nchw=tuple(dict.fromkeys(n.name for n in nodes if set(n.outputs) & nchw)),
            dangling=tuple(n.name for n in members if not n.flags & _NCHW2NHWC and not set(n.outputs) & nchw)))
    return clusters


def analyse(m: TFLiteModel) -> list[Cluster]:
    """Every cluster XNNPACK (LiteRT 1.4.0 on ARM) forms in the model, partition by partition, in graph order."""
    zeros, sparse = _values(m)
    cut = next((f"'{m.tensors[op.outputs[0]].name}' ({why})" for op in m.ops
                if not _unpacks(op, zeros) and (why := _delegated(op))), "")
    clusters = []
    for ops in _partitions(m, zeros):
        g = _subgraph(m, ops, zeros, sparse)
        g.cut = cut
        _fuse(g)
        clusters += _clusters(g)
    return clusters


def verdict(m: TFLiteModel) -> dict:
    """What XNNPACK will do with a whole model (the exporter's sidecar): `verdict_of(analyse(m))`."""
    return verdict_of(analyse(m))


def verdict_of(clusters: list[Cluster] | tuple[Cluster, ...]) -> dict:
    """{"sparse": whether any cluster runs sparse, "broken": whether one runs with wrong results, "zero_share" and
    "reason" of the main cluster (a sparse one, else the largest), "clusters": each one's entries, exits, zero share,
    regime, cause ("network", "form" or "ok") and reason}."""
    if not clusters:
        return {"sparse": False, "broken": False, "zero_share": 0.0, "clusters": [],
                "reason": "no entry: XNNPACK's sparse path starts at a 3x3 stride-2 conv on 3 input channels with "
                          "padding 1 on each side (subgraph.c L433-L468)"}
    main = max(clusters, key=lambda c: (c.sparse, c.block is None, c.params))
    return {"sparse": any(c.sparse for c in clusters), "broken": any(c.broken for c in clusters),
            "zero_share": round(main.zero_share, 4), "reason": main.reason(),
            "clusters": [{"entries": list(c.entries), "exits": list(c.exits), "nodes": len(c.nodes),
                          "zero_share": round(c.zero_share, 4), "sparse": c.sparse, "cause": c.cause,
                          "reason": c.reason()} for c in clusters]}
