"""Model analysis: channel groups (torch-pruning's DependencyGraph behind a small adapter) and layer shapes.

Everything the rest of the pruner knows about a model's structure comes from `analyze`: the conv and
linear layers in execution order with their input sizes, the channel groups (one width gene each) and
which layers may be weight-pruned. Only this module touches torch-pruning.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

from profiler.errors import UserError
from profiler.kernel import KernelSpec

KINDS = ("first", "strided", "residual", "last", "general")
"""Layer kinds that set search bounds: first (reads the model input), strided, residual (output joins an
add), last (the final non-depthwise conv and the layers after it), general."""


class AnalysisError(UserError):
    """A model the pruner cannot analyse or prune correctly; the message names the module at fault."""


def layer_spec(module: nn.Conv2d | nn.Linear, h: int, w: int, block: str) -> KernelSpec:
    """The KernelSpec of a conv or linear layer with input size h x w, at its weights' nonzero fraction."""
    density = round(float((module.weight != 0).float().mean()), 6)
    if isinstance(module, nn.Linear):
        return KernelSpec("fc", 1, 1, module.in_features, module.out_features, density=density, block=block)
    groups, cin, cout = module.groups, module.in_channels, module.out_channels
    if groups > 1 and groups == cin != cout:
        raise AnalysisError(f"conv with groups={groups}, cin={cin}, cout={cout}: a depthwise conv with a channel "
                          "multiplier is not supported")
    if module.kernel_size[0] != module.kernel_size[1] or module.padding != (module.kernel_size[0] // 2,) * 2:
        raise AnalysisError(f"conv {module}: needs a square kernel with padding k // 2")
    if module.dilation != (1, 1) or module.stride[0] != module.stride[1]:
        raise AnalysisError(f"conv {module}: dilation and unequal strides are not supported")
    op = "dwconv" if groups > 1 and groups == cin == cout else "conv"
    return KernelSpec(
        op,
        h,
        w,
        cin,
        cout,
        module.kernel_size[0],
        module.stride[0],
        groups,
        density=1.0 if groups > 1 else density,  # depthwise and grouped convs are never weight-pruned
        block=block,
    )


@dataclass(frozen=True)
class Layer:
    """A conv or linear layer of the analysed model: its shape, kinds and the channel groups it touches.

    `out_groups` / `in_groups` pair a group index with how many of this layer's output / input channels
    each group channel stands for (1 for convs; H*W for a linear layer reading a flattened feature map).
    """

    name: str
    op: str
    h: int
    w: int
    cin: int
    cout: int
    k: int
    stride: int
    groups: int
    activation: str
    kinds: tuple[str, ...]
    out_groups: tuple[tuple[int, int], ...]
    in_groups: tuple[tuple[int, int], ...]
    prunable: bool

    def channels(self, group_channels: Sequence[int], full: Sequence[int]) -> tuple[int, int]:
        """(cin, cout) of this layer when the groups have `group_channels` instead of `full` channels."""

        def narrowed(count: int, links: tuple[tuple[int, int], ...]) -> int:
            return count - sum((full[g] - group_channels[g]) * per for g, per in links)

        return narrowed(self.cin, self.in_groups), narrowed(self.cout, self.out_groups)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must keep one width: the layers producing them (root first) and their kinds."""

    index: int
    channels: int
    layers: tuple[str, ...]
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class ModelGraph:
    """The analysed model: layers in execution order, prunable channel groups, the input shape used."""

    layers: tuple[Layer, ...]
    groups: tuple[ChannelGroup, ...]
    input_shape: tuple[int, ...]

    @property
    def prunable(self) -> tuple[Layer, ...]:
        """The weight-prunable layers, one density gene each, in execution order."""
        return tuple(layer for layer in self.layers if layer.prunable)

    @property
    def full_channels(self) -> tuple[int, ...]:
        return tuple(g.channels for g in self.groups)

    def layer_channels(self, group_channels: Sequence[int]) -> dict[str, tuple[int, int]]:
        """(cin, cout) of every layer, by name, for the given channels per group."""
        return {layer.name: layer.channels(group_channels, self.full_channels) for layer in self.layers}

    def kernel_specs(
        self, group_channels: Sequence[int], densities: Mapping[str, float], block: str
    ) -> dict[str, KernelSpec]:
        """A KernelSpec per conv and linear layer of the narrowed model, by name (densities by layer name)."""
        specs = {}
        for layer in self.layers:
            cin, cout = layer.channels(group_channels, self.full_channels)
            specs[layer.name] = KernelSpec(
                layer.op, layer.h, layer.w, cin, cout, layer.k, layer.stride,
                cin if layer.op == "dwconv" else layer.groups,
                density=densities.get(layer.name, 1.0), block=block, activation=layer.activation,
            )  # fmt: skip
        return specs


@dataclass(frozen=True)
class _Call:
    """One call of a leaf module during shape propagation."""

    name: str
    module: nn.Module
    input: torch.Tensor
    output: torch.Tensor


_NAMED_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "hardswish": "hardswish",
                      "hardswish_": "hardswish", "hardsigmoid": "hardsigmoid", "hardsigmoid_": "hardsigmoid",
                      "silu": "silu", "silu_": "silu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}


def _activation_of(name: str, args: tuple, kwargs: dict) -> str | None:
    """The KernelSpec activation a torch function call computes (profiler.kernel.ACTIVATIONS), if it is one."""
    if name in _NAMED_ACTIVATIONS:
        return _NAMED_ACTIVATIONS[name]
    if name in ("hardtanh", "hardtanh_", "clamp", "clamp_", "clip", "clip_"):
        lo = kwargs.get("min_val", kwargs.get("min", args[1] if len(args) > 1 else None))
        hi = kwargs.get("max_val", kwargs.get("max", args[2] if len(args) > 2 else None))
        return {(0, 6): "relu6", (0, None): "relu"}.get((lo, hi))
    return None


class _ActivationRecorder(TorchFunctionMode):
    """Records which tensors go through an activation, whether from a module or a functional call."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[tuple[torch.Tensor, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        act = _activation_of(getattr(func, "__name__", ""), args, kwargs)
        if act and args and isinstance(args[0], torch.Tensor):
            self.inputs.append((args[0], act))
        return func(*args, **kwargs)


@dataclass(frozen=True)
class _Trace:
    """Leaf module calls in execution order, and the tensors that went through an activation."""

    calls: list[_Call]
    activations: list[tuple[torch.Tensor, str]]
    output: torch.Tensor


def _trace(model: nn.Module, example: torch.Tensor) -> _Trace:
    """Run the model once (eval mode, no grad, mode restored), recording leaf module calls and activations."""
    calls: list[_Call] = []
    recorder = _ActivationRecorder()

    def hook(name: str):
        def record(module, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                calls.append(_Call(name, module, inputs[0], output))

        return record

    entered = ["(none)"]

    def enter(name: str):
        def record(module, inputs):
            entered[0] = f"'{name}' ({type(module).__name__})"

        return record

    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook(name)) for name, m in leaves]
    handles += [m.register_forward_pre_hook(enter(name)) for name, m in leaves]
    training = model.training
    try:
        model.eval()
        with torch.no_grad(), recorder:
            output = model(example)
    except Exception as err:  # a model that fails on the example input is the user's to fix
        shape = tuple(example.shape)
        raise AnalysisError(
            f"the model's forward pass fails on an input of shape {shape} at or after module {entered[0]}: {err}"
        ) from err
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return _Trace(calls, recorder.inputs, output)


