"""Save and load LatencyModels: a zip of a JSON manifest, the training table and the fitted state, nothing executable.

Model files are shared, so loading one must never run code from it: the file holds no pickled regressor, only data.
The regressor's fitted state is plain JSON values in the manifest and numeric arrays in state.npz (read with
allow_pickle=False; predictor.models `state` / `from_state`), so loading runs no refit and no code from the file, and
the loaded model predicts exactly what the saved one did, whatever scikit-learn is installed (its trees are predicted
by predictor.trees). The training table (Parquet) stays in the file: it names the device contexts and lets a kind
without array state (the JCW interpolation) be rebuilt. The manifest also names the device the model was fitted on
(`fitted_on`: device, runtime, its version, block), so a model is refused for another device (`load(path, device)`)
unless the caller means it. A file holding any other entry is refused.

Older files are refitted from their training table (every regressor is deterministic given its random_state), with a
note on how to rewrite them: format 2 (manifest and table only) and format 1 (which also held a pickled regressor,
model.pkl, never read).
"""

from __future__ import annotations

import io
import json
import math
import platform
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from predictor.latency import LatencyModel, Target
from predictor.models import MODELS
from predictor.network import Overhead
from predictor.table import normalise
from profiler.errors import UserError

if TYPE_CHECKING:
    from profiler.devices import Device

FORMAT = 3
"""3: manifest.json (with the regressor's JSON state), training.parquet and state.npz (its arrays; absent for a kind
without array state); 2 had no state and is refitted; 1 also held a pickled regressor (never read)."""
READS = (1, 2, FORMAT)
ENTRIES = {1: {"manifest.json", "training.parquet", "model.pkl"}, 2: {"manifest.json", "training.parquet"},
           3: {"manifest.json", "training.parquet", "state.npz"}}
"""The entries a file of each format may hold."""
OVERHEAD_FIELDS = ("per_network_ms", "per_kernel_ms")


def save(model: LatencyModel, path: str | Path) -> None:
    """Write the model file: manifest.json (kind, overhead, provenance, the regressor's JSON state), training.parquet
    and state.npz (the regressor's arrays, when it has any)."""
    from importlib.metadata import version  # ~40 ms to import, which loading a model need not pay

    if model.kind not in MODELS:
        raise UserError(f"model {path}: kind {model.kind!r} cannot be refitted on load; use one of {', '.join(MODELS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.regressor.state()
    manifest = {
        "format": FORMAT,
        "kind": model.kind,
        "state": None if state is None else state[0],
        "overhead": asdict(model.overhead),
        "sparse_overhead": asdict(model.sparse_overhead) if model.sparse_overhead else None,
        "rows": len(model.training),
        "contexts": [list(c) for c in model.contexts],
        "fitted_on": asdict(model.fitted_on) if model.fitted_on else None,
        "quality": model.quality,
        "saved_with": {"python": platform.python_version(), "scikit-learn": version("scikit-learn"),
                       "numpy": np.__version__},
    }
    table = io.BytesIO()
    model.training.to_parquet(table, index=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=2))
        z.writestr("training.parquet", table.getvalue())
        if state is not None:
            arrays = io.BytesIO()
            np.savez(arrays, **state[1])
            z.writestr("state.npz", arrays.getvalue())


def read_manifest(path: str | Path) -> dict:
    """A model file's manifest alone (its device, overheads and quality record), nothing refitted."""
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"model {path}: not a predictor model file ({err})") from err
    if not isinstance(manifest, dict):
        raise UserError(f"model {path}: manifest.json must be a JSON object, got {type(manifest).__name__}")
    return manifest


