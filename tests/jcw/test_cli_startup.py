"""`jcw` starts without importing the heavy libraries; the CLI's copies of model and strategy names stay in step."""

import subprocess
import sys

from jcw import prediction as cli
from predictor.adaptive import STRATEGIES
from predictor.models import MODELS


def test_jcw_help_imports_no_heavy_library():
    code = "import sys, jcw.cli; jcw.cli.build_parser(); print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("'torch'", "'sklearn'", "'pandas'", "'onnx'", "'ai_edge_litert'"):
        assert heavy not in loaded


def test_cli_choices_match_the_library():
    assert tuple(MODELS) == cli.KINDS
    assert cli.STRATEGIES == STRATEGIES
