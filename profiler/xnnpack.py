"""XNNPACK's sparse-inference rules, in one place: which part of a TFLite graph XNNPACK runs in NCHW ("sparse
inference", every node on a CHW kernel, 1x1 convs as SpMM) and which it runs dense NHWC.

Source: XNNPACK `src/subgraph.c`, `xnn_check_nchw_compatibility` (which nodes may run in NCHW) and
`xnn_subgraph_rewrite_for_nchw` (clusters and the sparsity gate), as run by LiteRT's XNNPACK delegate. A
cluster of nodes runs NCHW only when all of these hold:

- it is entered through a 3x3 stride-2 conv reading exactly 3 channels with padding 1 on every side (an explicit
  PAD + VALID conv, which XNNPACK fuses; TFLite's SAME flag is refused);
- every node inside is NCHW-compatible: 1x1 convs (stride 1, no padding, not grouped), fully connected layers, 3x3
  and 5x5 depthwise convs (stride 1 or 2, symmetric padding k // 2, depth multiplier 1), add and multiply, unary
  elementwise ops, bilinear resize; and every value inside is consumed only by nodes of the cluster;
- it leaves through a MEAN / global average pool over height and width (or depth-to-space);
- its 1x1 convs and fully connected layers together hold MORE than 2/3 zero weights (`num_zeroes * 3 <=
  num_params * 2` keeps it dense).

Otherwise every node of the cluster runs dense NHWC, whatever each layer's density. Nodes whose inputs are all
constants (DENSIFY of a sparse weight) are weight preprocessing, not graph nodes. `analyse` applies the rules to
a `TFLiteModel` (the profiler's harness and the exporter build the same kind), `passes_gate` is the gate alone,
for pricing candidates whose structure is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiler.tflite_writer import OP, TFLiteModel, decode_padding

GATE = 2 / 3
"""A cluster runs sparse when more than this share of its 1x1-conv and fully-connected weights are zero."""

_UNARY = {OP.RELU, OP.RELU6, OP.HARD_SWISH, OP.LOGISTIC, OP.TANH, OP.ELU, OP.LEAKY_RELU, OP.ABS, OP.NEG,
          OP.SQUARE, OP.SQRT, OP.FLOOR, OP.CEIL, OP.ROUND, OP.RELU_N1_TO_1}
_BINARY = {OP.ADD, OP.MUL}


def passes_gate(zeros: float, params: float) -> bool:
    """XNNPACK's sparsity gate: True when more than 2/3 of the cluster's 1x1/FC weights are zero."""
    return params > 0 and not zeros * 3 <= params * 2


@dataclass(frozen=True)
class Cluster:
    """A subgraph from an entry conv: its nodes (op names), the 1x1 convs / FC layers the gate counts, their
    weights and zeros, and why it cannot run NCHW ("" when its structure allows it)."""

    entry: str
    nodes: tuple[str, ...]
    gated: tuple[str, ...]
    params: int
    zeros: int
    blocked: str

    @property
    def zero_share(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    @property
    def sparse(self) -> bool:
        """Whether XNNPACK runs this cluster in NCHW (sparse inference)."""
        return not self.blocked and passes_gate(self.zeros, self.params)

    def reason(self) -> str:
        """Why the cluster runs as it does, in one line."""
        if self.blocked:
            return self.blocked
        share = f"{self.zero_share:.1%} of its 1x1/FC weights are zero"
        return f"{share} (> 2/3: runs sparse)" if self.sparse else f"only {share} (needs more than 2/3)"


@dataclass(frozen=True)
class _Node:
    index: int
    name: str
    code: int
    inputs: tuple[int, ...]  # activation tensors (constants and weight preprocessing left out)
    outputs: tuple[int, ...]
    kind: str  # "entry", "exit", "inside" or "blocked"
    why: str  # for "blocked": what makes the node NCHW-incompatible


def _constant(m: TFLiteModel, tensor: int, folded: set[int]) -> bool:
    return m.tensors[tensor].buffer != 0 or tensor in folded


def _nodes(m: TFLiteModel) -> list[_Node]:
    """The graph's nodes, PADs fused into the conv after them, each classified by XNNPACK's NCHW rules."""
    folded: set[int] = set()  # outputs of ops on constants only (DENSIFY of a sparse weight): static weights
    pads: dict[int, tuple[int, tuple]] = {}  # output of a zero PAD -> (its input, its paddings)
    for op in m.ops:
        if all(_constant(m, t, folded) for t in op.inputs):
            folded.update(op.outputs)
        elif op.code == OP.PAD:
            pads[op.outputs[0]] = (op.inputs[0], tuple(map(tuple, _array(m, op.inputs[1]))))
    consumers: dict[int, int] = {}
    for op in m.ops:
        for t in op.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    nodes = []
    for i, op in enumerate(m.ops):
        if op.outputs[0] in folded:
            continue
        inputs = [t for t in op.inputs if not _constant(m, t, folded)]
        padding = (0, 0, 0, 0)
        if op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D) and inputs and inputs[0] in pads:
            source, p = pads[inputs[0]]
            if consumers.get(inputs[0]) == 1 and p[0] == (0, 0) and p[3] == (0, 0):
                inputs[0], padding = source, (p[1][0], p[1][1], p[2][0], p[2][1])
        if op.code == OP.PAD and consumers.get(op.outputs[0]) == 1 and _fused_into_next(m, op):
            continue
        kind, why = _classify(m, op, padding)
        nodes.append(_Node(i, m.tensors[op.outputs[0]].name, op.code, tuple(inputs), tuple(op.outputs), kind, why))
    return nodes


def _fused_into_next(m: TFLiteModel, pad) -> bool:
    """A zero PAD of H and W read only by a conv or depthwise conv: XNNPACK folds it into that conv's padding."""
    out = pad.outputs[0]
    paddings = _array(m, pad.inputs[1])
    reader = next(op for op in m.ops if out in op.inputs)
    return reader.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D) and tuple(paddings[0]) == (0, 0) and \
        tuple(paddings[3]) == (0, 0)


