"""Model files: round trip from the saved state (no refit, no code run), old files refitted and never unpickled, and
one-line errors for broken ones."""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

from jcw.cli import main
from predictor import persist, table
from predictor.latency import LatencyModel
from predictor.models import MODELS
from predictor.network import Overhead
from predictor.trees import TreeEnsemble
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


def test_round_trip_loads_the_fitted_state_without_a_refit_and_keeps_the_overhead(fitted, saved, monkeypatch):
    """Loading fits nothing and asks scikit-learn for nothing: the trees are predicted from the saved arrays."""
    model, train = fitted
    assert sorted(zipfile.ZipFile(saved).namelist()) == ["manifest.json", "state.npz", "training.parquet"]
    with monkeypatch.context() as m:
        for cls, name in ((LatencyModel, "fit"), (HistGradientBoostingRegressor, "fit"),
                          (HistGradientBoostingRegressor, "predict")):
            m.setattr(cls, name, lambda *a, **k: pytest.fail("a refit or a scikit-learn model at load"))
        loaded = persist.load(saved)
        np.testing.assert_array_equal(loaded.predict(train), model.predict(train))
    assert loaded.overhead == model.overhead and loaded.contexts == model.contexts


@pytest.mark.parametrize("kind", [k for k in MODELS if k != "physics"])
def test_every_kind_round_trips_to_the_same_predictions(fitted, tmp_path, kind):
    """Array state for every kind that has one; the JCW interpolation (a lookup table) is rebuilt from its table."""
    train = fitted[1]
    model = LatencyModel.fit(train, kind)
    persist.save(model, tmp_path / "k.jcwm")
    has_state = "state.npz" in zipfile.ZipFile(tmp_path / "k.jcwm").namelist()
    assert has_state == (kind != "jcw-interp")
    np.testing.assert_array_equal(persist.load(tmp_path / "k.jcwm").predict(train), model.predict(train))


@pytest.mark.parametrize("leaves", [31, 64, 200], ids=["leaf_masks_32bit", "leaf_masks_64bit", "walked"])
def test_the_trees_predict_exactly_as_scikit_learn_does(fitted, leaves):
    """predictor.trees against the scikit-learn models it copies, unseen categories and missing values included, by
    both ways it predicts: leaf masks (trees of at most 64 leaves) and walking the trees (larger ones, the forest)."""
    train = fitted[1]
    df = table.normalise(train, "t")
    x = np.column_stack([df[["h", "cin", "cout", "k", "stride"]].to_numpy(float), np.log(df["latency_ms"])])
    x[::7, 2] = np.nan
    y = df["latency_ms"].to_numpy()
    booster = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=leaves, min_samples_leaf=2,
                                            categorical_features=[3], random_state=0).fit(x, y)
    forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(np.nan_to_num(x), y)
    query = x.copy()
    query[::5, 3] = 9  # a kernel size no tree has seen: an unknown category
    query[1::9, 3] = np.nan  # and a missing one
    trees = TreeEnsemble.from_hist_boosting(booster)
    assert (trees._masks is None) == (leaves > 64)
    assert trees._masks is None or trees._masks.dtype == (np.uint32 if leaves <= 32 else np.uint64)
    np.testing.assert_array_equal(trees.predict(query), booster.predict(query))
    np.testing.assert_array_equal(TreeEnsemble.from_forest(forest).predict(np.nan_to_num(query)),
                                  forest.predict(np.nan_to_num(query)))


def _with_trees(src, dst, change):
    """Copy a model file with `change(arrays)` applied to the arrays of its state.npz."""
    with zipfile.ZipFile(src) as z, np.load(io.BytesIO(z.read("state.npz"))) as npz:
        arrays = {name: npz[name].copy() for name in npz.files}
    change(arrays)
    return _rewrite(src, dst, files={"state.npz": _npz(**arrays)})


def _cycle(a):
    """The first split's left child made the tree's root: a loop, which a walk would follow for ever."""
    a["trees/left"][np.flatnonzero(~a["trees/is_leaf"])[0]] = 0


def _far_column(a):
    a["trees/feature"][np.flatnonzero(~a["trees/is_leaf"])[0]] = 99


@pytest.mark.parametrize("change, message", [
    (_cycle, "tree nodes do not form trees"),
    (_far_column, "tree splits name columns, categories or bitsets out of range"),
], ids=["cycle", "column_out_of_range"])
def test_trees_that_are_not_trees_are_refused_naming_the_file(saved, tmp_path, change, message):
    broken = _with_trees(saved, tmp_path / "broken.jcwm", change)
    with pytest.raises(UserError, match=re.escape(f"not a fitted 'physics' model (ValueError: {message})")) as err:
        persist.load(broken)
    assert str(err.value).startswith(f"model {broken}: ")


