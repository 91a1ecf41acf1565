"""Block-sparsity masks over conv and linear weights (numpy), shared by profiling and pruning."""

from __future__ import annotations

import numpy as np

from profiler.kernel import BLOCKS


def _to_blocks(weight: np.ndarray, block: str) -> tuple[np.ndarray, tuple]:
    """View a (cout, cin, kh, kw) weight as (n_blocks, block_size), zero-padding partial blocks."""
    cout, cin, kh, kw = weight.shape
    if block == "unstructured":
        return weight.reshape(-1, 1), weight.shape
    if block == "1x4":  # 4 consecutive output channels at one (cin, kh, kw)
        arranged = weight.transpose(1, 2, 3, 0)  # (cin, kh, kw, cout)
    else:  # "4x1": 4 consecutive input channels at one (cout, kh, kw)
        arranged = weight.transpose(0, 2, 3, 1)  # (cout, kh, kw, cin)
    last = arranged.shape[-1]
    pad = (-last) % 4
    padded = np.pad(arranged, [(0, 0)] * 3 + [(0, pad)])
    return padded.reshape(-1, 4), arranged.shape


def _from_blocks(blocks: np.ndarray, arranged_shape: tuple, block: str) -> np.ndarray:
    if block == "unstructured":
        return blocks.reshape(arranged_shape)
    last = arranged_shape[-1]
    arranged = blocks.reshape(*arranged_shape[:-1], -1)[..., :last]
    return arranged.transpose(3, 0, 1, 2) if block == "1x4" else arranged.transpose(0, 3, 1, 2)


def block_mask(weight: np.ndarray, density: float, block: str = "1x4", norm: str = "l1") -> np.ndarray:
    """Boolean mask keeping the `density` fraction of blocks with the largest L1 (or L2) norm.

    `weight` is in PyTorch's layout: (cout, cin, kh, kw) for convs, (cout, cin) for linear
    layers. Ties are broken by position, so the mask is deterministic.
    """
    if block not in BLOCKS:
        raise ValueError(f"unknown sparsity block {block!r}; expected one of {', '.join(BLOCKS)}")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density {density} is outside [0, 1]")
    shape = weight.shape
    w4 = weight.reshape(shape[0], shape[1], *(shape[2:] or (1, 1)))
    blocks, arranged_shape = _to_blocks(np.abs(w4) if norm == "l1" else np.square(w4), block)
    scores = blocks.sum(axis=1)
    keep = int(round(density * len(scores)))
    order = np.argsort(-scores, kind="stable")
    kept = np.zeros(len(scores), dtype=bool)
    kept[order[:keep]] = True
    mask = np.repeat(kept[:, None], blocks.shape[1], axis=1)
    return _from_blocks(mask, arranged_shape, block).reshape(shape)


def zero_count(spec) -> int:
    """Zero weights of a layer `block_mask` prunes to `spec.density` (a KernelSpec), without building it: the
    dropped blocks' share of the weights (exact when the blocked dimension is a multiple of 4)."""
    params = spec.cout * (spec.cin // spec.groups) * spec.k * spec.k
    if spec.block == "unstructured":
        return params - int(round(spec.density * params))
    rows, last = (spec.cin // spec.groups * spec.k * spec.k, spec.cout) if spec.block == "1x4" else \
        (spec.cout * spec.k * spec.k, spec.cin // spec.groups)
    blocks = rows * -(-last // 4)
    return int(round(params * (1 - int(round(spec.density * blocks)) / blocks)))


def random_sparse_weight(
    shape: tuple[int, ...], density: float, block: str, rng: np.random.Generator
) -> np.ndarray:
    """Random float32 weights pruned to `density` in `block`s: what a profiled kernel holds."""
    weight = rng.standard_normal(shape).astype(np.float32) / np.sqrt(max(1, np.prod(shape[1:])))
    return weight * block_mask(weight, density, block)
