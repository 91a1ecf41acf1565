"""Apply a candidate: narrow channel groups (torch-pruning), then mask weights in blocks that persist in training."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from profiler.errors import UserError
from profiler.kernel import BLOCKS
from profiler.sparsity import block_mask
from pruner.model.graph import check_unmasked, narrow
from pruner.search.space import SearchSpace


def apply_candidate(
    model: nn.Module,
    space: SearchSpace,
    x: Sequence[int] | np.ndarray,
    block: str = "1x4",
    importance: str = "l1",
    norm: str = "l1",
) -> nn.Module:
    """A pruned copy of `model` (left untouched): channels narrowed to the candidate's, weights block-masked.

    `block` is the target device's sparsity block ("1x4", "4x1" or "unstructured"); `importance` ranks
    channels ("l1" filter norm or "bn" scale); `norm` ranks weight blocks ("l1" for search, "l2" for
    fine-tuning). The masks stay in place through training; `make_permanent` bakes them in for export.
    """
    check_unmasked(model)  # before the copy: deepcopy fails on a masked model
    pruned = copy.deepcopy(model)
    narrow(pruned, space.graph, space.channels(x), importance)
    mask_weights(pruned, space.densities(x), block, norm)
    return pruned


def mask_weights(model: nn.Module, densities: Mapping[str, float], block: str = "1x4", norm: str = "l1") -> None:
    """Mask each named layer's weight to its density in blocks of the largest norm (torch.nn.utils.prune).

    A layer already masked is re-masked from its current masked weights. Density 1.0 leaves a layer dense.
    """
    if block not in BLOCKS:
        raise UserError(f"unknown sparsity block {block!r}; expected one of {', '.join(BLOCKS)}")
    if norm not in ("l1", "l2"):
        raise UserError(f"unknown block norm {norm!r}; expected 'l1' or 'l2'")
    modules = dict(model.named_modules())
    for name, density in densities.items():
        module = modules[name]
        if hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
        if density >= 1.0:
            continue
        mask = block_mask(module.weight.detach().cpu().numpy(), density, block, norm)
        prune.custom_from_mask(module, "weight", torch.from_numpy(mask).to(module.weight.device))


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake the weight masks into plain weights (zeros stay zeros) and drop the pruning hooks, before export."""
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


def layer_densities(model: nn.Module) -> dict[str, float]:
    """Fraction of non-zero weights of every conv and linear layer, by name."""
    return {
        name: float((m.weight != 0).float().mean())
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }
