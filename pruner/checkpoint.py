"""Model checkpoints: an architecture name, its arguments and weights; pruned ones also hold their candidate."""

from __future__ import annotations

import inspect
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from profiler.errors import UserError
from pruner.apply import apply_candidate
from pruner.graph import analyze
from pruner.models import MODELS, build_model
from pruner.space import NO_BOUNDS, SearchSpace, density_bounds


@dataclass
class Checkpoint:
    """A model with what is needed to rebuild it; `genes` and `block` are set for a pruned model."""

    model: nn.Module
    arch: str
    kwargs: dict
    input_shape: tuple[int, int, int, int]
    genes: tuple[int, ...] | None = None
    block: str | None = None

    def space(self, flavour: str | None = None) -> SearchSpace:
        """The search space of the unpruned architecture: default grids, JCW's bounds with the density floors of
        the device's runtime `flavour` (pruner.space.density_bounds)."""
        return SearchSpace(analyze(build_model(self.arch, **self.kwargs), self.input_shape),
                           density_bounds=density_bounds(flavour))


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "arch": ckpt.arch, "kwargs": ckpt.kwargs, "input_shape": [int(v) for v in ckpt.input_shape],
        "genes": [int(g) for g in ckpt.genes] if ckpt.genes is not None else None, "block": ckpt.block,
        "state_dict": ckpt.model.state_dict(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model (pruned to its candidate, masks attached, if it is a pruned checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        arch, kwargs, shape = payload["arch"], payload["kwargs"], tuple(payload["input_shape"])
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path}: not a jcw checkpoint ({type(err).__name__}: {err})") from None
    model = _build(path, arch, kwargs)
    ckpt = Checkpoint(model, arch, kwargs, shape, payload.get("genes") and tuple(payload["genes"]), payload["block"])
    if ckpt.genes is not None:
        # its genes were checked against the space it was searched in: re-applying them needs only the grids
        loose = SearchSpace(analyze(model, shape), width_bounds=NO_BOUNDS, density_bounds=NO_BOUNDS)
        ckpt.model = apply_candidate(model, loose, np.asarray(ckpt.genes), block=ckpt.block)
    try:
        ckpt.model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit {arch}{kwargs}: {str(err).splitlines()[0]}") from None
    return ckpt.__class__(ckpt.model.eval(), arch, kwargs, shape, ckpt.genes, ckpt.block)


def _build(path: Path, arch: object, kwargs: object) -> nn.Module:
    """The checkpoint's architecture, its `arch` and `kwargs` checked first so a foreign file is a one-line error."""
    if not isinstance(arch, str) or arch not in MODELS:
        raise UserError(f"{path}: unknown arch {arch!r}; this jcw builds {', '.join(MODELS)}")
    if not isinstance(kwargs, dict):
        raise UserError(f"{path}: kwargs must be a mapping of {arch}'s arguments, got {type(kwargs).__name__}")
    takes = set(inspect.signature(MODELS[arch]).parameters)
    unknown = ", ".join(repr(k) for k in kwargs if k not in takes)
    if unknown:
        raise UserError(f"{path}: kwargs {unknown}: not an argument of {arch} (it takes {', '.join(sorted(takes))})")
    try:
        return build_model(arch, **kwargs)
    except (TypeError, ValueError, RuntimeError) as err:  # e.g. width_mult "wide": the arguments' values
        raise UserError(f"{path}: kwargs {kwargs} do not build {arch} ({err})") from None


def parse_genes(text: str) -> np.ndarray:
    """A candidate given on the command line: comma-separated grid indices, e.g. "9,7,9,4,...")."""
    try:
        genes = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise UserError(f"candidate {text[:60]!r}: expected comma-separated grid indices (the genes column)") from None
    huge = next((i for i, g in enumerate(genes) if abs(g) > np.iinfo(np.int32).max), None)
    if huge is not None:  # beyond any grid; numpy would overflow
        raise UserError(f"candidate: gene {huge} = {str(genes[huge])[:30]} is beyond any grid index")
    return np.array(genes, dtype=int)


def format_genes(x: np.ndarray) -> str:
    return ",".join(str(int(v)) for v in x)
