"""Model files: round trip, and a clear failure (or a refit) under other library versions."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from predictor import persist
from predictor.latency import LatencyModel
from predictor.network import Overhead
from profiler.errors import UserError
from tests.test_predictor_model import PHONE


@pytest.fixture(scope="module")
def fitted():
    raw = pd.read_csv(PHONE)
    train = raw[raw["layer"].isin([5, 7])].reset_index(drop=True)
    model = LatencyModel.fit(train)
    model.overhead = Overhead(0.3, 0.02)
    return model, train


def test_round_trip_keeps_predictions_and_overhead(fitted, tmp_path):
    model, train = fitted
    persist.save(model, tmp_path / "m.jcwm")
    loaded = persist.load(tmp_path / "m.jcwm")
    np.testing.assert_array_equal(loaded.predict(train), model.predict(train))
    assert loaded.overhead == model.overhead and loaded.contexts == model.contexts


def _tamper(src, dst, versions=None, schema=None):
    """Copy a model file, overriding manifest versions and/or replacing its feature schema."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                manifest = json.loads(data)
                manifest["versions"].update(versions or {})
                manifest["schema"] = schema if schema is not None else manifest["schema"]
                data = json.dumps(manifest).encode()
            zout.writestr(name, data)


def test_other_scikit_learn_version_fails_clearly_or_refits(fitted, tmp_path):
    model, train = fitted
    persist.save(model, tmp_path / "m.jcwm")
    _tamper(tmp_path / "m.jcwm", tmp_path / "old.jcwm", versions={"scikit-learn": "0.24.2"})
    with pytest.raises(UserError, match=r"scikit-learn 0\.24\.2 \(saved\) vs"):
        persist.load(tmp_path / "old.jcwm")
    refitted = persist.load(tmp_path / "old.jcwm", refit=True)
    np.testing.assert_allclose(refitted.predict(train), model.predict(train), rtol=1e-6)
    assert refitted.overhead == model.overhead


SCHEMA_V1 = {  # what files saved before the dense/sparse regime split carry
    "base_features": ["one", "in_elems", "patch_elems", "out_elems", "nnz_weights", "macs",
                      *(f"macs_d{i}" for i in range(7))],
    "tree_features": ["h", "w", "k", "stride", "cin", "cout", "density", "log_macs", "log_nnz_macs",
                      "log_in_elems", "log_out_elems", "log_out_pixels", "op", "block", "activation"],
    "density_knots": [0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0],
    "family": ["op", "h", "w", "k", "stride", "block", "activation", "device", "runtime", "flavour"],
}


def test_model_from_before_the_regime_split_fails_clearly_or_refits(fitted, tmp_path):
    model, train = fitted
    persist.save(model, tmp_path / "m.jcwm")
    _tamper(tmp_path / "m.jcwm", tmp_path / "v1.jcwm", schema=SCHEMA_V1)
    with pytest.raises(UserError, match=rf"feature schema v1 \(saved\) vs v{persist.SCHEMA} \(here\)"):
        persist.load(tmp_path / "v1.jcwm")
    np.testing.assert_allclose(persist.load(tmp_path / "v1.jcwm", refit=True).predict(train), model.predict(train))


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.jcwm").write_text("hello")
    with pytest.raises(UserError, match="not a predictor model file"):
        persist.load(tmp_path / "x.jcwm")