def _array(m: TFLiteModel, tensor: int) -> np.ndarray:
    t = m.tensors[tensor]
    return np.frombuffer(m.buffers[t.buffer], dtype=np.int32).reshape(t.shape)


def _classify(m: TFLiteModel, op, padding: tuple[int, int, int, int]) -> tuple[str, str]:
    """("entry" | "exit" | "inside" | "blocked", why) for one node, by xnn_check_nchw_compatibility."""
    name = m.tensors[op.outputs[0]].name
    rank = len(m.tensors[op.inputs[0]].shape)
    if op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D):
        _, fields = op.options
        weight = m.tensors[op.inputs[1]].shape  # OHWI, or (1, kh, kw, C) for depthwise
        k, stride, cin = weight[1], fields["StrideH"], m.tensors[op.inputs[0]].shape[-1]
        same = decode_padding(fields["Padding"]) == "same" and k > 1
        if op.code == OP.CONV_2D:
            if weight[3] != cin:
                return "blocked", f"grouped conv '{name}' ({cin // weight[3]} groups) is not NCHW-compatible"
            if k == 3 and stride == 2 and cin == 3 and padding == (1, 1, 1, 1) and not same:
                return "entry", ""
            if k == 1 and stride == 1 and padding == (0, 0, 0, 0):
                return "inside", ""
            why = "SAME padding flag" if same else f"{k}x{k} stride-{stride} conv on {cin} channels"
            return "blocked", f"conv '{name}' ({why}) is not NCHW-compatible"
        p = k // 2
        if k in (3, 5) and stride in (1, 2) and padding == (p, p, p, p) and not same and fields["DepthMultiplier"] == 1:
            return "inside", ""
        why = f"{k}x{k}, stride {stride}, padding {padding}"
        return "blocked", f"depthwise conv '{name}' ({why}) is not NCHW-compatible"
    if op.code == OP.FULLY_CONNECTED:
        return "inside", ""
    if op.code == OP.MEAN:
        axes = sorted(int(a) % 4 for a in _array(m, op.inputs[1]).ravel())
        return ("exit", "") if rank == 4 and axes == [1, 2] else ("blocked", f"MEAN '{name}' not over height and width")
    if op.code == OP.DEPTH_TO_SPACE:
        return "exit", ""
    if (op.code in _UNARY or op.code in _BINARY or op.code == OP.RESIZE_BILINEAR) and rank == 4:
        return "inside", ""
    return "blocked", f"'{name}' ({_op_name(op.code)}) is not NCHW-compatible"