def load(path: str | Path, device: Device | None = None, allow_other_device: bool = False) -> LatencyModel:
    """Read a model file: format 3 from its saved state (its training table only when the kind has none), older
    formats refitted from their training table, with a note.

    With `device`, a model fitted on another device (or runtime, or block) is refused, naming both, unless
    `allow_other_device`: its latencies are another device's.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            manifest = json.loads(z.read("manifest.json"))
            blob = z.read("training.parquet")
            arrays = z.read("state.npz") if "state.npz" in names else None
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"model {path}: not a predictor model file ({err})") from err
    kind, overhead, sparse_overhead = _checked(path, manifest)
    if extra := sorted(names - ENTRIES[manifest["format"]]):
        raise UserError(f"model {path}: unexpected entry '{extra[0]}'; a format {manifest['format']} model file holds "
                        f"only {', '.join(sorted(ENTRIES[manifest['format']]))}")
    try:
        training = pd.read_parquet(io.BytesIO(blob))
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"model {path}: training.parquet cannot be read ({err})") from err
    source = f"model {path}: training.parquet"
    if manifest["format"] == FORMAT and manifest.get("state") is not None:
        model = LatencyModel(kind, _regressor(path, kind, manifest["state"], arrays), normalise(training, source),
                             Overhead())
    else:
        model = LatencyModel.fit(training, kind, source=source)
    model.overhead, model.sparse_overhead = overhead, sparse_overhead
    model.quality = manifest.get("quality") if isinstance(manifest.get("quality"), dict) else None
    recorded = manifest.get("fitted_on")
    if isinstance(recorded, dict) and "flavour" in recorded:  # older names (profiler.store.upgrade_columns)
        recorded = {"device": recorded.get("device"), "runtime": recorded.get("flavour"),
                    "runtime_version": recorded.get("runtime"), "block": recorded.get("block")}
    if recorded is not None and recorded != (asdict(model.fitted_on) if model.fitted_on else None):
        raise UserError(f"model {path}: manifest.json field 'fitted_on' is {recorded!r}, but its training table was "
                        f"measured on {model.fitted_on or 'no single device'}")
    if device is not None and not allow_other_device:
        check_device(model, device, path)
    if manifest["format"] < FORMAT:
        unread = " (its pickled regressor is not read)" if manifest["format"] == 1 else ""
        print(f"note: model {path} is format {manifest['format']}{unread}: refitted from its training table; rewrite "
              f"it as format {FORMAT}, which loads without a refit, with predictor.persist.convert(OLD, NEW) or "
              "`jcw fit`", file=sys.stderr)
    return model


def _regressor(path: Path, kind: str, meta: object, blob: bytes | None):
    """The regressor of a format-3 file from its manifest's state and state.npz (numeric arrays only), or a one-line
    UserError naming what is wrong."""
    if blob is None:
        raise UserError(f"model {path}: manifest.json has a 'state' but the file has no state.npz")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:  # object arrays: "Object arrays cannot be loaded ..."
        raise UserError(f"model {path}: state.npz is not plain numeric arrays ({err})") from err
    if bad := [name for name, a in arrays.items() if a.dtype.kind not in "biuf"]:
        raise UserError(f"model {path}: state.npz entry '{bad[0]}' is of type {arrays[bad[0]].dtype}, not numbers")
    if not isinstance(meta, dict):
        raise UserError(f"model {path}: manifest.json field 'state' must be a JSON object")
    try:
        return MODELS[kind].from_state(meta, arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise UserError(f"model {path}: its state is not a fitted '{kind}' model ({type(err).__name__}: {err})") \
            from None


def check_device(model: LatencyModel, device: Device, path: str | Path) -> None:
    """Refuse a model fitted on another device than `device` (a model whose table names no device passes)."""
    wanted = Target(device.name, device.runtime.name, "", device.runtime.block)
    if model.fitted_on is not None and not model.fitted_on.same_device(wanted):
        raise UserError(f"predictor {path} was fitted on device {model.fitted_on}, not {wanted}; "
                        "pass --allow-other-device if you mean it")


def convert(src: str | Path, dst: str | Path) -> None:
    """Rewrite a model file of any readable format as the current format (no pickle read, none written)."""
    save(load(src), dst)


def _checked(path: Path, manifest: object) -> tuple[str, Overhead, Overhead | None]:
    """The manifest's format, kind and overheads validated; a one-line UserError naming the field otherwise."""
    if not isinstance(manifest, dict):
        raise UserError(f"model {path}: manifest.json must be a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") not in READS:
        raise UserError(f"model {path}: manifest.json field 'format' is {manifest.get('format')!r}; "
                        f"this predictor reads {', '.join(map(str, READS[:-1]))} and {READS[-1]}")
    kind = manifest.get("kind")
    if not isinstance(kind, str) or kind not in MODELS:
        raise UserError(f"model {path}: manifest.json field 'kind' is {kind!r}; expected one of {', '.join(MODELS)}")
    sparse = manifest.get("sparse_overhead")
    return kind, _overhead(path, "overhead", manifest.get("overhead")), sparse and _overhead(path, "sparse_overhead",
                                                                                           sparse)


def _overhead(path: Path, field: str, overhead: object) -> Overhead:
    """A manifest's overhead mapping as an Overhead, or a one-line UserError naming the field."""
    values = [overhead.get(f) for f in OVERHEAD_FIELDS] if isinstance(overhead, dict) else []
    if not values or not all(_finite_number(v) for v in values):
        raise UserError(f"model {path}: manifest.json field '{field}' is {overhead!r}; expected finite numbers "
                        f"{' and '.join(OVERHEAD_FIELDS)}")
    return Overhead(*map(float, values))


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