def _check_module(name: str, module: nn.Module) -> None:
    """Refuse a layer no KernelSpec describes or torch-pruning would resize wrongly, naming it."""
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0]
        if module.groups > 1 and module.groups == module.in_channels != module.out_channels:
            raise AnalysisError(
                f"module '{name}' ({kind}) is a depthwise conv with a channel multiplier "
                f"({module.in_channels} -> {module.out_channels}); the pruner cannot keep its channels coupled"
            )
        if (
            module.kernel_size != (k, k)
            or k % 2 == 0
            or module.padding != (k // 2, k // 2)
            or module.dilation != (1, 1)
            or module.padding_mode != "zeros"
            or module.stride[0] != module.stride[1]
        ):
            raise AnalysisError(
                f"module '{name}' ({kind}) has kernel {module.kernel_size}, stride {module.stride}, padding "
                f"{module.padding}, dilation {module.dilation}; supported convs are square, odd, padded k // 2, "
                "undilated, with equal strides"
            )
    elif not isinstance(module, nn.Linear | nn.BatchNorm2d) and any(True for _ in module.parameters(False)):
        raise AnalysisError(
            f"module '{name}' ({kind}) holds parameters the pruner cannot resize; supported parameterised "
            "layers are Conv2d, BatchNorm2d and Linear"
        )


def _check_call(call: _Call, seen: set[str]) -> None:
    """Refuse a module called twice, or a parameter-free module that changes the channel count."""
    m, kind = call.module, type(call.module).__name__
    if isinstance(m, nn.Conv2d | nn.Linear):
        if call.name in seen:
            raise AnalysisError(f"module '{call.name}' ({kind}) is called more than once per forward pass")
        seen.add(call.name)
        if isinstance(m, nn.Linear) and call.input.dim() != 2:
            raise AnalysisError(
                f"module '{call.name}' ({kind}) reads a {call.input.dim()}-D input; only (batch, features) "
                "inputs to linear layers are supported"
            )
    elif (
        not isinstance(m, nn.Flatten | nn.BatchNorm2d)
        and call.input.dim() == call.output.dim() >= 2
        and call.input.shape[1] != call.output.shape[1]
    ):
        raise AnalysisError(
            f"module '{call.name}' ({kind}) changes the channel count "
            f"({call.input.shape[1]} -> {call.output.shape[1]}); the pruner cannot follow it"
        )


def _activation(trace: _Trace, i: int) -> str:
    """The activation applied to layer call `i`'s output, through its BatchNorm if any; else "none"."""
    out = trace.calls[i].output
    for call in trace.calls[i + 1 :]:
        if call.input is out and isinstance(call.module, nn.BatchNorm2d):
            out = call.output
    return next((act for tensor, act in trace.activations if tensor is out), "none")


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of `model` (its training mode is restored afterwards)."""
    training = model.training
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        model.train(training)


def _is_dw(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _is_grouped(m: nn.Module) -> bool:
    """A grouped conv that is not depthwise: its channels come in groups that narrowing would have to keep even."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and not _is_dw(m)


def _is_out(dg: tp.DependencyGraph, dep) -> bool:
    return dg.is_out_channel_pruning_fn(dep.handler)


def _is_output(dg: tp.DependencyGraph, dep) -> bool:
    """True when `dep` resizes the model's output (the classifier's classes, or a tensor returned as is)."""
    sink = not dep.target.outputs
    return sink and (_is_out(dg, dep) or isinstance(dep.target.module, tp.ops._OutputOp))


def _raw_groups(dg: tp.DependencyGraph, model: nn.Module) -> list[dict]:
    """The channel groups: per group, (layer name, out?, count) for its convs and linears, and whether it is fixed.

    A group that reaches the model's output (e.g. the classifier's classes) is fixed, and so is one a grouped conv
    reads or writes (torch-pruning would not keep its groups even): they keep their width and get no gene.
    """
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in dg.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        links = [
            (names[dep.target.module], _is_out(dg, dep), len(idxs))
            for dep, idxs in group
            if isinstance(dep.target.module, nn.Conv2d | nn.Linear)
        ]
        fixed = any(_is_output(dg, dep) or _is_grouped(dep.target.module) for dep, _ in group)
        groups.append({"channels": len(group[0][1]), "links": links, "fixed": fixed})
    return groups


def analyze(
    model: nn.Module, input_shape: Sequence[int], dense_first: bool = True, dense_classifier: bool = True
) -> ModelGraph:
    """Find the layers, their input sizes and the channel groups of `model`, and validate them by pruning.

    `dense_first` keeps the layers reading the model input dense, `dense_classifier` the layers producing
    the model's output, as JCW does. Depthwise and grouped convs are never weight-pruned.
    Raises AnalysisError naming the module when the model holds a layer the pruner cannot handle.
    """
    check_unmasked(model)
    example = torch.zeros(*input_shape)
    trace, layer_calls = _checked_trace(model, example)
    calls = trace.calls
    order = {calls[i].name: pos for pos, i in enumerate(layer_calls)}
    links = _GroupLinks.of(dependency_graph(model, example), model, calls, layer_calls, order)
    last_conv = max(i for i in layer_calls if isinstance(calls[i].module, nn.Conv2d) and not _is_dw(calls[i].module))
    dense_producers = [sum(not _is_dw(calls[layer_calls[order[n]]].module) for n in names)
                       for names in links.producers]
    layers = []
    for i in layer_calls:
        call, m = calls[i], calls[i].module
        kinds = []
        if call.name not in links.reads_a_layer and not _is_dw(m):
            kinds.append("first")
        if isinstance(m, nn.Conv2d) and m.stride[0] > 1:
            kinds.append("strided")
        if any(dense_producers[g] > 1 for g, _ in links.outputs.get(call.name, [])):
            kinds.append("residual")
        if i >= last_conv:
            kinds.append("last")
        output_layer = call.name not in links.outputs
        prunable = not (dense_first and "first" in kinds) and not (dense_classifier and output_layer)
        layers.append(_layer(call, (*kinds, "general"), links, _activation(trace, i), prunable))
    by_name = {layer.name: layer for layer in layers}
    groups = tuple(
        ChannelGroup(index, channels, tuple(names),
                     tuple(k for k in KINDS if any(k in by_name[n].kinds for n in names)))
        for index, (channels, names) in enumerate(zip(links.channels, links.producers, strict=True))
    )
    graph = ModelGraph(tuple(layers), groups, tuple(int(s) for s in input_shape))
    _validate(model, graph)
    return graph


def _checked_trace(model: nn.Module, example: torch.Tensor) -> tuple:
    """The model's traced calls, every module and call checked (AnalysisError naming it), and the indices of the
    conv and linear layers' calls."""
    for name, module in model.named_modules():
        _check_module(name, module)
    trace = _trace(model, example)
    seen: set[str] = set()
    for call in trace.calls:
        _check_call(call, seen)
    layer_calls = [i for i, c in enumerate(trace.calls) if isinstance(c.module, nn.Conv2d | nn.Linear)]
    if not layer_calls:
        raise AnalysisError("the model has no Conv2d or Linear layer to prune")
    return trace, layer_calls


@dataclass(frozen=True)
class _GroupLinks:
    """The prunable channel groups torch-pruning finds, in execution order: each group's channel count and producing
    layers, and per layer the (group, channels per group channel) it writes and reads; `reads_a_layer` names the
    layers whose input another layer produces."""

    channels: tuple[int, ...]
    producers: tuple[tuple[str, ...], ...]
    outputs: dict[str, list[tuple[int, int]]]
    inputs: dict[str, list[tuple[int, int]]]
    reads_a_layer: frozenset[str]

    @classmethod
    def of(cls, dg, model: nn.Module, calls: list, layer_calls: list[int], order: dict[str, int]) -> _GroupLinks:
        every = _raw_groups(dg, model)
        reads_a_layer = frozenset(name for g in every for name, out, _ in g["links"] if not out)
        found = sorted((g for g in every if not g["fixed"]),
                       key=lambda g: min(order[n] for n, out, _ in g["links"] if out))
        outputs: dict[str, list[tuple[int, int]]] = {}
        inputs: dict[str, list[tuple[int, int]]] = {}
        for index, g in enumerate(found):
            for name, out, count in g["links"]:
                (outputs if out else inputs).setdefault(name, []).append((index, count // g["channels"]))
        for i in layer_calls:  # torch-pruning couples a depthwise conv's input to its output in one dependency
            if _is_dw(calls[i].module):
                inputs[calls[i].name] = outputs.get(calls[i].name, [])
        producers = tuple(tuple(sorted({n for n, out, _ in g["links"] if out}, key=order.get)) for g in found)
        return cls(tuple(g["channels"] for g in found), producers, outputs, inputs, reads_a_layer)


def _layer(call, kinds: tuple[str, ...], links: _GroupLinks, activation: str, prunable: bool) -> Layer:
    """The Layer of a conv or linear layer's call (grouped and depthwise convs are never weight-pruned)."""
    m = call.module
    if isinstance(m, nn.Conv2d):
        op = "dwconv" if _is_dw(m) else "conv"
        h, w = call.input.shape[2:]
        cin, cout, k, stride, groups = m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups
    else:
        op, h, w, cin, cout, k, stride, groups = "fc", 1, 1, m.in_features, m.out_features, 1, 1, 1
    return Layer(name=call.name, op=op, h=int(h), w=int(w), cin=cin, cout=cout, k=k, stride=stride, groups=groups,
                 activation=activation, kinds=kinds, out_groups=tuple(links.outputs.get(call.name, [])),
                 in_groups=tuple(links.inputs.get(call.name, [])), prunable=groups == 1 and prunable)


def _filter_l1(dg: tp.DependencyGraph, group) -> torch.Tensor:
    """Per channel of a full group: the L1 norms of its filters, summed over the non-depthwise producers."""
    score = torch.zeros(len(group[0].idxs))
    for item in group:
        m = item.dep.target.module
        if _is_out(dg, item.dep) and isinstance(m, nn.Conv2d | nn.Linear) and getattr(m, "groups", 1) == 1:
            l1 = m.weight.detach()[item.idxs].abs().flatten(1).sum(1)
            score.index_add_(0, torch.tensor(item.root_idxs), l1)
    return score


def check_unmasked(model: nn.Module) -> None:
    """Refuse a model with torch.nn.utils.prune masks: torch-pruning would resize the wrong tensors."""
    masked = next((n for n, m in model.named_modules() if hasattr(m, "weight_mask")), None)
    if masked is not None:
        raise UserError(f"module '{masked}' holds a weight mask; use the dense model (or make_permanent first)")


def narrow(model: nn.Module, graph: ModelGraph, group_channels: Sequence[int], importance: str = "l1") -> None:
    """Channel-prune `model` in place so group i keeps `group_channels[i]` channels, the most important ones.

    `importance` ranks channels: "l1" (L1 norm of the producing filters) or "bn" (BatchNorm scale,
    through torch-pruning; falls back to L1 for a group without BatchNorm).
    """
    if importance not in ("l1", "bn"):
        raise UserError(f"unknown channel importance {importance!r}; expected 'l1' or 'bn'")
    check_unmasked(model)
    dg = dependency_graph(model, torch.zeros(*graph.input_shape))
    modules = dict(model.named_modules())
    for group, keep in zip(graph.groups, group_channels, strict=True):
        if not 1 <= keep <= group.channels:
            raise UserError(f"channel group {group.index} ({group.layers[0]}) cannot keep {keep} of {group.channels}")
        if keep == group.channels:
            continue
        root = modules[group.layers[0]]
        prune_out = dg.get_pruner_of_module(root).prune_out_channels
        full = dg.get_pruning_group(root, prune_out, list(range(group.channels)))
        score = tp.importance.BNScaleImportance()(full) if importance == "bn" else None
        score = _filter_l1(dg, full) if score is None else score
        drop = torch.argsort(score, stable=True)[: group.channels - keep]
        dg.get_pruning_group(root, prune_out, sorted(drop.tolist())).prune()


def measured_channels(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(cin, cout) of the named conv and linear layers of a real model."""
    modules = dict(model.named_modules())
    return {
        n: (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)
        for n in names
        for m in [modules[n]]
    }


def _validate(model: nn.Module, graph: ModelGraph) -> None:
    """Narrow a copy of every group and check each layer's channels and the output shape by a forward pass."""
    trial = copy.deepcopy(model)
    example = torch.zeros(*graph.input_shape)
    expected_out = _trace(trial, example).output.shape
    keep = [c - max(1, c // 4) if c > 1 else c for c in graph.full_channels]
    try:
        narrow(trial, graph, keep)
    except Exception as err:
        raise AnalysisError(f"torch-pruning cannot narrow the channel groups of this model: {err}") from err
    actual = measured_channels(trial, [layer.name for layer in graph.layers])
    for name, want in graph.layer_channels(keep).items():
        if actual[name] != want:
            raise AnalysisError(
                f"module '{name}': narrowing gives (cin, cout) = {actual[name]}, expected {want}; "
                "an op next to it changes channels in a way the pruner cannot follow"
            )
    try:
        out = _trace(trial, example).output
    except AnalysisError as err:
        raise AnalysisError(
            f"after narrowing the channel groups, {err}; an op outside the supported layers "
            "(Conv2d, BatchNorm2d, Linear, activations, pooling, adds, concats) probably changes channels"
        ) from err
    if out.shape != expected_out:
        raise AnalysisError(f"narrowing changes the model's output shape {tuple(expected_out)} -> {tuple(out.shape)}")


def traced_kernel_specs(model: nn.Module, input_shape: Sequence[int], block: str) -> dict[str, KernelSpec]:
    """KernelSpecs of a real (e.g. pruned) model by shape propagation, with each layer's measured density."""
    trace = _trace(model, torch.zeros(*input_shape))
    specs = {}
    for i, call in enumerate(trace.calls):
        m = call.module
        if not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        h, w = (1, 1) if isinstance(m, nn.Linear) else call.input.shape[2:]
        spec = layer_spec(m, int(h), int(w), block)
        specs[call.name] = spec.replace(activation=_activation(trace, i))
    return specs
