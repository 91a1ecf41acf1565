"""Save and load LatencyModels: a zip of a JSON manifest and the training table, nothing executable.

Model files are shared, so loading one must never run code from it: the file holds no pickled regressor,
only what refits it (the model kind and the training table, data read as Parquet) plus the network overhead.
The manifest also names the device the model was fitted on (`fitted_on`: device, runtime, its version, block), so a
model is refused for another device (`load(path, device)`) unless the caller means it.
Every regressor in predictor.models is deterministic given its random_state, so `load` refits the very
model that was saved, under whatever library versions are installed here (the physics model loads in 0.2 s
from 1,400 rows and 0.3 s from 6,400 on an idle 2-core machine, a few seconds when its cores are busy).
Files of format 1 also hold a pickled regressor (model.pkl): it is never read; they are refitted from their
training table the same way, with a note on how to rewrite them.
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
import sklearn

from predictor.latency import LatencyModel, Target
from predictor.models import MODELS
from predictor.network import Overhead
from profiler.errors import UserError

if TYPE_CHECKING:
    from profiler.devices import Device

FORMAT = 2
"""2: manifest.json and training.parquet, refitted on load; 1 also held a pickled regressor (never read now)."""
READS = (1, FORMAT)
OVERHEAD_FIELDS = ("per_network_ms", "per_kernel_ms")


def save(model: LatencyModel, path: str | Path) -> None:
    """Write the model file: manifest.json (kind, overhead, provenance) and training.parquet."""
    if model.kind not in MODELS:
        raise UserError(f"model {path}: kind {model.kind!r} cannot be refitted on load; use one of {', '.join(MODELS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "kind": model.kind,
        "overhead": asdict(model.overhead),
        "sparse_overhead": asdict(model.sparse_overhead) if model.sparse_overhead else None,
        "rows": len(model.training),
        "contexts": [list(c) for c in model.contexts],
        "fitted_on": asdict(model.fitted_on) if model.fitted_on else None,
        "quality": model.quality,
        "saved_with": {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
                       "numpy": np.__version__},
    }
    table = io.BytesIO()
    model.training.to_parquet(table, index=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=2))
        z.writestr("training.parquet", table.getvalue())


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
    """Read a model file (format 1 or 2) and refit its regressor from the training table it holds.

    With `device`, a model fitted on another device (or runtime, or block) is refused, naming both, unless
    `allow_other_device`: its latencies are another device's.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            blob = z.read("training.parquet")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"model {path}: not a predictor model file ({err})") from err
    kind, overhead, sparse_overhead = _checked(path, manifest)
    try:
        training = pd.read_parquet(io.BytesIO(blob))
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"model {path}: training.parquet cannot be read ({err})") from err
    model = LatencyModel.fit(training, kind, source=f"model {path}: training.parquet")
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
    if manifest["format"] == 1:
        print(f"note: model {path} is format 1 (its pickled regressor is not read): refitted from its training "
              f"table; rewrite it as format {FORMAT} with predictor.persist.convert(OLD, NEW) or `jcw fit`",
              file=sys.stderr)
    return model


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
                        f"this predictor reads {' and '.join(map(str, READS))}")
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
