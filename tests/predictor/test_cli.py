"""`jcw fit` and `jcw predict` end to end through jcw.cli.main."""

from __future__ import annotations

import pandas as pd
import pytest

from jcw.cli import main
from predictor import persist
from predictor.latency import LatencyModel


def test_fit_then_predict_keeps_row_order(phone_table, tmp_path, capsys):
    raw = pd.read_csv(phone_table)
    raw[raw["layer"].isin([1, 7])].to_parquet(tmp_path / "train.parquet")
    assert (
        main(
            ["fit", "--table", str(phone_table), "--table", str(tmp_path / "train.parquet"), "--out",
             str(tmp_path / "m.jcwm")]
        )
        == 0
    )
    out = capsys.readouterr().out
    held_out = float(out.split("within +-10% ")[1].split("%")[0])
    assert held_out > 95
    configs = raw.sample(200, random_state=3).drop(columns="latency_ms")
    configs.to_csv(tmp_path / "configs.csv", index=False)
    assert (
        main(
            [
                "predict",
                "--predictor",
                str(tmp_path / "m.jcwm"),
                "--table",
                str(tmp_path / "configs.csv"),
                "--out",
                str(tmp_path / "pred.csv"),
            ]
        )
        == 0
    )
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == [*configs.columns, "predicted_ms"]
    pd.testing.assert_frame_equal(pred.drop(columns="predicted_ms"), configs.reset_index(drop=True))
    truth = raw.loc[configs.index, "latency_ms"].to_numpy()
    assert (abs(pred["predicted_ms"] / truth - 1) < 0.1).mean() > 0.95


def test_fit_reports_a_missing_column(phone_table, tmp_path, capsys):
    pd.read_csv(phone_table).drop(columns="density").to_csv(tmp_path / "bad.csv", index=False)
    assert main(["fit", "--table", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "m.jcwm")]) == 3
    err = capsys.readouterr().err
    assert "bad.csv" in err and "density" in err


@pytest.mark.parametrize("holdout", ["20", "1", "-0.1", "nan"])
def test_fit_refuses_a_holdout_that_is_no_share(phone_table, tmp_path, capsys, holdout):
    out = tmp_path / "m.jcwm"
    assert main(["fit", "--table", str(phone_table), "--out", str(out), "--holdout-share", holdout]) == 3
    assert "--holdout-share" in capsys.readouterr().err and not out.exists()


def test_fit_reports_an_infinite_latency_with_its_row(phone_table, tmp_path, capsys):
    raw = pd.read_csv(phone_table)
    raw.loc[2, "latency_ms"] = float("inf")
    raw.to_csv(tmp_path / "inf.csv", index=False)
    assert main(["fit", "--table", str(tmp_path / "inf.csv"), "--out", str(tmp_path / "m.jcwm")]) == 3
    err = capsys.readouterr().err
    assert "inf.csv" in err and "row 3" in err and len(err.strip().splitlines()) == 1


def test_predict_names_the_rows_of_an_impossible_kernel_in_its_table(phone_table, tmp_path, capsys):
    """Each distinct kernel of a --table is checked once (by KernelSpec); a refused one is named by all its rows."""
    raw = pd.read_csv(phone_table)
    persist.save(LatencyModel.fit(raw[raw["layer"] == 5]), tmp_path / "m.jcwm")
    kernels = raw.head(6).drop(columns="latency_ms")
    kernels.loc[[1, 4], ["k", "cin", "cout", "density"]] = [2, 8, 8, 0.5]  # one kernel, twice: an even k
    kernels.to_csv(tmp_path / "k.csv", index=False)
    assert main(["predict", "--predictor", str(tmp_path / "m.jcwm"), "--table", str(tmp_path / "k.csv"), "--out",
                 str(tmp_path / "p.csv")]) == 3
    assert capsys.readouterr().err == (f"jcw predict: error: {tmp_path / 'k.csv'}: rows 2, 5: KernelSpec field "
                                       "'k' = 2: must be odd (padding k // 2 on every side)\n")
    assert not (tmp_path / "p.csv").exists()
