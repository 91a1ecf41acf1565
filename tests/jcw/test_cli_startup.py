"""`jcw` starts without importing the heavy libraries, and `jcw predict --table` needs none that fit; the CLI's copies
of model and strategy names stay in step."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

from jcw import prediction as cli
from predictor import persist
from predictor.adaptive import STRATEGIES
from predictor.latency import LatencyModel
from predictor.models import MODELS

PHONE = Path(__file__).resolve().parents[2] / "data" / "resnet18_phone_layers_0-9.csv"  # real phone measurements


def test_jcw_help_imports_no_heavy_library():
    code = "import sys, jcw.cli; jcw.cli.build_parser(); print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("'torch'", "'sklearn'", "'pandas'", "'onnx'", "'ai_edge_litert'", "'jsonschema'",
                  "'importlib.metadata'"):
        assert heavy not in loaded


def test_predicting_a_table_imports_nothing_that_fits_and_exits_with_the_status(tmp_path):
    """A saved model predicts without scikit-learn, scipy, torch or the pruner; `python -m jcw.cli` (jcw.cli.run, the
    `jcw` script) exits with main's status."""
    raw = pd.read_csv(PHONE)
    train = raw[raw["layer"].isin([5, 7])]
    persist.save(LatencyModel.fit(train), tmp_path / "m.jcwm")
    train.drop(columns="latency_ms").to_csv(tmp_path / "k.csv", index=False)
    args = ["predict", "--predictor", str(tmp_path / "m.jcwm"), "--table", str(tmp_path / "k.csv"), "--out",
            str(tmp_path / "p.csv")]
    code = f"import sys, jcw.cli; assert jcw.cli.main({args!r}) == 0; print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("'sklearn'", "'scipy'", "'torch'", "'pruner'", "'jsonschema'"):
        assert heavy not in loaded
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(train)
    assert subprocess.run([sys.executable, "-m", "jcw.cli", *args]).returncode == 0
    args[2] = str(tmp_path / "missing.jcwm")
    failed = subprocess.run([sys.executable, "-m", "jcw.cli", *args], capture_output=True, text=True)
    assert failed.returncode == 3 and "missing.jcwm" in failed.stderr


def test_cli_choices_match_the_library():
    assert tuple(MODELS) == cli.KINDS
    assert cli.STRATEGIES == STRATEGIES
