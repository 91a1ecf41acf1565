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


def _tamper(src, dst, **versions):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                manifest = json.loads(data)
                manifest["versions"].update(versions)
                data = json.dumps(manifest).encode()
            zout.writestr(name, data)


def test_other_scikit_learn_version_fails_clearly_or_refits(fitted, tmp_path):
    model, train = fitted
    persist.save(model, tmp_path / "m.jcwm")
    _tamper(tmp_path / "m.jcwm", tmp_path / "old.jcwm", **{"scikit-learn": "0.24.2"})
    with pytest.raises(UserError, match=r"scikit-learn 0\.24\.2 \(saved\) vs"):
        persist.load(tmp_path / "old.jcwm")
    refitted = persist.load(tmp_path / "old.jcwm", refit=True)
    np.testing.assert_allclose(refitted.predict(train), model.predict(train), rtol=1e-6)
    assert refitted.overhead == model.overhead


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.jcwm").write_text("hello")
    with pytest.raises(UserError, match="not a predictor model file"):
        persist.load(tmp_path / "x.jcwm")
