"""LiteRT with XNNPACK at a reduced precision, where XNNPACK runs dense kernels only: INT8 (QS8) and FP16.

Zeros buy nothing on these runtimes, so a candidate is pruned in channels only: every density floor is 1.0, every
kernel runs dense, a pruned model's layers are stored dense, and a sparse weight reaching the lowering is refused
with the reason. Neither has a sparse regime (no cluster, no verdict).

- "xnnpack-int8": full-integer files (profiler.quantize): XNNPACK's QS8 kernels (int8 per-channel weights, int8
  activations). The profiler times each kernel with int8 input and output, as it runs inside a network; an exported
  network keeps float input and output, QUANTIZE and DEQUANTIZE at its ends (in the per-network overhead).
- "xnnpack-fp16": FP32 files carrying the metadata entry reduced_precision_support = "fp16accfp16", on which the
  delegate asks XNNPACK for FP16 inference (LiteRT v1.4.0 tflite/delegates/xnnpack/xnnpack_delegate.cc:1153-1171);
  on a CPU without FP16 arithmetic XNNPACK ignores the hint and runs FP32.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import pandas as pd

from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.quantize import quantize_int8
from profiler.runtimes.base import Chooser, PredictFn
from profiler.runtimes.tflite import TFLiteRuntime
from profiler.tflite_writer import TFLiteModel

LAYER_KINDS = ("first", "strided", "residual", "last", "general")
"""The layer kinds the search's density floors are set for (pruner.model.graph.KINDS)."""
KERNEL_SAMPLES = 4
"""Random inputs the INT8 ranges of a profiled kernel are calibrated on (its timing does not depend on them)."""


class DenseXnnpack(TFLiteRuntime):
    """LiteRT with XNNPACK where weights run dense whatever their zeros: channel pruning only."""

    density_floors = dict.fromkeys(LAYER_KINDS, 1.0)
    weight_stage = 0.0
    dense_storage_runs_dense = True
    sparse_refusal: ClassVar[str] = ""
    """Why the runtime refuses sparse weights, with the source that says so."""

    def runner_options(self) -> dict:
        return {"runtime": self.package, "xnnpack": True}

    def lower(self, m: TFLiteModel, x: int, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray, name: str) -> int:
        if spec.is_sparse:
            raise UserError(f"layer '{name}' at density {spec.density:g}: {self.sparse_refusal}")
        return super().lower(m, x, spec, weight, bias, name)

    def run_density(self, df: pd.DataFrame) -> np.ndarray:
        """Every kernel runs dense."""
        return np.ones(len(df), dtype=np.float64)

    def measured_forms(self, name: str, spec: KernelSpec, cluster=None) -> list[KernelSpec]:
        return [spec.replace(density=1.0)]

    def storage_chooser(self, predict: PredictFn | None) -> Chooser:
        """Every layer stored dense (its zeros kept as zeros), predictor or not."""

        def choose(specs):
            return [True] * len(specs)

        return choose


class XnnpackInt8Runtime(DenseXnnpack):
    name = "xnnpack-int8"
    description = "LiteRT with XNNPACK's INT8 (QS8) kernels: full-integer files, dense weights, channel pruning only"
    precision = "int8"
    sparse_refusal = ("xnnpack-int8 runs dense weights only: XNNPACK has no sparse INT8 kernels (its SpMM is FP32 and "
                      "FP16) and ai-edge-quantizer cannot quantize weights behind DENSIFY")

    def kernel_model(self, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray) -> bytes:
        """The FP32 kernel quantized to INT8 with int8 input and output, its ranges from random inputs."""
        model = super().kernel_model(spec, weight, bias)
        shape = (KERNEL_SAMPLES, spec.cin) if spec.op == "fc" else (KERNEL_SAMPLES, spec.h, spec.w, spec.cin)
        samples = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        return quantize_int8(model, [samples], float_io=False, source=f"kernel {spec.name()}")

    def deployed(self, model: bytes, calibration: Iterable[np.ndarray] | None) -> bytes:
        """The network quantized to INT8, float input and output, calibrated on `calibration` (NCHW batches)."""
        if calibration is None:
            raise UserError(f"runtime '{self.name}' quantizes to INT8 and needs calibration images: give the JCW its "
                            "data (jcw export --data DATA)")
        nhwc = (np.asarray(batch).transpose(0, 2, 3, 1) if np.ndim(batch) == 4 else batch for batch in calibration)
        return quantize_int8(model, nhwc, float_io=True, source="the exported network")


class XnnpackFp16Runtime(DenseXnnpack):
    name = "xnnpack-fp16"
    description = "LiteRT with XNNPACK in FP16 (the file's reduced-precision hint): dense weights, channel pruning only"
    precision = "fp16"
    metadata = {"reduced_precision_support": b"fp16accfp16"}
    sparse_refusal = ("xnnpack-fp16 runs dense weights only: sparse FP16 crashes or computes NaN in the XNNPACK of "
                      "LiteRT 1.4.0, whose NCHW convolution picks its operator by the filter's type, running FP32 "
                      "kernels on FP16 tensors (XNNPACK src/subgraph/convolution-2d.c:84-85, "
                      "depthwise-convolution-2d.c:67-68) and reading FP16 filters as FP32 (convolution-2d.c:76)")
