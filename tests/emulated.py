"""Outputs of a .tflite file computed on the emulated ARM device (arm-emu: aarch64 LiteRT 1.4.0 under qemu-user,
the default Interpreter, so XNNPACK's ARM kernels), to check generated files where they run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

PYTHON = ".arm-emu/python"
INSTALLED = os.access(PYTHON, os.X_OK)
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
