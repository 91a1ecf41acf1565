"""LiteRT's built-in kernels (XNNPACK off): the one sparse path an x86 machine can measure for real.

A sparse stride-1 1x1 conv runs as RESHAPE -> FULLY_CONNECTED on sparse weights -> RESHAPE (1x4 blocks along cin
when the block is "4x1", CSR otherwise) and gets faster with sparsity; every other sparse weight is densified at
load and runs dense, as does a weight stored dense. That FULLY_CONNECTED is written at op version 8 (a sparse
weight), which the XNNPACK delegate leaves to the built-in kernels: loaded with the default settings (XNNPACK on) the
file computes the same. Sparse kernels are slower than dense ones at high density, so a
sparse layer is priced, and exported, in whichever form is predicted faster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.runtimes.base import Chooser, PredictFn, faster_forms
from profiler.runtimes.tflite import TFLiteRuntime


class BuiltinRuntime(TFLiteRuntime):
    name = "builtin"
    description = "LiteRT's built-in kernels (XNNPACK off): 1x1 convs run as sparse FULLY_CONNECTED"
    default_block = "4x1"
    sparse_fc = True
    same_padding = True
    dense_storage_runs_dense = True

    def runner_options(self) -> dict:
        return {"runtime": self.package, "xnnpack": False}

    def run_density(self, df: pd.DataFrame) -> np.ndarray:
        """A kernel runs at its density only as a sparse FULLY_CONNECTED (a fully connected layer or a stride-1 1x1
        conv, `runs_as_sparse_fc`, vectorised); every other weight is densified at load."""
        op = df["op"].to_numpy()
        sparse_fc = (op == "fc") | ((op == "conv") & (df["k"].to_numpy() == 1) & (df["stride"].to_numpy() == 1))
        return np.where(sparse_fc, df["density"].to_numpy(), 1.0).astype(np.float64)

    def storage_chooser(self, predict: PredictFn | None) -> Chooser | None:
        """Store a sparse layer dense where dense is predicted faster (one predictor call for all layers); without a
        predictor every sparse layer is stored sparse."""
        if predict is None:
            return None

        def choose(specs):
            return faster_forms(predict, specs)[1].tolist()

        return choose
