"""Every fit says how far it can be trusted: its held-out accuracy, and a warning with the likely cause and the fix
when it is below 80% within +-10%, when rows were clamped, when the table's spread between repeats makes it
noise-bound, or when the device did not repeat its measurements. The tables are injected: nothing here is timed,
except one real profile whose re-measure is checked for what it records, not for its numbers."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from jcw.cli import main
from predictor.quality import advice
from profiler.noise import MIN_KERNEL_MS, noise_advice, noise_path, repeatability, table_advice, table_summary
from profiler.store import COLUMNS


def kernel_table(spread: float = 0.02, scatter: float = 0.0, clamped: int = 0, seed: int = 0) -> pd.DataFrame:
    """A local-sparse table of 1x1 convs whose latency is proportional to their work, each row's interquartile range
    `spread` of its latency, scattered by a lognormal of sigma `scatter`, its first `clamped` rows at the floor."""
    rng = np.random.default_rng(seed)
    rows = []
    for hw in (14, 28, 56):
        for cin in (16, 32, 64, 96):
            for cout in (16, 32, 64, 96):
                for density in (0.3, 0.6, 1.0):
                    ms = 2e-7 * hw * hw * cin * cout * density * float(np.exp(rng.normal(0, scatter)))
                    rows.append({"device": "local-sparse", "runtime": "builtin", "runtime_version": "test 1.0",
                                 "op": "conv", "h": hw, "w": hw, "cin": cin, "cout": cout, "k": 1, "stride": 1,
                                 "groups": 1, "density": density, "block": "4x1", "activation": "none",
                                 "layout": "nhwc", "latency_ms": ms, "iqr_ms": spread * ms, "cv": spread / 1.35,
                                 "model_ms": ms + 0.01, "baseline_ms": 0.01, "runs": 60, "timestamp": "",
                                 "version": "test"})
    table = pd.DataFrame(rows, columns=COLUMNS[: COLUMNS.index("version") + 1])
    table.loc[: clamped - 1, "latency_ms"] = MIN_KERNEL_MS
    return table


def fit(tmp_path, table: pd.DataFrame, capsys, noise: dict | None = None) -> tuple[str, str, dict]:
    """`jcw fit` on `table` (with a device-noise record beside it): (stdout, stderr, the model's quality record)."""
    path = tmp_path / "local-sparse.csv"
    table.to_csv(path, index=False)
    if noise is not None:
        noise_path(path).write_text(json.dumps(noise))
    capsys.readouterr()
    assert main(["fit", "--table", str(path), "--out", str(tmp_path / "m.jcwm")]) == 0
    out, err = capsys.readouterr()
    manifest = json.loads(zipfile.ZipFile(tmp_path / "m.jcwm").read("manifest.json"))
    return out, err, manifest["quality"]


def test_a_clean_table_reports_its_held_out_accuracy_and_no_warning(tmp_path, capsys):
    out, err, quality = fit(tmp_path, kernel_table(), capsys)
    assert out.startswith("held-out 29 of 144 kernels: within +-10% ") and "warning" not in err
    assert quality["held_out"]["within10_pct"] >= 80 and quality["held_out"]["n"] == 29
    assert quality["table"] == {"rows": 144, "clamped": 0, "noisy": 0, "median_cv": pytest.approx(0.02 / 1.35),
                                "name": str(tmp_path / "local-sparse.csv")}
    assert advice(quality) == []


def test_a_noise_bound_table_is_named_with_its_cause_and_fix(tmp_path, capsys):
    _, err, quality = fit(tmp_path, kernel_table(spread=0.5), capsys)
    (line,) = [line for line in err.splitlines() if "noise-bound" in line]
    assert line.startswith("warning: 144 of 144 rows of ") and "(100%) spread over 20% of their kernel's time" in line
    assert "likely cause: the device was busy or its clock unsteady" in line
    for fix in ("more repeats", "min_sample_ms", "a quieter machine", "instruction clock"):
        assert fix in line.split("fix: ")[1]
    assert quality["table"]["noisy"] == 144


def test_clamped_rows_are_counted(tmp_path, capsys):
    _, err, quality = fit(tmp_path, kernel_table(clamped=5), capsys)
    (line,) = [line for line in err.splitlines() if "clamped" in line]
    assert "5 of 144 rows" in line and "were clamped to 0.0001 ms" in line and "likely cause: " in line
    assert quality["table"]["clamped"] == 5


def test_a_poor_fit_warns_and_says_why(tmp_path, capsys):
    _, err, quality = fit(tmp_path, kernel_table(scatter=0.5), capsys)
    (line,) = [line for line in err.splitlines() if "held-out kernels" in line]
    assert f"only {quality['held_out']['within10_pct']:.1f}% of 29 held-out kernels were predicted within +-10% " \
           "(asked: 80%" in line
    assert "jcw profile --adaptive" in line  # not noise-bound: more kernels or another regressor
    _, err, _ = fit(tmp_path, kernel_table(spread=0.5, scatter=0.5), capsys)
    held_out = [line for line in err.splitlines() if "held-out kernels" in line][0]
    assert "likely cause: the table is noise-bound" in held_out and "min_sample_ms" in held_out


def test_the_device_noise_beside_the_table_goes_into_the_model_and_its_warnings(tmp_path, capsys):
    noise = {"device": "local-sparse", **repeatability([1.0] * 12, [1.0] * 6 + [1.5] * 6)}
    _, err, quality = fit(tmp_path, kernel_table(), capsys, noise)
    assert quality["device_noise"] == noise
    (line,) = [line for line in err.splitlines() if "measured again" in line]
    assert line.startswith("warning: only 6 of 12 kernels (50%) measured again at the end of the profile of "
                           "'local-sparse' came within +-10% of their first measurement")


def test_repeatability_and_its_threshold():
    assert repeatability([1.0, 2.0, 4.0, 8.0], [1.05, 2.3, 4.0, 6.0]) == {
        "kernels": 4, "within10_pct": 50.0, "median_change_pct": pytest.approx(10.0),
        "worst_change_pct": pytest.approx(25.0)}
    assert noise_advice({"device": "d", **repeatability([1.0] * 5, [1.0] * 4 + [2.0])}) == []  # 80%: enough
    assert table_advice(table_summary(kernel_table(spread=0.19))) == []  # within +-10% of the median: not noisy


def test_a_profile_measures_a_sample_again_and_records_how_it_repeats(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("kernels:\n  - op: conv\n    hw: 28\n    cin: 64\n    cout: [32, 64]\n    density: [0.2, 1.0]\n")
    capsys.readouterr()
    assert main(["profile", "--device", "local-sparse", "--plan", str(plan), "--out", str(tmp_path / "r"),
                 "--noise-kernels", "3"]) == 0
    noise = json.loads((tmp_path / "r" / "local-sparse.noise.json").read_text())
    assert noise["device"] == "local-sparse" and noise["kernels"] == 3 and 0 <= noise["within10_pct"] <= 100
    line = [line for line in capsys.readouterr().out.splitlines() if "device noise" in line][0]
    assert line.startswith("local-sparse: device noise: ") and "of 3 kernels measured again" in line
    assert line.endswith(f"wrote {tmp_path / 'r' / 'local-sparse.noise.json'}")
