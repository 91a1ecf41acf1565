"""Measurement batches: one model per kernel, as its runtime lowers it, plus the baselines whose time is subtracted
(profiler.runtimes: `Runtime.kernel_model` and `Runtime.baseline_model`), and the runner's job file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from profiler.kernel import KernelSpec
from profiler.sparsity import random_sparse_weight

if TYPE_CHECKING:
    from profiler.runtimes import Runtime


def random_weights(spec: KernelSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a profiled kernel, pruned to the spec's density in its block."""
    shape = spec.weight_shape if spec.op != "fc" else (spec.cout, spec.cin)
    weight = random_sparse_weight(shape, spec.density, spec.block, rng)
    return weight, (0.1 * rng.standard_normal(spec.cout)).astype(np.float32)


@dataclass(frozen=True)
class BatchModel:
    id: str
    file: str
    spec: KernelSpec | None  # None for a baseline
    baseline: str  # id of the model whose time is subtracted ("" for baselines)


def write_batch(specs: list[KernelSpec], runtime: Runtime, directory: Path, seed: int = 0) -> list[BatchModel]:
    """Write the kernel and baseline models of a batch into `directory`, plus its manifest."""
    rng = np.random.default_rng(seed)
    models: dict[str, BatchModel] = {}
    for i, spec in enumerate(specs):
        base_id, base_bytes = runtime.baseline_model(spec)
        if base_id not in models:
            file = base_id + runtime.suffix
            (directory / file).write_bytes(base_bytes)
            models[base_id] = BatchModel(base_id, file, None, "")
        kid = f"k{i:04d}_{spec.name()}"
        (directory / (kid + runtime.suffix)).write_bytes(runtime.kernel_model(spec, *random_weights(spec, rng)))
        models[kid] = BatchModel(kid, kid + runtime.suffix, spec, base_id)
    return list(models.values())


def job_file(models: list[BatchModel], directory: Path, settings: dict) -> Path:
    """The runner's job description: runtime settings and the models to time."""
    job = {**settings, "models": [{"id": m.id, "file": m.file} for m in models]}
    path = directory / "job.json"
    path.write_text(json.dumps(job, indent=1))
    return path
