"""Measurement models: one kernel as the lowering emits it, plus the baseline whose time is subtracted.

A standalone kernel is timed inside the thinnest model that runs it. Its baseline is either the
empty harness (input -> RESHAPE -> output: the runtime's per-invoke cost) or, for a kernel measured
in XNNPACK's sparse (NCHW) regime, the wrapper cluster without the kernel (XNNPACK runs a node in
NCHW only inside a stem-conv ... global-mean cluster that passes its gate: profiler.xnnpack).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiler.kernel import KernelSpec
from profiler.lowering import lower_onnx, lower_tflite
from profiler.sparsity import random_sparse_weight
from profiler.tflite_writer import TFLiteModel

SUFFIX = {"xnnpack": ".tflite", "builtin": ".tflite", "onnx": ".onnx"}


def random_weights(spec: KernelSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a profiled kernel, pruned to the spec's density in its block."""
    shape = spec.weight_shape if spec.op != "fc" else (spec.cout, spec.cin)
    weight = random_sparse_weight(shape, spec.density, spec.block, rng)
    return weight, (0.1 * rng.standard_normal(spec.cout)).astype(np.float32)


def input_shape(spec: KernelSpec, flavour: str) -> tuple[int, ...]:
    if spec.op == "fc":
        return (1, spec.cin)
    return (1, spec.cin, spec.h, spec.w) if flavour == "onnx" else (1, spec.h, spec.w, spec.cin)


def needs_wrapper(spec: KernelSpec) -> bool:
    """A kernel measured inside XNNPACK's sparse (NCHW) regime needs a cluster around it; others run alone."""
    return spec.layout == "nchw"


def kernel_model(spec: KernelSpec, flavour: str, weight: np.ndarray, bias: np.ndarray) -> bytes:
    """A model running exactly one kernel (inside an NCHW cluster where its layout asks for one)."""
    if flavour == "onnx":
        from profiler.onnx_writer import OnnxModel

        m = OnnxModel()
        m.outputs = [lower_onnx(m, m.input("x", input_shape(spec, flavour)), spec, weight, bias, "kernel")]
        return m.to_bytes()
    if needs_wrapper(spec):
        if flavour != "xnnpack":
            raise ValueError(f"{spec.name()}: the nchw layout exists only on the xnnpack flavour")
        return nchw_wrapper(spec, (weight, bias)).to_bytes()
    m = TFLiteModel()
    m.outputs = [lower_tflite(m, m.input("x", input_shape(spec, flavour)), spec, weight, bias, flavour, "kernel")]
    return m.to_bytes()


def baseline_model(spec: KernelSpec, flavour: str) -> tuple[str, bytes]:
    """(name, model) of what to subtract from the kernel model's time; equal names share a model."""
    if needs_wrapper(spec):
        return f"nchw_{spec.h}x{spec.w}_{spec.cin}_{_ballast_channels(spec)}", nchw_wrapper(spec, None).to_bytes()
    if flavour == "onnx":
        from profiler.onnx_writer import OnnxModel

        m = OnnxModel()
        m.outputs = [m.node("Identity", [m.input("x", (1, 4))], (1, 4), "y")]
        return "empty_onnx", m.to_bytes()
    m = TFLiteModel()
    m.outputs = [m.reshape(m.input("x", (1, 4)), (4, 1), "y")]
    return "empty_tflite", m.to_bytes()


BALLAST_DENSITY = 0.05
"""Density of the 1x1 conv that keeps an NCHW wrapper's cluster over XNNPACK's 2/3-zeros gate."""


def _ballast_channels(spec: KernelSpec) -> int:
    """Output channels of the wrapper's ballast: enough that its zeros outweigh a dense kernel's weights at the gate
    (3 * 0.95 * cin * b > 2 * (cin * b + cin * cout) needs b > 2.35 * cout), in steps of 16 so baselines are shared."""
    gated = spec.cout if spec.op == "conv" else 0
    return 16 * (int(2.4 * gated) // 16 + 1)


def nchw_wrapper(spec: KernelSpec, kernel: tuple[np.ndarray, np.ndarray] | None) -> TFLiteModel:
    """A cluster XNNPACK runs in NCHW whatever the kernel's density: PAD -> 3x3/2 stem conv on 3 channels, then two
    branches, [the kernel] -> MEAN and a 1x1 "ballast" conv at 5% density -> MEAN whose zeros carry the gate. The
    ballast is a side branch, so the wrapper around a kernel stays small (cheap next to the kernel it times); without
    the kernel, it is the kernel's baseline."""
    rng = np.random.default_rng(0)
    stem = KernelSpec("conv", 2 * spec.h, 2 * spec.w, 3, spec.cin, k=3, stride=2, activation="relu")
    ballast = KernelSpec("conv", spec.h, spec.w, spec.cin, _ballast_channels(spec), density=BALLAST_DENSITY)
    m = TFLiteModel()
    x = lower_tflite(m, m.input("x", (1, stem.h, stem.w, 3)), stem, *random_weights(stem, rng), "xnnpack", "stem")
    side = lower_tflite(m, x, ballast, *random_weights(ballast, rng), "xnnpack", "ballast")
    m.outputs = [m.mean(side, [1, 2], name="ballast_pool")]
    if kernel is not None:
        y = lower_tflite(m, x, spec, *kernel, "xnnpack", "kernel")
        m.outputs.insert(0, m.mean(y, [1, 2], name="pool"))
    return m


@dataclass(frozen=True)
class BatchModel:
    id: str
    file: str
    spec: KernelSpec | None  # None for a baseline
    baseline: str  # id of the model whose time is subtracted ("" for baselines)


def write_batch(specs: list[KernelSpec], flavour: str, directory: Path, seed: int = 0) -> list[BatchModel]:
    """Write the kernel and baseline models of a batch into `directory`, plus its manifest."""
    rng = np.random.default_rng(seed)
    models: dict[str, BatchModel] = {}
    for i, spec in enumerate(specs):
        base_id, base_bytes = baseline_model(spec, flavour)
        if base_id not in models:
            file = base_id + SUFFIX[flavour]
            (directory / file).write_bytes(base_bytes)
            models[base_id] = BatchModel(base_id, file, None, "")
        kid = f"k{i:04d}_{spec.name()}"
        (directory / (kid + SUFFIX[flavour])).write_bytes(kernel_model(spec, flavour, *random_weights(spec, rng)))
        models[kid] = BatchModel(kid, kid + SUFFIX[flavour], spec, base_id)
    return list(models.values())


def job_file(models: list[BatchModel], directory: Path, settings: dict) -> Path:
    """The runner's job description: runtime settings and the models to time."""
    job = {**settings, "models": [{"id": m.id, "file": m.file} for m in models]}
    path = directory / "job.json"
    path.write_text(json.dumps(job, indent=1))
    return path
