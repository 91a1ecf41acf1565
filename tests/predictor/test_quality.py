"""Every fit says how far it can be trusted: its held-out accuracy, and a warning with the likely cause and the fix
when it is below 80% within +-10%, when rows were clamped, when the table's spread between repeats makes it
noise-bound, or when the device did not repeat its measurements. The tables are injected (the root conftest's
kernel_table): nothing here is timed."""

from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest

from jcw.cli import main
from predictor.quality import advice
from profiler.noise import noise_path, repeatability


@pytest.fixture
def fit(tmp_path, capsys):
    """fit(table, noise=None): `jcw fit` on `table` (a device-noise record beside it): (stdout, stderr, the model's
    quality record)."""

    def run(table: pd.DataFrame, noise: dict | None = None) -> tuple[str, str, dict]:
        path = tmp_path / "local-sparse.csv"
        table.to_csv(path, index=False)
        if noise is not None:
            noise_path(path).write_text(json.dumps(noise))
        capsys.readouterr()
        assert main(["fit", "--table", str(path), "--out", str(tmp_path / "m.jcwm")]) == 0
        out, err = capsys.readouterr()
        return out, err, json.loads(zipfile.ZipFile(tmp_path / "m.jcwm").read("manifest.json"))["quality"]

    return run


def test_a_clean_table_reports_its_held_out_accuracy_and_no_warning(fit, kernel_table, tmp_path):
    out, err, quality = fit(kernel_table())
    assert out.startswith("held-out 29 of 144 kernels: within +-10% ") and "warning" not in err
    assert quality["held_out"]["within10_pct"] >= 80 and quality["held_out"]["n"] == 29
    assert quality["table"] == {"rows": 144, "clamped": 0, "noisy": 0, "median_cv": pytest.approx(0.02 / 1.35),
                                "name": str(tmp_path / "local-sparse.csv")}
    assert advice(quality) == []


def test_a_noise_bound_table_is_named_with_its_cause_and_fix(fit, kernel_table):
    _, err, quality = fit(kernel_table(spread=0.5))
    (line,) = [line for line in err.splitlines() if "noise-bound" in line]
    assert line.startswith("warning: 144 of 144 rows of ") and "(100%) spread over 20% of their kernel's time" in line
    assert "likely cause: the device was busy or its clock unsteady" in line
    for fix in ("more repeats", "min_sample_ms", "a quieter machine", "instruction clock"):
        assert fix in line.split("fix: ")[1]
    assert quality["table"]["noisy"] == 144


def test_clamped_rows_are_counted(fit, kernel_table):
    _, err, quality = fit(kernel_table(clamped=5))
    (line,) = [line for line in err.splitlines() if "clamped" in line]
    assert "5 of 144 rows" in line and "were clamped to 0.0001 ms" in line and "likely cause: " in line
    assert quality["table"]["clamped"] == 5


def test_a_poor_fit_warns_and_says_why(fit, kernel_table):
    _, err, quality = fit(kernel_table(scatter=0.5))
    (line,) = [line for line in err.splitlines() if "held-out kernels" in line]
    assert f"only {quality['held_out']['within10_pct']:.1f}% of 29 held-out kernels were predicted within +-10% " \
           "(asked: 80%" in line
    assert "jcw profile --adaptive" in line  # not noise-bound: more kernels or another regressor
    _, err, _ = fit(kernel_table(spread=0.5, scatter=0.5))
    held_out = [line for line in err.splitlines() if "held-out kernels" in line][0]
    assert "likely cause: the table is noise-bound" in held_out and "min_sample_ms" in held_out


def test_the_device_noise_beside_the_table_goes_into_the_model_and_its_warnings(fit, kernel_table):
    noise = {"device": "local-sparse", **repeatability([1.0] * 12, [1.0] * 6 + [1.5] * 6)}
    _, err, quality = fit(kernel_table(), noise)
    assert quality["device_noise"] == noise
    (line,) = [line for line in err.splitlines() if "measured again" in line]
    assert line.startswith("warning: only 6 of 12 kernels (50%) measured again at the end of the profile of "
                           "'local-sparse' came within +-10% of their first measurement")
