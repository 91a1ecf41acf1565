"""A user's own model or data: a factory function named `FILE.py:name` or `package.module:name`, and its files.

A model factory is called with no arguments and returns an `nn.Module`; its weights come from a state_dict file
(loaded with `weights_only=True`, so the file cannot run code) and its input shape from the user. A factory's
provenance is a JSON dict that says where the model came from and rebuilds it (`build_from`):

    {"kind": "file", "path": "/abs/models.py", "sha256": "...", "factory": "build",
     "weights": "/abs/weights.pt", "weights_sha256": "...", "input_shape": [3, 224, 224]}

(`"kind": "module", "module": "package.module"` instead of `path` and `sha256` for an importable module). A file
is imported by its path alone: the modules it imports must be importable (installed or on PYTHONPATH). Worker
processes import the same files the same way (`imported_files`, pruner.accuracy.parallel), so a model whose class
lives in a file pickles into them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from profiler.errors import UserError

_IMPORTED: dict[str, Path] = {}  # module name -> the user's file it was imported from, in import order
_FACTORY = re.compile(r"^(?P<location>.+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_factory(spec: str) -> bool:
    """Whether `spec` reads as `FILE.py:name` or `package.module:name` (anything else is a file of its own)."""
    match = _FACTORY.match(spec)
    return bool(match) and (match["location"].endswith(".py") or bool(_MODULE.match(match["location"])))


def factory_source(spec: str) -> dict:
    """The provenance of the factory `spec` names: a file's absolute path and sha256, or a module's name."""
    if not is_factory(spec):
        raise UserError(f"{spec!r}: expected FILE.py:factory or package.module:factory")
    match = _FACTORY.match(spec)
    location, name = match["location"], match["name"]
    if not location.endswith(".py"):
        return {"kind": "module", "module": location, "factory": name}
    path = Path(location).resolve()
    if not path.is_file():
        raise UserError(f"{location}: no such file (from {spec!r})")
    return {"kind": "file", "path": str(path), "sha256": file_sha256(path), "factory": name}


def import_factory(source: Mapping) -> Callable:
    """The callable a factory provenance names, its file or module imported; errors name the file or module."""
    kind, name = source.get("kind"), source.get("factory")
    if not isinstance(name, str):
        raise UserError(f"factory {dict(source)!r:.200}: 'factory' must be a function's name")
    if kind == "file":
        where = source.get("path")
        module = _import_file(Path(str(where)))
    elif kind == "module":
        where = source.get("module")
        module = _import_module(str(where))
    else:
        raise UserError(f"factory {dict(source)!r:.200}: 'kind' must be 'file' or 'module'")
    factory = getattr(module, name, None)
    if factory is None:
        raise UserError(f"{where}: has no {name!r}")
    if not callable(factory):
        raise UserError(f"{where}: {name} is a {type(factory).__name__}, not a function")
    return factory


def imported_files() -> dict[str, Path]:
    """The user's files imported so far in this process, by the name of their module, in import order: what a worker
    process imports (by path, `import_files`) before it unpickles a model whose classes they define."""
    return dict(_IMPORTED)


def import_files(paths: list[Path]) -> None:
    """Import each file as `import_factory` does, under the same module name, so pickles naming its classes load."""
    for path in paths:
        _import_file(Path(path))


def _import_file(path: Path):
    """The module of the Python file at `path`, registered in sys.modules so its classes pickle (DataLoader
    workers) and its dataclasses work."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    name = f"jcw_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's code: any failure is theirs to fix, named in one line
        del sys.modules[name]
        raise UserError(f"{path}: importing it failed ({error_line(err)})") from err
    _IMPORTED[name] = path
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise UserError(f"module {name!r} not found ({err}); is it installed or on PYTHONPATH?") from None
    except Exception as err:  # the user's code
        raise UserError(f"module {name!r}: importing it failed ({error_line(err)})") from err


def call_factory(source: Mapping) -> object:
    """Import and call (no arguments) the factory a provenance names; its failure is a one-line error naming it."""
    factory = import_factory(source)
    try:
        return factory()
    except Exception as err:  # the user's code
        raise UserError(f"{factory_name(source)}: calling it failed ({error_line(err)})") from err


def factory_name(source: Mapping) -> str:
    """`FILE.py:name` or `package.module:name`, as errors name a factory."""
    return f"{source.get('path') or source.get('module')}:{source.get('factory')}"


def build_from(source: Mapping) -> nn.Module:
    """The model the factory of `source` returns; UserError unless it is an nn.Module."""
    model = call_factory(source)
    if not isinstance(model, nn.Module):
        raise UserError(f"{factory_name(source)}: returned a {type(model).__name__}, not a torch nn.Module")
    return model


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Load the state_dict file `path` into `model` (weights_only: the file cannot run code); returns its sha256.

    Every key must match by name and shape; an error names the first missing, unexpected or misshapen key.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files it cannot read this way
        reason = error_line(err)
        raise UserError(f"{path}: not a state_dict torch.load can read with weights_only=True ({reason})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(repr(k) for k in list(state)[:5]) if isinstance(state, Mapping) else type(state).__name__
        raise UserError(f"{path}: expected a state_dict (parameter names to tensors), got {keys}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape]
    for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (misshapen, "misshapen")):
        if keys:
            key, more = keys[0], f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            shapes = f" (model {tuple(own[key].shape)}, file {tuple(state[key].shape)})" if what == "misshapen" else ""
            raise UserError(f"{path}: weights do not fit the model: {what} key {key!r}{shapes}{more}")
    model.load_state_dict(state)
    return file_sha256(path)


def parse_input_shape(value: str | Sequence[int]) -> tuple[int, int, int]:
    """An input shape "C,H,W" (or a sequence of three ints) as three positive ints, e.g. "3,224,224"."""
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or any(isinstance(p, float) for p in parts):
        raise UserError(f"input shape {value!r}: expected C,H,W as three positive integers, e.g. 3,224,224")
    return shape


def error_line(err: BaseException) -> str:
    """An exception as one line, its type and the first line of its message: errors from a user's code, or
    torch's multi-line ones, stay one-line UserErrors."""
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
