"""Model files: round trip by refitting, never unpickling (old files included), and one-line errors for broken ones."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from jcw.cli import main
from predictor import persist
from predictor.latency import LatencyModel
from predictor.network import Overhead
from profiler.errors import UserError


@pytest.fixture(scope="module")
def fitted(phone_table):
    raw = pd.read_csv(phone_table)
    train = raw[raw["layer"].isin([5, 7])].reset_index(drop=True)
    model = LatencyModel.fit(train)
    model.overhead = Overhead(0.3, 0.02)
    return model, train


@pytest.fixture
def saved(fitted, tmp_path):
    persist.save(fitted[0], tmp_path / "m.jcwm")
    return tmp_path / "m.jcwm"


def test_round_trip_refits_the_same_predictions_and_keeps_the_overhead(fitted, saved):
    model, train = fitted
    assert sorted(zipfile.ZipFile(saved).namelist()) == ["manifest.json", "training.parquet"]  # no pickle
    loaded = persist.load(saved)
    np.testing.assert_array_equal(loaded.predict(train), model.predict(train))
    assert loaded.overhead == model.overhead and loaded.contexts == model.contexts


def _rewrite(src, dst, manifest=None, files=None, table=None):
    """Copy a model file, with `manifest(dict)` changing its manifest, `files` added or replaced and
    `table(frame)` changing its training table."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        contents = {name: zin.read(name) for name in zin.namelist()}
        if manifest is not None:
            contents["manifest.json"] = json.dumps(manifest(json.loads(contents["manifest.json"]))).encode()
        if table is not None:
            out = io.BytesIO()
            table(pd.read_parquet(io.BytesIO(contents["training.parquet"]))).to_parquet(out, index=False)
            contents["training.parquet"] = out.getvalue()
        for name, data in {**contents, **(files or {})}.items():
            zout.writestr(name, data)
    return dst


def format_1(manifest: dict) -> dict:
    """A manifest as the format-1 save wrote it, under other library versions and the old feature schema."""
    versions = {"python": "3.10.4", "scikit-learn": "0.24.2", "numpy": "1.21.0"}
    return {**manifest, "format": 1, "versions": versions, "schema": {"version": 1}}


def test_the_payload_is_live(planted_pickle, tmp_path):
    """The check the tests below rely on: unpickling the planted payload does create its marker."""
    pickle.loads(planted_pickle(tmp_path / "marker"))
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("old", [True, False], ids=["format_1", "format_2_with_a_planted_pickle"])
def test_a_planted_pickle_is_never_unpickled(fitted, saved, planted_pickle, tmp_path, capsys, old):
    model, train = fitted
    marker = tmp_path / "marker"
    planted = _rewrite(saved, tmp_path / "planted.jcwm", format_1 if old else None,
                       {"model.pkl": planted_pickle(marker)})
    loaded = persist.load(planted)
    np.testing.assert_array_equal(loaded.predict(train), model.predict(train))
    assert loaded.overhead == model.overhead
    err = capsys.readouterr().err
    assert ("format 1" in err and "persist.convert" in err and len(err.splitlines()) == 1) if old else err == ""

    train.drop(columns="latency_ms").to_csv(tmp_path / "configs.csv", index=False)
    assert main(["predict", "--predictor", str(planted), "--table", str(tmp_path / "configs.csv"),
                 "--out", str(tmp_path / "pred.csv")]) == 0
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "pred.csv")["predicted_ms"], model.predict(train))
    assert not marker.exists()


def test_convert_rewrites_a_format_1_file_without_its_pickle(fitted, saved, planted_pickle, tmp_path, capsys):
    model, train = fitted
    old = _rewrite(saved, tmp_path / "old.jcwm", format_1, {"model.pkl": planted_pickle(tmp_path / "marker")})
    persist.convert(old, tmp_path / "new.jcwm")
    assert capsys.readouterr().err.startswith("note: model")
    assert json.loads(zipfile.ZipFile(tmp_path / "new.jcwm").read("manifest.json"))["format"] == persist.FORMAT
    assert "model.pkl" not in zipfile.ZipFile(tmp_path / "new.jcwm").namelist()
    np.testing.assert_array_equal(persist.load(tmp_path / "new.jcwm").predict(train), model.predict(train))
    assert capsys.readouterr().err == "" and not (tmp_path / "marker").exists()


def _set(field, value):
    return lambda m: {**m, field: value}


def _without(field):
    return lambda m: {k: v for k, v in m.items() if k != field}


@pytest.mark.parametrize(
    "manifest, table, message",
    [
        (lambda m: [m], None, "manifest.json must be a JSON object, got list"),
        (_without("overhead"), None, "field 'overhead' is None"),
        (_set("overhead", [0.3, 0.02]), None, r"field 'overhead' is \[0.3, 0.02\]"),
        (_set("overhead", {"per_network_ms": float("nan"), "per_kernel_ms": 0.0}), None, "field 'overhead'"),
        (_set("overhead", {"per_network_ms": "0.3", "per_kernel_ms": 0.0}), None, "field 'overhead'"),
        (_set("overhead", {"per_network_ms": 0.3}), None, "field 'overhead'"),
        (_set("kind", "deep-net"), None, "field 'kind' is 'deep-net'; expected one of physics"),
        (_set("kind", ["physics"]), None, "field 'kind'"),
        (_set("format", 3), None, "field 'format' is 3; this predictor reads 1 and 2"),
        (None, lambda t: t.drop(columns="density"), "training.parquet: missing column density"),
        (None, lambda t: t.drop(columns="latency_ms"), "training.parquet: missing column latency_ms"),
    ],
    ids=["list", "no_overhead", "overhead_list", "overhead_nan", "overhead_string", "overhead_half", "unknown_kind",
         "kind_list", "format_3", "no_density_column", "no_latency_column"],
)
def test_a_malformed_file_is_a_one_line_error_naming_the_file_and_field(saved, tmp_path, manifest, table, message):
    broken = _rewrite(saved, tmp_path / "broken.jcwm", manifest, table=table)
    with pytest.raises(UserError, match=message) as err:
        persist.load(broken)
    assert str(err.value).startswith(f"model {broken}: ") and "\n" not in str(err.value)


def test_unreadable_parts_are_one_line_errors(saved, tmp_path):
    (tmp_path / "x.jcwm").write_text("hello")
    with pytest.raises(UserError, match="not a predictor model file"):
        persist.load(tmp_path / "x.jcwm")
    _rewrite(saved, tmp_path / "t.jcwm", files={"training.parquet": b"PAR1 truncated"})
    with pytest.raises(UserError, match="training.parquet cannot be read"):
        persist.load(tmp_path / "t.jcwm")
