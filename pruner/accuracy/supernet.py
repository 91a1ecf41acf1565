"""JCW's weight-sharing supernet over channel widths and weight densities, built from a trained model.

Slicing: once, at construction, each channel group's channels are reordered by importance (the L1 norm of
their producing filters, largest first) in a copy of the model; the reordering preserves the function. A
candidate keeping k channels of a group then keeps the first k, the most important ones, so its weights are a
prefix slice of every shared tensor. Its block masks are recomputed from the sliced weights' magnitudes
(profiler.sparsity.block_mask, the device's block) whenever the sub-network is built.

Training follows US-Nets / OFA: each step trains the largest candidate on the labels and the smallest and two
random candidates (the sandwich rule) by distillation from the largest's soft targets. Each candidate's
sub-network is a standalone pruned copy; its gradients, masked, are added back into the shared weights.
Models with channel concatenations (a layer reading several channel groups) are not supported.

The shared weights live on one torch device (`build_supernet(..., device=)`). Under `torchrun` training is
data-parallel: each process reads its shard of the loader, draws the same candidates (same seed) and the
shared gradients are averaged across processes before each step, which is what DistributedDataParallel does
for a module's own forward pass (the sub-networks are copies, so DDP's hooks cannot do it here).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from profiler.errors import UserError
from profiler.sparsity import block_mask
from pruner.accuracy.estimate import CachedEstimator, ProxyData, calibrated_evaluation, torch_threads
from pruner.accuracy.hardware import is_distributed, is_main_process, set_epoch, shard
from pruner.accuracy.train import Evaluation, place
from pruner.model.graph import ModelGraph, check_unmasked
from pruner.search.space import SearchSpace


class SupernetError(UserError):
    """A model whose channels the supernet cannot slice as prefixes; the message names the module."""


@dataclass(eq=False)
class Supernet:
    """Shared weights (`model`: the trained model, channels in importance order) over a search space.

    `norms` maps each BatchNorm to the conv it normalises; `block` is the target device's sparsity block.
    Build it with `build_supernet`.
    """

    model: nn.Module
    space: SearchSpace
    norms: dict[str, str]
    block: str = "1x4"

    def masks(self, x: np.ndarray) -> dict[str, torch.Tensor]:
        """Boolean keep-masks of the candidate's sliced weights, by layer, from their current magnitudes."""
        sizes = self.space.graph.layer_channels(self.space.channels(x))
        modules = dict(self.model.named_modules())
        out = {}
        for name, density in self.space.densities(x).items():
            if density < 1.0:
                weight = _slice(modules[name].weight.detach(), *sizes[name], dense=True)
                mask = block_mask(weight.cpu().numpy(), density, self.block, "l1")
                out[name] = torch.from_numpy(mask).to(weight.device)
        return out

    def subnet(self, x: np.ndarray, masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The candidate's standalone sub-network (eval mode): the shared tensors' first-k channels, masked."""
        masks = self.masks(x) if masks is None else masks
        sizes = self.space.graph.layer_channels(self.space.channels(x))
        sizes |= {bn: sizes[conv] for bn, conv in self.norms.items()}
        sub = _copy_modules(self.model)
        for name, module in sub.named_modules():
            cin, cout = sizes.get(name, (None, None))
            dense = isinstance(module, nn.Linear) or isinstance(module, nn.Conv2d) and module.groups == 1
            if cout is not None:
                _set_widths(module, cin, cout)
            tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for key, tensor in tensors:
                new = tensor.detach().clone() if cout is None else _slice(tensor.detach(), cin, cout, dense)
                if key == "weight" and name in masks:
                    new = new * masks[name]
                setattr(module, key, nn.Parameter(new) if isinstance(tensor, nn.Parameter) else new)
        return sub.eval()

    def add_grads(self, sub: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        """Add a sub-network's gradients (masked weights get none) into the matching prefix of the shared ones."""
        shared = dict(self.model.named_parameters())
        for name, param in sub.named_parameters():
            if param.grad is None:
                continue
            grad = param.grad
            layer = name.removesuffix(".weight")
            if name.endswith(".weight") and layer in masks:
                grad = grad * masks[layer]
            target = shared[name]
            if target.grad is None:
                target.grad = torch.zeros_like(target)
            target.grad[tuple(slice(0, s) for s in grad.shape)] += grad


def _copy_modules(module: nn.Module) -> nn.Module:
    """A copy of the module tree still holding the same tensors (replaced next): ~10x faster than deepcopy."""
    new = copy.copy(module)
    new.__dict__ = {k: v.copy() if isinstance(v, dict | set) else v for k, v in module.__dict__.items()}
    new._modules = {k: None if m is None else _copy_modules(m) for k, m in module._modules.items()}
    return new


def _slice(tensor: torch.Tensor, cin: int, cout: int, dense: bool) -> torch.Tensor:
    """The first `cout` output (and, for a dense conv or linear weight, first `cin` input) entries, copied."""
    if tensor.dim() == 0:
        return tensor.clone()
    tensor = tensor[:cout]
    return (tensor[:, :cin] if dense and tensor.dim() >= 2 else tensor).clone()


def _set_widths(module: nn.Module, cin: int, cout: int) -> None:
    """Set a conv's, linear layer's or BatchNorm's size attributes to the sliced widths."""
    if isinstance(module, nn.Conv2d):
        if module.groups > 1:
            module.groups = cout
        module.in_channels, module.out_channels = cin, cout
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = cin, cout
    else:
        module.num_features = cout


def _conv_norms(model: nn.Module, graph: ModelGraph) -> dict[str, str]:
    """Each BatchNorm's producing conv (the BN reads its output directly), by one traced forward pass."""
    names = {id(m): n for n, m in model.named_modules()}
    outputs: dict[int, tuple[torch.Tensor, str]] = {}  # holding each output keeps its id unique
    norms: dict[str, str] = {}

    def hook(module, inputs, output):
        if isinstance(module, nn.BatchNorm2d):
            if id(inputs[0]) not in outputs:
                raise SupernetError(f"BatchNorm '{names[id(module)]}' does not directly follow a conv")
            norms[names[id(module)]] = outputs[id(inputs[0])][1]
        else:
            outputs[id(output)] = (output, names[id(module)])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(*graph.input_shape))
    finally:
        for h in handles:
            h.remove()
    return norms


