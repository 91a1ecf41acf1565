"""Export a (pruned) PyTorch model for a target runtime (TFLite or ONNX), BatchNorm folded.

The model is traced with torch.fx; each conv (+ BatchNorm + activation) and linear layer becomes a KernelSpec
written by the runtime's network builder (profiler.runtimes), the same lowering that built the kernels the profiler
measured, so a network's predicted latency is the sum over exactly what is deployed.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.runtimes import Runtime, get_runtime
from profiler.runtimes.base import Network
from pruner.model.graph import AnalysisError, layer_spec


class ExportError(UserError):
    """A model the exporter cannot lower; the message names the module or operation."""


@dataclass(frozen=True)
class ExportedLayer:
    name: str
    spec: KernelSpec  # as run: density 1.0 where stored dense; layout "nchw" inside a cluster XNNPACK runs sparse
    pruned_density: float  # the weights' real nonzero fraction
    storage: str  # "sparse" or "dense"


@dataclass(frozen=True)
class Exported:
    model: bytes
    runtime: Runtime
    layers: tuple[ExportedLayer, ...]
    analysis: tuple = ()  # what the runtime's sparse rules make of the model (XNNPACK: its clusters)

    @property
    def suffix(self) -> str:
        return self.runtime.suffix

    @property
    def verdict(self) -> dict | None:
        """Whether the runtime runs the model in its sparse regime, and why (XNNPACK's verdict; None for runtimes
        without one): the sidecar's record."""
        return self.runtime.verdict(self.analysis)


_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}
_CAT = {torch.cat, torch.concat}
_MODULE_ACT = {nn.ReLU6: "relu6", nn.ReLU: "relu", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
               nn.SiLU: "silu", nn.Sigmoid: "sigmoid"}
_FUNCTIONAL_ACT = {torch.relu: "relu", nn.functional.relu: "relu", nn.functional.relu6: "relu6",
                   nn.functional.hardswish: "hardswish", nn.functional.hardsigmoid: "hardsigmoid",
                   nn.functional.silu: "silu", torch.sigmoid: "sigmoid", nn.functional.sigmoid: "sigmoid"}
_METHOD_ACT = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}
_IDENTITY_MODULES = (nn.Dropout, nn.Identity)


def _type_name(cls: type | str) -> str:
    """A module class as a reader knows it: 'nn.Upsample' for torch's own, the class name for the model's."""
    if isinstance(cls, str):
        return cls
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.") else cls.__qualname__


def _unsupported(gm: fx.GraphModule, node: fx.Node) -> ExportError:
    """The error for a node with no lowering, naming the module (and its type) the user has to change."""
    if node.op == "call_module":
        what = f"module '{node.target}' ({_type_name(type(gm.get_submodule(node.target)))})"
    else:
        kind = {"call_function": "function", "call_method": "method"}.get(node.op, node.op)
        what = f"{kind} '{getattr(node.target, '__name__', node.target)}'"
        if stack := node.meta.get("nn_module_stack"):  # the modules whose forward called it, innermost last
            path, cls = list(stack.values())[-1]
            what += f" in module '{path}' ({_type_name(cls)})"
    return ExportError(f"{what} is not supported by the exporter (fx node {node.name})")


