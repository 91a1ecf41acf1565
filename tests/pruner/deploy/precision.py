"""Shared by the precision tests: a small net, and outputs of a .tflite file computed on the emulated ARM device
(arm-emu: aarch64 LiteRT 1.4.0 under qemu-user, the default Interpreter, so XNNPACK's ARM kernels), to check
generated files where they run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
from torch import nn

PYTHON = ".arm-emu/python"
INSTALLED = os.access(PYTHON, os.X_OK)
if not INSTALLED and os.environ.get("CI"):
    raise RuntimeError("the arm-emu device is not installed: .ci/run must run `make arm-emu` before the tests")
SCRIPT = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
run = Interpreter(model_path=sys.argv[1], num_threads=1).get_signature_runner("serving_default")
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.concatenate([run(input=x[i:i + 1])["output"] for i in range(len(x))]))
"""


def arm_outputs(model: Path, images: np.ndarray, work: Path) -> np.ndarray:
    """The model's output for each image (NHWC, float32), one invoke each, run by arm-emu's Python."""
    script, inputs, outputs = work / "run_signature.py", work / f"{model.stem}_in.npy", work / f"{model.stem}_out.npy"
    script.write_text(SCRIPT)
    np.save(inputs, np.ascontiguousarray(images, dtype=np.float32))
    subprocess.run([PYTHON, str(script), str(model), str(inputs), str(outputs)], check=True, timeout=1800,
                   capture_output=True)
    return np.load(outputs)


def small_net() -> nn.Module:
    """Stem, depthwise, 1x1 and strided depthwise convs with ReLU6, global pooling, a classifier."""

    def block(cin, cout, k, stride, groups=1):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    return nn.Sequential(*block(3, 16, 3, 2), *block(16, 16, 3, 1, 16), *block(16, 32, 1, 1), *block(32, 32, 3, 2, 32),
                         *block(32, 64, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
