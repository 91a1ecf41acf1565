"""Save and load LatencyModels: a zip of a JSON manifest, the pickled model and its training table.

The manifest (library versions, feature schema) is checked before anything is unpickled, so a
model from another scikit-learn/numpy/Python fails with a message naming the mismatch instead of
loading silently wrong; with refit=True it is refitted from the training table it carries.
"""

from __future__ import annotations

import io
import json
import pickle
import platform
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn

from predictor import features as F
from predictor.latency import LatencyModel
from predictor.network import Overhead
from profiler.errors import UserError

FORMAT = 1
SCHEMA = 2
"""Version of the feature schema: 2 added the dense/sparse regime (features.REGIME, run_density)."""


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def schema() -> dict:
    """The feature schema a pickled regressor depends on; any change makes old pickles unusable."""
    return {
        "version": SCHEMA,
        "base_features": list(F.BASE_FEATURES),
        "tree_features": list(F.TREE_FEATURES),
        "density_knots": list(F.DENSITY_KNOTS),
        "family": list(F.FAMILY),
        "physics_family": list(F.PHYSICS_FAMILY),
    }


def _mismatches(manifest: dict) -> list[str]:
    """Human-readable differences that make the pickle unsafe to use here."""
    saved, here = manifest.get("versions", {}), _versions()
    out = []
    for lib in ("python", "numpy"):  # major.minor must match
        if saved.get(lib, "").split(".")[:2] != here[lib].split(".")[:2]:
            out.append(f"{lib} {saved.get(lib, '?')} (saved) vs {here[lib]} (here)")
    if saved.get("scikit-learn") != here["scikit-learn"]:
        out.append(f"scikit-learn {saved.get('scikit-learn', '?')} (saved) vs {here['scikit-learn']} (here)")
    saved_schema = manifest.get("schema") or {}
    if saved_schema != schema():
        out.append(f"feature schema v{saved_schema.get('version', 1)} (saved) vs v{SCHEMA} (here)")
    return out


def save(model: LatencyModel, path: str | Path) -> None:
    """Write the model file (manifest.json, model.pkl, training.parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "kind": model.kind,
        "versions": _versions(),
        "schema": schema(),
        "contexts": [list(c) for c in model.contexts],
        "overhead": {"per_network_ms": model.overhead.per_network_ms, "per_kernel_ms": model.overhead.per_kernel_ms},
        "rows": len(model.training),
    }
    table = io.BytesIO()
    model.training.to_parquet(table, index=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=2))
        z.writestr("model.pkl", pickle.dumps(model.regressor, protocol=pickle.HIGHEST_PROTOCOL))
        z.writestr("training.parquet", table.getvalue())


def load(path: str | Path, refit: bool = False) -> LatencyModel:
    """Read a model file; on a version or schema mismatch raise UserError, or refit if refit=True."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            training = pd.read_parquet(io.BytesIO(z.read("training.parquet")))
            blob = z.read("model.pkl")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise UserError(f"model {path}: not a predictor model file ({err})") from err
    if manifest.get("format") != FORMAT:
        raise UserError(f"model {path}: file format {manifest.get('format')!r}, this predictor reads {FORMAT}")
    overhead = Overhead(**manifest["overhead"])
    problems = _mismatches(manifest)
    if problems:
        if not refit:
            raise UserError(
                f"model {path} was saved under other library versions or features: {'; '.join(problems)}. "
                "Re-run `jcw fit`, or load with refit (`jcw predict --refit`): the file keeps its training table"
            )
        model = LatencyModel.fit(training, manifest["kind"], source=f"training table in {path}")
        model.overhead = overhead
        return model
    try:
        regressor = pickle.loads(blob)
    except Exception as err:  # an unpicklable blob is a broken file, whatever the exception type
        raise UserError(f"model {path}: the pickled regressor cannot be loaded ({err}); re-run `jcw fit`") from err
    return LatencyModel(manifest["kind"], regressor, training, overhead)
