"""Model checkpoints: where the model came from (a built-in architecture and its arguments, or a user's factory), its
weights, input shape and search-space settings; pruned ones also hold their candidate."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from profiler.errors import UserError
from profiler.runtimes import Runtime
from pruner.model.apply import apply_candidate
from pruner.model.graph import analyze
from pruner.model.reference import MODELS, build_model
from pruner.model.sources import (
    build_from,
    factory_name,
    factory_source,
    file_sha256,
    is_factory,
    load_weights,
    parse_input_shape,
)
from pruner.search.space import NO_BOUNDS, SearchSpace, SpaceError, density_bounds


@dataclass
class Checkpoint:
    """A model with what is needed to rebuild it; `genes` and `block` are set for a pruned model.

    A built-in model has its `arch` and `kwargs`; a user's model has `arch` None and its factory's provenance in
    `source` (pruner.model.sources). `space_settings` (pruner.search.space.space_settings) are the grids, bounds and
    keeps of the space it was searched or pruned in, None for the defaults. `path` is the file it was loaded from.
    """

    model: nn.Module
    arch: str | None
    kwargs: dict
    input_shape: tuple[int, int, int, int]
    genes: tuple[int, ...] | None = None
    block: str | None = None
    source: dict | None = None
    space_settings: dict | None = None
    path: Path | None = None

    def build(self) -> nn.Module:
        """A fresh, unpruned model of this architecture (its weights as its constructor or factory leaves them)."""
        return build_from(self.source) if self.source is not None else build_model(self.arch, **self.kwargs)

    def space(self, runtime: Runtime | str | None = None, keep: Sequence[str] = ()) -> SearchSpace:
        """The search space of the unpruned model: its recorded settings if any, else default grids and JCW's bounds
        with the density floors of the device's `runtime` or its name (pruner.search.space.density_bounds); `keep`
        adds globs of layers left alone."""
        settings = self.space_settings or {"density_bounds": density_bounds(runtime)}
        keeps = tuple(dict.fromkeys([*settings.get("keep", ()), *keep]))
        return SearchSpace(analyze(self.build(), self.input_shape), **{**settings, "keep": keeps})

    def provenance(self) -> dict:
        """Where this model came from, as JSON values, for run directories and exported artefacts to record."""
        origin = self.source or {"kind": "builtin", "arch": self.arch, "kwargs": self.kwargs}
        checkpoint = {"path": str(self.path), "sha256": file_sha256(self.path)} if self.path else None
        return {"model": origin, "input_shape": list(self.input_shape[1:]), "checkpoint": checkpoint,
                "genes": list(self.genes) if self.genes is not None else None, "block": self.block}


def load_model(
    spec: str, weights: str | Path | None = None, input_shape: str | Sequence[int] | None = None
) -> Checkpoint:
    """A model as the user names it (--model, --weights, --input-shape): a jcw checkpoint file, or a factory
    `FILE.py:name` / `package.module:name` called with no arguments, its state_dict file `weights` loaded into it
    (none: the factory's own weights) and its `input_shape` "C,H,W"."""
    if not is_factory(spec) or Path(spec).is_file():
        if weights is not None or input_shape is not None:
            raise UserError(f"{spec}: a jcw checkpoint holds its weights and input shape; weights and an input shape "
                            "go with a FILE.py:factory model")
        return load_checkpoint(spec)
    if weights is not None and is_checkpoint(weights):  # a jcw checkpoint of this factory's model (e.g. fine-tuned)
        return load_checkpoint(weights, factory=spec)
    if input_shape is None:
        raise UserError(f"{spec}: a factory's model needs its input shape C,H,W (--input-shape)")
    shape = parse_input_shape(input_shape)
    source = factory_source(spec)
    model = build_from(source)
    sha256 = load_weights(model, weights) if weights is not None else None
    source |= {"weights": str(Path(weights).resolve()) if weights is not None else None, "weights_sha256": sha256,
               "input_shape": list(shape)}
    return Checkpoint(model.eval(), None, {}, (1, *shape), source=source)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "arch": ckpt.arch, "kwargs": ckpt.kwargs, "input_shape": [int(v) for v in ckpt.input_shape],
        "genes": [int(g) for g in ckpt.genes] if ckpt.genes is not None else None, "block": ckpt.block,
        "source": ckpt.source, "space": ckpt.space_settings, "state_dict": ckpt.model.state_dict(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a jcw checkpoint (read weights_only: the file cannot run code) rather than a state_dict."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not readable this way: load_weights says why
        return False
    return isinstance(payload, dict) and "state_dict" in payload and "input_shape" in payload


def load_checkpoint(path: str | Path, factory: str | None = None) -> Checkpoint:
    """Rebuild the model (pruned to its candidate, masks attached, if it is a pruned checkpoint).

    A user's model is rebuilt by calling its factory, code a checkpoint cannot be trusted to name: the caller names
    it (`factory`, e.g. "net.py:build"; on the command line --model net.py:build --weights CKPT), and it must be
    the one the checkpoint was made from. A checkpoint naming a factory the caller did not is refused unrun.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        arch, kwargs, shape = payload["arch"], payload["kwargs"], tuple(payload["input_shape"])
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path}: not a jcw checkpoint ({type(err).__name__}: {err})") from None
    source, settings = payload.get("source"), _settings(path, payload.get("space"))
    model = _build(path, arch, kwargs) if source is None else _build_source(path, source, factory)
    ckpt = Checkpoint(model, arch, kwargs, shape, payload.get("genes") and tuple(payload["genes"]), payload["block"],
                      source, settings, path)
    if ckpt.genes is not None:
        # its genes were checked against the space it was searched in: re-applying them needs only the grids
        grids = {**(settings or {}), "width_bounds": NO_BOUNDS, "density_bounds": NO_BOUNDS, "keep": ()}
        try:
            loose = SearchSpace(analyze(model, shape), **grids)
        except SpaceError as err:
            raise UserError(f"{path}: space settings: {err}") from None
        ckpt.model = apply_candidate(model, loose, np.asarray(ckpt.genes), block=ckpt.block)
    try:
        ckpt.model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        built = f"{arch}{kwargs}" if source is None else "the model its source builds"
        raise UserError(f"{path}: weights do not fit {built}: {str(err).splitlines()[0]}") from None
    return dataclasses.replace(ckpt, model=ckpt.model.eval())


def _build_source(path: Path, source: object, factory: str | None) -> nn.Module:
    """The model of a checkpoint made from a user's factory, built by the `factory` the caller names (the same one
    the checkpoint records: kind, file or module, name); errors are prefixed with the checkpoint's path."""
    if not isinstance(source, dict):
        raise UserError(f"{path}: source must be a factory's provenance, got {type(source).__name__}")
    recorded = factory_name(source)
    if factory is None:
        raise UserError(f"{path}: its model is built by {recorded[:200]}, code the file names and jcw does not run "
                        "on a file's word: name it yourself (--model FILE.py:factory --weights CHECKPOINT)")
    try:
        given = factory_source(factory)
        if any(given.get(k) != source.get(k) for k in ("kind", "path", "module", "factory")):
            raise UserError(f"made from {recorded[:200]}, not {factory_name(given)}")
        return build_from(given)
    except UserError as err:
        raise UserError(f"{path}: model source: {err}") from None


def _settings(path: Path, settings: object) -> dict | None:
    """A checkpoint's space settings, checked to be SearchSpace arguments (their values are checked in use)."""
    names = {f.name for f in dataclasses.fields(SearchSpace)} - {"graph"}
    if settings is not None and (not isinstance(settings, dict) or not set(settings) <= names):
        raise UserError(f"{path}: space settings must map some of {', '.join(sorted(names))}; got {settings!r:.200}")
    return settings


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


def recorded_data(ckpt: Checkpoint) -> dict | None:
    """The data a fine-tuned checkpoint was trained on, from its sidecar (`jcw finetune`'s CKPT.json), if it has one."""
    sidecar = Path(f"{ckpt.path}.json") if ckpt.path is not None else None
    if sidecar is None or not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