def _expand(order: torch.Tensor, per: int) -> torch.Tensor:
    """Channel order -> feature order when each channel stands for `per` consecutive features (flatten)."""
    return (order[:, None] * per + torch.arange(per)).flatten()


def importance_orders(model: nn.Module, graph: ModelGraph) -> list[torch.Tensor]:
    """Per channel group, its channels by descending L1 norm of their dense producing filters (stable)."""
    modules = dict(model.named_modules())
    scores = [torch.zeros(g.channels) for g in graph.groups]
    for layer in graph.layers:
        if layer.op != "dwconv":
            for g, per in layer.out_groups:
                l1 = modules[layer.name].weight.detach().abs().flatten(1).sum(1)
                scores[g] += l1.reshape(-1, per).sum(1)
    return [torch.argsort(-s, stable=True) for s in scores]


def permute_channels(model: nn.Module, graph: ModelGraph, norms: dict[str, str], orders: list[torch.Tensor]) -> None:
    """Reorder every group's channels in place to `orders` (producers, their BatchNorms, consumers)."""
    modules = dict(model.named_modules())
    following = {conv: bn for bn, conv in norms.items()}
    with torch.no_grad():
        for layer in graph.layers:
            module = modules[layer.name]
            outputs = [module] + ([modules[following[layer.name]]] if layer.name in following else [])
            for g, per in layer.out_groups:
                idx = _expand(orders[g], per)
                for m in outputs:
                    for t in (m.weight, m.bias, getattr(m, "running_mean", None), getattr(m, "running_var", None)):
                        if t is not None:
                            t.copy_(t.index_select(0, idx))
            if layer.op != "dwconv":
                for g, per in layer.in_groups:
                    module.weight.copy_(module.weight.index_select(1, _expand(orders[g], per)))


def build_supernet(
    model: nn.Module, space: SearchSpace, block: str = "1x4", device: torch.device | str | None = None
) -> Supernet:
    """A supernet sharing a copy of trained `model` (left untouched), channels sorted by L1 importance, its
    weights on `device` (None: where `model` is); the sorting itself runs on the CPU."""
    check_unmasked(model)
    graph = space.graph
    for layer in graph.layers:
        if len(layer.out_groups) > 1 or len(layer.in_groups) > 1:
            raise SupernetError(f"module '{layer.name}' joins several channel groups (a concat); cannot slice it")
    device = place(model) if device is None else device
    shared = copy.deepcopy(model).cpu()
    norms = _conv_norms(shared, graph)
    permute_channels(shared, graph, norms, importance_orders(shared, graph))
    return Supernet(shared.to(device), space, norms, block)


def sandwich(space: SearchSpace, rng: np.random.Generator, pool: np.ndarray | None = None) -> np.ndarray:
    """The sandwich rule's candidates: largest, smallest, then two random ones (from `pool` rows if given)."""
    randoms = space.sample(rng, 2) if pool is None else np.asarray(pool)[rng.integers(0, len(pool), 2)]
    return np.vstack([space.full(), space.lower, randoms]).astype(int)