def _rewrite(src, dst, manifest=None, files=None, table=None, drop=()):
    """Copy a model file, with `manifest(dict)` changing its manifest, `files` added or replaced, the entries `drop`
    left out and `table(frame)` changing its training table."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        contents = {name: zin.read(name) for name in zin.namelist() if name not in drop}
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
    return {**{k: v for k, v in manifest.items() if k != "state"}, "format": 1, "versions": versions,
            "schema": {"version": 1}}


def format_2(manifest: dict) -> dict:
    """A manifest as the format-2 save wrote it (no state: the model was refitted on load)."""
    return {**{k: v for k, v in manifest.items() if k != "state"}, "format": 2}


def test_a_format_2_file_is_refitted_with_a_note(fitted, saved, tmp_path, capsys):
    model, train = fitted
    old = _rewrite(saved, tmp_path / "old.jcwm", format_2, drop=["state.npz"])
    np.testing.assert_array_equal(persist.load(old).predict(train), model.predict(train))
    err = capsys.readouterr().err
    assert "format 2: refitted from its training table" in err and "persist.convert" in err
    assert len(err.splitlines()) == 1


def test_the_payload_is_live(planted_pickle, tmp_path):
    """The check the tests below rely on: unpickling the planted payload does create its marker."""
    pickle.loads(planted_pickle(tmp_path / "marker"))
    assert (tmp_path / "marker").exists()


def test_a_planted_pickle_is_never_unpickled(fitted, saved, planted_pickle, tmp_path, capsys):
    model, train = fitted
    marker = tmp_path / "marker"
    planted = _rewrite(saved, tmp_path / "planted.jcwm", format_1, {"model.pkl": planted_pickle(marker)},
                       drop=["state.npz"])
    loaded = persist.load(planted)
    np.testing.assert_array_equal(loaded.predict(train), model.predict(train))
    assert loaded.overhead == model.overhead
    err = capsys.readouterr().err
    assert "format 1" in err and "persist.convert" in err and len(err.splitlines()) == 1

    train.drop(columns="latency_ms").to_csv(tmp_path / "configs.csv", index=False)
    assert main(["predict", "--predictor", str(planted), "--table", str(tmp_path / "configs.csv"),
                 "--out", str(tmp_path / "pred.csv")]) == 0
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "pred.csv")["predicted_ms"], model.predict(train))
    assert not marker.exists()


def test_convert_rewrites_a_format_1_file_without_its_pickle(fitted, saved, planted_pickle, tmp_path, capsys):
    model, train = fitted
    old = _rewrite(saved, tmp_path / "old.jcwm", format_1, {"model.pkl": planted_pickle(tmp_path / "marker")},
                   drop=["state.npz"])
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
        (_set("format", 4), None, "field 'format' is 4; this predictor reads 1, 2 and 3"),
        (None, lambda t: t.drop(columns="density"), "training.parquet: missing column density"),
        (None, lambda t: t.drop(columns="latency_ms"), "training.parquet: missing column latency_ms"),
    ],
    ids=["list", "no_overhead", "overhead_list", "overhead_nan", "overhead_string", "overhead_half", "unknown_kind",
         "kind_list", "format_4", "no_density_column", "no_latency_column"],
)
def test_a_malformed_file_is_a_one_line_error_naming_the_file_and_field(saved, tmp_path, manifest, table, message):
    broken = _rewrite(saved, tmp_path / "broken.jcwm", manifest, table=table)
    with pytest.raises(UserError, match=message) as err:
        persist.load(broken)
    assert str(err.value).startswith(f"model {broken}: ") and "\n" not in str(err.value)


def _npz(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize("files, drop, message", [
    ({"model.pkl": b"planted"}, (), "unexpected entry 'model.pkl'; a format 3 model file holds only manifest.json, "
                                    "state.npz, training.parquet"),
    ({"state.npz": _npz(coef=np.array([object()], dtype=object))}, (), "state.npz is not plain numeric arrays"),
    ({"state.npz": _npz(coef=np.array(["x"]))}, (), "state.npz entry 'coef' is of type <U1, not numbers"),
    ({"state.npz": _npz(coef=np.ones(3))}, (), "its state is not a fitted 'physics' model"),
    ({}, ("state.npz",), "manifest.json has a 'state' but the file has no state.npz"),
], ids=["extra_entry", "object_array", "string_array", "missing_arrays", "no_arrays"])
def test_a_state_that_is_not_plain_numbers_of_the_model_is_refused(saved, tmp_path, files, drop, message):
    broken = _rewrite(saved, tmp_path / "broken.jcwm", files=files, drop=drop)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        persist.load(broken)
    assert str(err.value).startswith(f"model {broken}: ") and "\n" not in str(err.value)


def test_unreadable_parts_are_one_line_errors(saved, tmp_path):
    (tmp_path / "x.jcwm").write_text("hello")
    with pytest.raises(UserError, match="not a predictor model file"):
        persist.load(tmp_path / "x.jcwm")
    _rewrite(saved, tmp_path / "t.jcwm", files={"training.parquet": b"PAR1 truncated"})
    with pytest.raises(UserError, match="training.parquet cannot be read"):
        persist.load(tmp_path / "t.jcwm")