def _op_name(code: int) -> str:
    return next((k for k, v in vars(OP).items() if v == code and not k.startswith("_")), str(code))


def _gated_weights(m: TFLiteModel, op) -> tuple[int, int]:
    """(weights, zeros) of a 1x1 conv or fully connected node, counted on its stored (possibly sparse) weight."""
    tensor = op.inputs[1]
    producer = next((o for o in m.ops if tensor in o.outputs), None)
    if producer is not None:  # DENSIFY: count the sparse tensor's stored values
        tensor = producer.inputs[0]
    t = m.tensors[tensor]
    values = np.frombuffer(m.buffers[t.buffer], dtype=np.float32)
    size = int(np.prod(t.shape))
    return size, size - int(np.count_nonzero(values))


def analyse(m: TFLiteModel) -> list[Cluster]:
    """Every cluster of the graph (one per entry conv), with its gate's counts and what blocks it, if anything."""
    nodes = _nodes(m)
    producer = {t: n for n in nodes for t in n.outputs}
    readers: dict[int, list[_Node]] = {}
    for n in nodes:
        for t in n.inputs:
            readers.setdefault(t, []).append(n)
    outputs = set(m.outputs)
    clusters = []
    for entry in (n for n in nodes if n.kind == "entry"):
        members, todo, blocked = {entry.index: entry}, [entry], ""
        while todo:
            node = todo.pop()
            if node.kind == "exit":
                continue
            for t in node.outputs:
                if t in outputs:
                    blocked = blocked or f"'{node.name}' is a graph output inside the cluster (no exit before it)"
                for reader in readers.get(t, []):
                    if reader.kind == "blocked":
                        blocked = blocked or reader.why
                    elif reader.kind == "entry":
                        blocked = blocked or f"'{reader.name}' reads a value inside the cluster"
                    elif reader.index not in members:
                        members[reader.index] = reader
                        todo.append(reader)
        for node in members.values():
            if node is entry:
                continue
            for t in node.inputs:
                source = producer.get(t)
                if source is None or source.index not in members:
                    what = "a graph input" if source is None else f"'{source.name}', outside the cluster"
                    blocked = blocked or f"'{node.name}' reads {what}"
        if not any(n.kind == "exit" for n in members.values()):
            blocked = blocked or "no MEAN over height and width (global pooling) ends the cluster"
        gated = [n for n in sorted(members.values(), key=lambda n: n.index)
                 if n.code == OP.FULLY_CONNECTED or (n.code == OP.CONV_2D and n.kind == "inside")]
        counts = [_gated_weights(m, m.ops[n.index]) for n in gated]
        clusters.append(Cluster(entry.name, tuple(n.name for n in sorted(members.values(), key=lambda n: n.index)),
                                tuple(n.name for n in gated), sum(c[0] for c in counts), sum(c[1] for c in counts),
                                blocked))
    return clusters


def verdict(m: TFLiteModel) -> dict:
    """What XNNPACK will do with a whole model: {"sparse", "zero_share", "reason"} (the exporter's sidecar)."""
    return verdict_of(analyse(m))


def verdict_of(clusters: list[Cluster] | tuple[Cluster, ...]) -> dict:
    """`verdict` from a model's clusters: its main cluster (a sparse one, else the largest) decides."""
    if not clusters:
        return {"sparse": False, "zero_share": 0.0,
                "reason": "no entry: XNNPACK's sparse path starts at a 3x3 stride-2 conv on 3 input channels with "
                          "explicit padding 1"}
    best = max(clusters, key=lambda c: (c.sparse, not c.blocked, c.params))
    return {"sparse": best.sparse, "zero_share": round(best.zero_share, 4), "reason": best.reason()}