def train_step(
    supernet: Supernet,
    images: torch.Tensor,
    labels: torch.Tensor,
    candidates: np.ndarray,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One shared-weight step: candidates[0] (the largest, in the sandwich rule) learns the labels.

    The others match its soft targets (KL divergence: in-place distillation). Under a process group the
    gradients are averaged across processes before the step. Returns its cross-entropy.
    """
    optimizer.zero_grad(set_to_none=True)
    device = place(supernet.model)
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    teacher, teacher_loss = None, float("nan")
    for x in candidates:
        masks = supernet.masks(x)
        sub = supernet.subnet(x, masks).train()
        logits = sub(images)
        if teacher is None:
            loss = nn.functional.cross_entropy(logits, labels)
            teacher, teacher_loss = logits.detach().softmax(1), loss.item()
        else:
            loss = nn.functional.kl_div(logits.log_softmax(1), teacher, reduction="batchmean")
        loss.backward()
        supernet.add_grads(sub, masks)
    if is_distributed():
        average_gradients(list(supernet.model.parameters()))
    optimizer.step()
    return teacher_loss


def average_gradients(params: list[nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over the processes (one all-reduce of them all)."""
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, chunk in zip(params, flat.split([g.numel() for g in grads]), strict=True):
        p.grad = chunk.view_as(p).clone()


def _cycle(loader: Iterable) -> Iterable:
    """`loader`'s batches pass after pass, a sharded loader reshuffled per pass like an epoch."""
    for epoch in itertools.count():
        set_epoch(loader, epoch)
        yield from loader


def train_supernet(
    supernet: Supernet,
    loader: Iterable,
    steps: int,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    rng: np.random.Generator | None = None,
    pool: np.ndarray | None = None,
) -> list[float]:
    """`steps` sandwich steps (SGD, momentum 0.9) over `loader`, cycled; random candidates from `pool` if given.

    Use a proxy subset of the training split as `loader`; under torchrun it is sharded across the processes
    (a DataLoader), which must all pass the same `rng` seed and `pool`. Returns the largest candidate's loss
    per step (this process's batches).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    params = list(supernet.model.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    batches = tqdm(itertools.islice(_cycle(shard(loader)), steps), total=steps, desc="supernet: sandwich steps",
                   unit="step", leave=False, disable=not is_main_process())
    return [train_step(supernet, images, labels, sandwich(supernet.space, rng, pool), optimizer)
            for images, labels in batches]


@dataclass(eq=False)
class SupernetScore:
    """A candidate's sub-network, BatchNorm recalibrated, scored on the held-out batches on `device` (None:
    the supernet's)."""

    supernet: Supernet
    data: ProxyData
    device: torch.device | None = None

    def __call__(self, x: np.ndarray) -> Evaluation:
        return calibrated_evaluation(self.supernet.subnet(x), self.data, self.device)

    def on(self, device: torch.device | None) -> SupernetScore:
        """This score on `device` (sub-networks are moved there), its batches moved there once (None: unchanged)."""
        return self if device is None else SupernetScore(self.supernet, self.data.to(device), device)


@dataclass(eq=False)
class SupernetEstimator:
    """Estimator over a supernet: each candidate's sub-network, BN recalibrated, scored on held-out data on
    the supernet's device.

    `retrain(X, steps)` is JCW's per-generation hook: more sandwich steps with the random candidates drawn
    from the current population X; it clears the cache, since every estimate changes with the weights. With
    `workers` > 1 the scores run on worker processes, restarted after each training with the new weights.
    """

    supernet: Supernet
    data: ProxyData
    train_loader: Iterable
    lr: float = 0.01
    seed: int = 0
    threads: int | None = None
    workers: int = 1
    estimator: CachedEstimator = field(init=False)
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        score = SupernetScore(self.supernet, self.data).on(place(self.supernet.model))
        self.estimator = CachedEstimator(score, self.threads, self.workers)
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.estimator(X)

    def train(self, steps: int, pool: np.ndarray | None = None) -> list[float]:
        """Train the supernet `steps` sandwich steps (random candidates from `pool` if given); clear the cache."""
        with torch_threads(self.threads):
            losses = train_supernet(self.supernet, self.train_loader, steps, self.lr, rng=self.rng, pool=pool)
        self.estimator.reset()
        return losses

    def close(self) -> None:
        """Stop the worker processes, if any."""
        self.estimator.close()

    def retrain(self, X: np.ndarray, steps: int) -> list[float]:
        """JCW's per-generation retraining on the current population X."""
        return self.train(steps, pool=X)
