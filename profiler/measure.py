"""Time whole model files (exported networks) on a device, end to end, in one round trip."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from profiler.devices import Device
from profiler.errors import UserError
from profiler.harness import BatchModel, job_file
from profiler.profile import batch_dir, remove_stale_batch_dirs, runner_settings
from profiler.transports import open_transport


def measure_files(device: Device, paths: list[str | Path], passes: int = 1) -> list[dict]:
    """One record per file, in order: {"file", "latency_ms", "iqr_ms", "cv", "runs", "passes"} or {"file", "error"}.

    Each pass is one batch interleaving every file; a file's latency is the median of its pass medians
    ("passes" lists them), so one burst of load on a shared machine moves one pass, not the result.
    Nothing is subtracted: a deployed network's invoke overhead is part of its latency.
    """
    paths = [Path(p) for p in paths]
    if passes < 1:
        raise UserError(f"passes {passes}: must be at least 1")
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        if path.suffix != device.runtime.suffix:
            raise UserError(f"{path}: device '{device.name}' runs {device.runtime.suffix} models ({device.runtime})")
    remove_stale_batch_dirs(device.name)
    runs = [_one_pass(device, paths) for _ in range(passes)]
    return [_combined(path, [run[i] for run in runs]) for i, path in enumerate(paths)]


def _one_pass(device: Device, paths: list[Path]) -> list[dict]:
    """One runner batch of every file: the runner's record per file (or an error record)."""
    transport = open_transport(device)
    with batch_dir(device.name) as tmp:
        models = []
        for i, path in enumerate(paths):
            mid = f"m{i:04d}_{path.stem}"
            shutil.copy(path, tmp / (mid + path.suffix))
            models.append(BatchModel(mid, mid + path.suffix, None, ""))
        job_file(models, tmp, runner_settings(device))
        try:
            records = {r["id"]: r for r in transport.run(tmp) if "id" in r}
        finally:
            transport.close()
    return [records.get(model.id, {"error": "no result from the runner"}) for model in models]


def _combined(path: Path, records: list[dict]) -> dict:
    """A file's passes as one record; an error in any pass is the file's error."""
    errors = [r["error"] for r in records if "error" in r]
    if errors:
        return {"file": str(path), "error": errors[0]}
    medians = [r["median_ms"] for r in records]
    return {"file": str(path), "latency_ms": float(statistics.median(medians)),
            "iqr_ms": max(r["iqr_ms"] for r in records), "cv": max(r["cv"] for r in records),
            "runs": sum(r["runs"] for r in records), "passes": medians}
