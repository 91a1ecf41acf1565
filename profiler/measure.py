"""Time whole model files (exported networks) on a device, end to end, in one round trip."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from profiler.devices import Device
from profiler.errors import UserError
from profiler.harness import SUFFIX, BatchModel, job_file
from profiler.profile import runner_settings
from profiler.transports import open_transport


def measure_files(device: Device, paths: list[str | Path]) -> list[dict]:
    """One record per file, in order: {"file", "latency_ms", "iqr_ms", "cv", "runs"} or {"file", "error"}.

    Nothing is subtracted: a deployed network's invoke overhead is part of its latency.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        if path.suffix != SUFFIX[device.flavour]:
            raise UserError(f"{path}: device '{device.name}' runs {SUFFIX[device.flavour]} models ({device.runtime})")
    transport = open_transport(device)
    with tempfile.TemporaryDirectory(prefix=f"jcw-{device.name}-") as tmp:
        models = []
        for i, path in enumerate(paths):
            mid = f"m{i:04d}_{path.stem}"
            shutil.copy(path, Path(tmp) / (mid + path.suffix))
            models.append(BatchModel(mid, mid + path.suffix, None, ""))
        job_file(models, Path(tmp), runner_settings(device))
        try:
            records = {r["id"]: r for r in transport.run(Path(tmp)) if "id" in r}
        finally:
            transport.close()
    results = []
    for path, model in zip(paths, models, strict=True):
        rec = records.get(model.id, {"error": "no result from the runner"})
        if "error" in rec:
            results.append({"file": str(path), "error": rec["error"]})
        else:
            results.append({"file": str(path), "latency_ms": rec["median_ms"], "iqr_ms": rec["iqr_ms"],
                            "cv": rec["cv"], "runs": rec["runs"]})
    return results
