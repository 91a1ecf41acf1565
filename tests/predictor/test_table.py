"""Tables the predictor reads: accepted layouts, and clear errors for unusable ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from predictor.table import load, read_table, write_table
from profiler.errors import UserError


def _table(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hw": 28,
            "k": 3,
            "stride": 1,
            "cin": np.arange(1, n + 1) * 8,
            "cout": 32,
            "density": 0.5,
            "latency_ms": np.linspace(1, 2, n),
        }
    )


def test_phone_style_table_gets_defaults(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    df = load(path)
    assert (df["h"] == 28).all() and (df["w"] == 28).all()
    assert set(df["op"]) == {"conv"} and set(df["block"]) == {"1x4"} and set(df["groups"]) == {1}


def test_profiler_table_as_parquet(tmp_path):
    t = (
        _table()
        .drop(columns="hw")
        .assign(
            h=28,
            w=14,
            device="pixel",
            runtime="litert",
            flavour="xnnpack",
            op="conv",
            groups=1,
            block="4x1",
            activation="relu",
            iqr_ms=0.01,
            cv=0.02,
            runs=20,
            timestamp="2026-01-01",
            version="0.1",
        )
    )
    path = tmp_path / "t.parquet"
    t.to_parquet(path)
    df = load(path)
    assert list(df["w"].unique()) == [14] and set(df["device"]) == {"pixel"} and set(df["block"]) == {"4x1"}
    # an older toolkit's context columns: `runtime` the runner's package, `flavour` the runtime's name
    assert set(df["runtime"]) == {"xnnpack"} and set(df["runtime_version"]) == {"litert"}


@pytest.mark.parametrize("column", ["cout", "latency_ms", "hw"])
def test_missing_column_is_named_with_the_file(tmp_path, column):
    path = tmp_path / "bad.csv"
    _table().drop(columns=column).to_csv(path, index=False)
    with pytest.raises(UserError, match=rf"bad\.csv.*missing column.*'?{column}"):
        load(path)


def test_empty_table(tmp_path):
    path = tmp_path / "empty.csv"
    _table().iloc[:0].to_csv(path, index=False)
    with pytest.raises(UserError, match="empty"):
        load(path)


@pytest.mark.parametrize("bad", [np.nan, 0.0, -1.0, np.inf, "fast"])
def test_bad_latencies_name_their_rows(tmp_path, bad):
    t = _table().astype({"latency_ms": object})
    t.loc[[1, 4], "latency_ms"] = bad
    path = tmp_path / "lat.csv"
    t.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"lat\.csv.*rows 2, 5"):
        load(path)


def test_impossible_kernel_is_reported_with_its_row(tmp_path):
    t = _table()
    t.loc[3, "k"] = 2
    path = tmp_path / "k.csv"
    t.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"row 4.*'k'"):
        load(path)


@pytest.mark.parametrize("column, bad, message", [
    ("cin", "wide", "missing or non-numeric shape values in rows 2, 5"),
    ("density", np.nan, "missing or non-numeric shape values in rows 2, 5"),
    ("cout", 32.5, "non-integer sizes in rows 2, 5"),
])
def test_unusable_shape_values_name_their_rows(tmp_path, column, bad, message):
    t = _table().astype({column: object})
    t.loc[[1, 4], column] = bad
    path = tmp_path / "shape.csv"
    t.to_csv(path, index=False)
    with pytest.raises(UserError, match=rf"shape\.csv: {message}"):
        load(path)


def test_a_written_csv_reads_back_the_same_values(tmp_path):
    """Rows written by pyarrow's CSV writer: every float to the last bit, integers, text, empty cells."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"cin": np.arange(1000) * 8, "density": rng.choice([0.3, 0.5, 1.0], 1000),
                          "predicted_ms": rng.lognormal(-3, 2, 1000), "device": rng.choice(["pixel", "rpi"], 1000)})
    frame.loc[3, "predicted_ms"] = np.nan
    write_table(frame, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().startswith("cin,density,predicted_ms,device\n0,")
    pd.testing.assert_frame_equal(read_table(tmp_path / "out.csv"), frame)


def test_text_that_needs_quotes_is_written_by_pandas(tmp_path):
    frame = pd.DataFrame({"layer": ["a,b", 'say "x"', "plain"], "cin": [8, 16, 24]})
    write_table(frame, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == 'layer,cin\n"a,b",8\n"say ""x""",16\nplain,24\n'
    pd.testing.assert_frame_equal(read_table(tmp_path / "out.csv"), frame)