def _activation_of(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The KernelSpec activation a node computes (a module, a function or a tensor method), if it is one."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0):
            return "relu6"
        return _MODULE_ACT.get(type(m))
    if node.op == "call_function":
        return _FUNCTIONAL_ACT.get(node.target)
    if node.op == "call_method":
        return _METHOD_ACT.get(node.target)
    return None


def _is_identity(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _IDENTITY_MODULES)
    return node.op == "call_function" and node.target is nn.functional.dropout


def _is_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Global average pooling: AdaptiveAvgPool2d(1), adaptive_avg_pool2d(x, 1) or x.mean((2, 3))."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))
    if node.op == "call_function" and node.target is nn.functional.adaptive_avg_pool2d:
        return node.args[1] in (1, (1, 1))
    if node.op == "call_method" and node.target == "mean":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return tuple(dims or ()) in ((2, 3), (-2, -1))
    return False


def _is_flatten(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.Flatten)
    return (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )


def _is_shape_query(node: fx.Node) -> bool:
    """x.shape, x.size() and items of them: the integers of a view's arguments, nothing to lower."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    return (node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node)
            and _is_shape_query(node.args[0]))


def _is_unflatten(node: fx.Node) -> bool:
    """A view or reshape of (N, C) to (N, C, 1, 1), e.g. a squeeze-and-excite scale from linear layers."""
    if not (node.op == "call_method" and node.target in ("view", "reshape")) or not isinstance(node.args[0], fx.Node):
        return False
    before, after = node.args[0].meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
    return len(before) == 2 and tuple(after) == (*before, 1, 1)


def _is_mul(node: fx.Node) -> bool:
    """A product of two tensors (scalars are not lowered)."""
    is_mul = (node.op == "call_function" and node.target in _MUL) or (
        node.op == "call_method" and node.target in ("mul", "mul_"))
    return is_mul and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)


def _cat_inputs(node: fx.Node) -> list[fx.Node] | None:
    """The inputs of a concatenation along channels (dim 1 of an NCHW tensor), else None."""
    if node.op != "call_function" or node.target not in _CAT:
        return None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return list(node.args[0]) if dim in (1, -3) and len(node.meta["tensor_meta"].shape) == 4 else None


def _upsample(gm: fx.GraphModule, node: fx.Node) -> tuple[str, bool] | None:
    """(mode, align_corners) of nn.Upsample or F.interpolate in nearest or bilinear mode, else None."""
    if node.op == "call_module" and isinstance(m := gm.get_submodule(node.target), nn.Upsample):
        mode, align = m.mode, bool(m.align_corners)
    elif node.op == "call_function" and node.target is nn.functional.interpolate:
        mode, align = node.kwargs.get("mode", "nearest"), bool(node.kwargs.get("align_corners"))
    else:
        return None
    return (mode, align) if mode in ("nearest", "bilinear") else None


def _avg_pool(gm: fx.GraphModule, node: fx.Node) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of a square nn.AvgPool2d or F.avg_pool2d that counts its padding zeros, else None."""
    if node.op == "call_module" and isinstance(m := gm.get_submodule(node.target), nn.AvgPool2d):
        k, stride, pad, ceil, include, divisor = (m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                  m.count_include_pad, m.divisor_override)
    elif node.op == "call_function" and node.target is nn.functional.avg_pool2d:
        params = dict(zip(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
                          node.args[1:], strict=False)) | node.kwargs
        k = params["kernel_size"]
        stride, pad = params.get("stride") or k, params.get("padding", 0)
        ceil, include, divisor = (params.get("ceil_mode", False), params.get("count_include_pad", True),
                                  params.get("divisor_override"))
    else:
        return None
    if any(not isinstance(v, int) and len(set(v)) > 1 for v in (k, stride, pad)):
        return None
    k, stride, pad = (v if isinstance(v, int) else v[0] for v in (k, stride, pad))
    return None if ceil or divisor or (pad and not include) else (k, stride, pad)


def _fold_bn(weight: np.ndarray, bias: np.ndarray, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BatchNorm into the preceding conv (zeros of pruned weights stay zeros)."""
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    return weight * scale.reshape(-1, *[1] * (weight.ndim - 1)), bias * scale + shift


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _fused_activation(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, str]:
    """The node ending `node`'s output and the activation fused into it (its only user, if it is one)."""
    nxt = _single_user(node)
    act = _activation_of(gm, nxt) if nxt is not None else None
    return (nxt, act) if act else (node, "none")


def _is_layer(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Conv2d | nn.Linear)


@dataclass(frozen=True)
class _Chain:
    """A conv or linear layer with the BatchNorm folded into it and the activation fused after it."""

    spec: KernelSpec
    bn: nn.BatchNorm2d | None
    nodes: tuple[fx.Node, ...]  # the layer's node, its BatchNorm's and its activation's: one output


def _chain(gm: fx.GraphModule, node: fx.Node, block: str) -> _Chain:
    module = gm.get_submodule(node.target)
    in_shape = node.args[0].meta["tensor_meta"].shape
    if isinstance(module, nn.Linear) and len(in_shape) != 2:
        raise ExportError(f"{node.target}: a linear layer on a {len(in_shape)}-D input is not supported")
    h, w = (1, 1) if isinstance(module, nn.Linear) else in_shape[2:]
    nodes, bn = [node], None
    nxt = _single_user(node)
    if nxt is not None and nxt.op == "call_module" and isinstance(gm.get_submodule(nxt.target), nn.BatchNorm2d):
        bn = gm.get_submodule(nxt.target)
        nodes.append(nxt)
    last, act = _fused_activation(gm, nodes[-1])
    if last is not nodes[-1]:
        nodes.append(last)
    try:
        spec = layer_spec(module, int(h), int(w), block)
    except AnalysisError as err:
        raise ExportError(str(err)) from None
    return _Chain(spec.replace(activation=act), bn, tuple(nodes))


@dataclass
class _Walk:
    """One export in progress: the traced module, the network being written, each node's output tensor (`env`),
    the layers' chains and which of them to store dense, the layers written, the nodes already lowered and, once
    finished, the serialised model."""

    gm: fx.GraphModule
    net: Network
    chains: dict[fx.Node, _Chain]
    keep_dense: set[fx.Node]
    env: dict[fx.Node, object] = dataclasses.field(default_factory=dict)
    layers: list[ExportedLayer] = dataclasses.field(default_factory=list)
    done: set[fx.Node] = dataclasses.field(default_factory=set)
    outputs: list = dataclasses.field(default_factory=list)
    model: bytes = b""

    def input_of(self, node: fx.Node):
        return self.env[node.args[0]]


def _write_layer(w: _Walk, node: fx.Node, chain: _Chain) -> None:
    """A conv or linear layer, its BatchNorm folded in and its activation fused, stored sparse or dense."""
    module = w.gm.get_submodule(node.target)
    weight = module.weight.detach().numpy().astype(np.float32)
    bias = module.bias.detach().numpy() if module.bias is not None else np.zeros(chain.spec.cout)
    if chain.bn is not None:
        weight, bias = _fold_bn(weight, bias, chain.bn)
    spec, storage = chain.spec, "sparse" if chain.spec.is_sparse else "dense"
    if node in w.keep_dense:
        spec, storage = spec.replace(density=1.0), "dense"
    y = w.net.kernel(w.input_of(node), spec, weight.astype(np.float32), bias.astype(np.float32), node.target)
    w.layers.append(ExportedLayer(node.target, spec, chain.spec.density, storage))
    for n in chain.nodes:
        w.env[n] = y
        w.done.add(n)


def _write_add(w: _Walk, node: fx.Node, _):
    """An add, the activation after it fused (its node lowered with it)."""
    a, b = node.args[:2]
    last, act = _fused_activation(w.gm, node)
    w.env[last] = y = w.net.add(w.env[a], w.env[b], act, node.name)
    w.done.add(last)
    return y


def _write_pool(w: _Walk, node: fx.Node, _):
    y = w.net.pool(w.input_of(node), node.name)
    if len(node.meta["tensor_meta"].shape) == 2:  # x.mean((2, 3)) without keepdim
        y = w.net.flatten(y, f"{node.name}/flatten")
    return y


def _write_resize(w: _Walk, node: fx.Node, sampling: tuple[str, bool]):
    size = tuple(int(v) for v in node.meta["tensor_meta"].shape[2:])
    return w.net.resize(w.input_of(node), size, *sampling, node.name)


def _max_pool(gm: fx.GraphModule, node: fx.Node) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of an nn.MaxPool2d, else None; dilated or ceil-mode pooling is refused."""
    if node.op != "call_module" or not isinstance(pool := gm.get_submodule(node.target), nn.MaxPool2d):
        return None
    if pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise ExportError(f"{node.target}: dilated or ceil-mode max pooling is not supported")
    return tuple(v if isinstance(v, int) else v[0] for v in (pool.kernel_size, pool.stride, pool.padding))


def _stray_batchnorm(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
        raise ExportError(f"{node.target}: a BatchNorm2d not right after a conv cannot be folded")
    return False


_Match = Callable[[fx.GraphModule, fx.Node], object]
_Write = Callable[[_Walk, fx.Node, object], object]
_HANDLERS: tuple[tuple[_Match, _Write], ...] = (
    # (what a node is: None or False when it is not, else what its writer needs; the writer, returning the node's
    # output), tried in order
    (lambda gm, n: n.op == "call_function" and n.target in _ADD, _write_add),
    (_activation_of, lambda w, n, act: w.net.activation(w.input_of(n), act, n.name)),
    (_is_identity, lambda w, n, _: w.input_of(n)),
    (_is_pool, _write_pool),
    (lambda gm, n: _is_mul(n), lambda w, n, _: w.net.mul(w.input_of(n), w.env[n.args[1]], n.name)),
    (lambda gm, n: _cat_inputs(n), lambda w, n, xs: w.net.concat([w.env[x] for x in xs], n.name)),
    (_upsample, _write_resize),
    (_avg_pool, lambda w, n, pooling: w.net.avg_pool(w.input_of(n), *pooling, n.name)),
    (lambda gm, n: _is_unflatten(n), lambda w, n, _: w.net.unflatten(w.input_of(n), n.name)),
    (lambda gm, n: _is_shape_query(n), lambda w, n, _: None),  # integers of a view's arguments: nothing to write
    (_max_pool, lambda w, n, pooling: w.net.max_pool(w.input_of(n), *pooling, n.name)),
    (_is_flatten, lambda w, n, _: w.net.flatten(w.input_of(n), n.name)),
    (_stray_batchnorm, None),
)


def _write_node(w: _Walk, node: fx.Node) -> None:
    """Lower one fx node by the first handler that matches it; a node none matches is refused, naming its module."""
    if node.op == "placeholder":
        w.env[node] = w.net.input(tuple(node.meta["tensor_meta"].shape))
    elif node.op == "output":
        outs = node.args[0] if isinstance(node.args[0], tuple | list) else (node.args[0],)
        w.outputs = [w.env[o] for o in outs]
    elif node in w.chains:
        _write_layer(w, node, w.chains[node])
    else:
        for matches, write in _HANDLERS:
            if (found := matches(w.gm, node)) is not None and found is not False:
                if (y := write(w, node, found)) is not None:
                    w.env[node] = y
                return
        raise _unsupported(w.gm, node)


def export(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    runtime: Runtime | str,
    prefer_dense: Callable[[list[KernelSpec]], Sequence[bool]] | None = None,
) -> Exported:
    """Lower `model` (eval mode; pruning masks may still be attached) for one runtime (a Runtime, or its name with
    its default block); the model's weights are read in the runtime's sparsity block.

    `prefer_dense(specs)` says, for every sparse layer at once, whether to store it dense because dense is
    faster on the target (Runtime.storage_chooser asks the latency predictor); the choice is recorded per layer.
    """
    runtime = get_runtime(runtime)
    model = model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types on untraceable code
        raise ExportError(f"cannot trace {type(model).__name__} with torch.fx: {err}") from None
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(input_shape))
    chains = {node: _chain(gm, node, runtime.block) for node in gm.graph.nodes if _is_layer(gm, node)}
    sparse = [node for node, chain in chains.items() if chain.spec.is_sparse]
    keep_dense = set()
    if prefer_dense is not None and sparse:
        choices = prefer_dense([chains[n].spec for n in sparse])
        keep_dense = {n for n, dense in zip(sparse, choices, strict=True) if dense}
    walk, analysis = _write(gm, runtime, chains, keep_dense)
    restored = runtime.stored_dense(analysis, {n.target for n in keep_dense}, {n.target for n in sparse})
    if restored is not None:  # storage that would make the runtime run the file wrong or not as priced
        walk, analysis = _write(gm, runtime, chains, {n for n in sparse if n.target in restored})
    as_run = runtime.in_layouts({layer.name: layer.spec for layer in walk.layers}, analysis)
    layers = [dataclasses.replace(layer, spec=as_run[layer.name]) for layer in walk.layers]
    return Exported(walk.model, runtime, tuple(layers), analysis)


def _write(gm: fx.GraphModule, runtime: Runtime, chains: dict[fx.Node, _Chain], keep_dense: set[fx.Node]
           ) -> tuple[_Walk, tuple]:
    """The traced model written for the runtime, `keep_dense` layers stored dense, and the runtime's analysis."""
    walk = _Walk(gm, runtime.network(), chains, keep_dense)
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node not in walk.done:
                _write_node(walk, node)
    walk.model = walk.net.finish(walk.outputs)
    return walk, runtime.analyse(walk.net)
