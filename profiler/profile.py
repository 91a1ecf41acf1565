"""Profiling: a plan of kernels -> batches of models -> a device -> rows in the device's results table."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from profiler.devices import Device, get_device
from profiler.errors import UserError
from profiler.harness import BatchModel, job_file, write_batch
from profiler.kernel import KernelSpec
from profiler.noise import MIN_KERNEL_MS, REMEASURE, describe, noise_advice, noise_path, repeatability
from profiler.plan import load_plan
from profiler.store import OPTIONAL, ResultsStore
from profiler.transports import Stop, open_transport, pid_alive

BATCH_SIZE = 96


@dataclass
class ProfileResult:
    device: str
    measured: int = 0
    skipped: int = 0
    failed: list[tuple[KernelSpec, str]] = field(default_factory=list)
    error: str = ""
    noise: dict | None = None  # the re-measured kernels' repeatability (remeasure), when checked


def runner_settings(device: Device) -> dict:
    """What the runner needs to know of the device entry."""
    return {
        **device.runtime.runner_options(), "threads": device.threads, "cpus": list(device.cpus),
        "warmup": device.warmup, "repeats": device.repeats, "rounds": device.rounds, "max_cv": device.max_cv,
        "min_sample_ms": device.min_sample_ms, "clock": device.clock,
    }


def batch_rows(device: Device, models: list[BatchModel], records: list[dict]) -> tuple[list[dict], list]:
    """Rows for the results table (kernel time = model time - baseline time) and failed kernels."""
    runtime_version = next((r["runtime"] for r in records if r.get("event") == "start"), "?")
    by_id = {r["id"]: r for r in records if "id" in r}
    stamp, toolkit = datetime.now(timezone.utc).isoformat(timespec="seconds"), version("jcw-toolkit")
    rows, failed = [], []
    for m in models:
        if m.spec is None:
            continue
        rec, base = by_id.get(m.id), by_id.get(m.baseline)
        problem = next((r.get("error") for r in (rec, base) if r and "error" in r), None)
        if rec is None or base is None or problem:
            failed.append((m.spec, problem or "no result from the runner"))
            continue
        rows.append({
            "device": device.name, "runtime": device.runtime.name, "runtime_version": runtime_version,
            **m.spec.to_row(),
            "latency_ms": max(rec["median_ms"] - base["median_ms"], MIN_KERNEL_MS), "iqr_ms": rec["iqr_ms"],
            "cv": rec["cv"], "model_ms": rec["median_ms"], "baseline_ms": base["median_ms"], "runs": rec["runs"],
            "timestamp": stamp, "version": toolkit, **{c: rec.get(c, d) for c, d in OPTIONAL.items()},
        })
    return rows, failed


@contextmanager
def batch_dir(device: str) -> Iterator[Path]:
    """A fresh local directory for one batch, jcw-DEVICE-PID-*: a later run tells a killed run's leftovers by PID."""
    with tempfile.TemporaryDirectory(prefix=f"jcw-{device}-{os.getpid()}-") as tmp:
        yield Path(tmp)


def remove_stale_batch_dirs(device: str) -> list[Path]:
    """Remove the device's batch directories that killed runs left in the temp dir (their PID is gone)."""
    # tempfile's random suffixes hold no '-', so device "a" never takes "a-1"'s dirs for its own
    name = re.compile(rf"jcw-{re.escape(device)}-(\d+)-[a-z0-9_]+")
    stale = [path for path in Path(tempfile.gettempdir()).glob(f"jcw-{device}-*")
             if (m := name.fullmatch(path.name)) and path.is_dir() and not pid_alive(int(m.group(1)))]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def profile_device(
    device: Device, specs: list[KernelSpec], store: ResultsStore, batch_size: int = BATCH_SIZE,
    progress: tqdm | None = None, stop: Stop | None = None,
) -> ProfileResult:
    """Measure the kernels of `specs` not yet in `store`, a batch per round trip; rows are saved per batch.

    `stop`, tripped by another thread, aborts the batch being measured and raises Interrupted; a batch cut
    short by it (or by anything else) keeps the rows of the kernels it finished.
    """
    remove_stale_batch_dirs(device.name)
    stop = stop or Stop()
    done = store.measured()
    todo = [s for s in specs if s.key() not in done]
    result = ProfileResult(device.name, skipped=len(specs) - len(todo))
    if progress is not None:
        progress.reset(total=len(specs))
        progress.update(result.skipped)
    transport = open_transport(device)
    try:
        with stop.watching(transport):
            for start in range(0, len(todo), batch_size):
                stop.check()
                batch = todo[start:start + batch_size]
                rows, failed = _measure_batch(device, transport, batch, store, seed=start)
                result.measured += len(rows)
                result.failed += failed
                if progress is not None:
                    progress.update(len(batch))
    finally:
        transport.close()
    return result


def _measure_batch(
    device: Device, transport, batch: list[KernelSpec], store: ResultsStore, seed: int
) -> tuple[list[dict], list]:
    """Run one batch and store its rows; (rows, failed kernels)."""
    records: list[dict] = []
    with batch_dir(device.name) as tmp:
        models = write_batch(batch, device.runtime, tmp, seed=seed)
        job_file(models, tmp, runner_settings(device))
        try:
            for record in transport.run(tmp):
                records.append(record)
        except BaseException:  # cut short: keep the kernels already reported (adb reports them one by one)
            store.append(batch_rows(device, models, records)[0])
            raise
    rows, failed = batch_rows(device, models, records)
    store.append(rows)
    return rows, failed


def remeasure(device: Device, specs: list[KernelSpec], store: ResultsStore, count: int = REMEASURE,
              seed: int = 0, stop: Stop | None = None) -> dict | None:
    """Measure `count` of the table's kernels of `specs` (a seeded random sample) again, in one batch that is not
    stored, and write how well they repeat (profiler.noise.repeatability) to DEVICE.noise.json beside the table;
    None when the table holds none of them or none could be measured again."""
    first = {_spec_key(row): row["latency_ms"] for row in store.table.to_dict("records")
             if row["device"] == device.name and row["runtime"] == device.runtime.name}
    held = [s for s in dict.fromkeys(specs) if s.key() in first]
    if not held or count < 1:
        return None
    picked = [held[i] for i in sorted(np.random.default_rng(seed).choice(len(held), min(count, len(held)),
                                                                         replace=False))]
    transport, records = open_transport(device), []
    try:
        with (stop or Stop()).watching(transport), batch_dir(device.name) as tmp:
            models = write_batch(picked, device.runtime, tmp, seed=seed)
            job_file(models, tmp, runner_settings(device))
            records = list(transport.run(tmp))
    finally:
        transport.close()
    again = {_spec_key(row): row["latency_ms"] for row in batch_rows(device, models, records)[0]}
    keys = [k for k in map(KernelSpec.key, picked) if k in again]
    if not keys:  # none measured again (the runner failed them): nothing to say of the device's noise
        return None
    noise = {"device": device.name, "table": str(store.path), **repeatability([first[k] for k in keys],
                                                                              [again[k] for k in keys]),
             "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    noise_path(store.path).write_text(json.dumps(noise, indent=1))
    return noise


def _spec_key(row: dict) -> tuple:
    return KernelSpec.from_row(row).key()


def _profile_one(
    device: Device, specs: list[KernelSpec], out: Path, batch_size: int, position: int, lock: threading.Lock,
    stop: Stop, noise_kernels: int = REMEASURE,
) -> ProfileResult:
    with lock:
        bar = tqdm(desc=f"profile {device.name}", unit="kernel", position=position, leave=True, file=sys.stderr)
    try:
        store = ResultsStore(out / f"{device.name}.csv")
        result = profile_device(device, specs, store, batch_size, progress=bar, stop=stop)
        result.noise = remeasure(device, specs, store, noise_kernels, stop=stop)
        return result
    except UserError as err:
        return ProfileResult(device.name, error=str(err))
    finally:
        bar.close()


def _gather(futures: list[Future], stop: Stop) -> list[ProfileResult]:
    """Every worker's results; on Ctrl-C or SIGTERM, stop the workers (their runners are killed at once), wait
    while they store finished rows and clean up, and re-raise."""
    try:
        return [r for future in futures for r in future.result()]
    except KeyboardInterrupt:
        stop.trip()
        wait(futures)
        raise


def profile_cli(args: argparse.Namespace) -> int:
    """`jcw profile`: each device gets a worker (devices on this machine share one) and its own table."""
    devices = [get_device(name, args.devices) for name in dict.fromkeys(args.device)]
    out = Path(args.out)
    plans = {d.runtime.block: load_plan(args.plan, d.runtime.block, args.max_kernels) for d in devices}
    lock = threading.Lock()
    local = [d for d in devices if d.transport == "local"]
    remote = [d for d in devices if d.transport != "local"]
    positions = {d.name: i for i, d in enumerate(devices)}

    batch_size = args.batch_size or BATCH_SIZE

    stop = Stop()

    def run_group(group: list[Device]) -> list[ProfileResult]:
        return [_profile_one(d, plans[d.runtime.block], out, batch_size, positions[d.name], lock, stop,
                             args.noise_kernels) for d in group]

    groups = ([local] if local else []) + [[d] for d in remote]
    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        results = _gather([pool.submit(run_group, group) for group in groups], stop)
    status = 0
    for r in results:
        table = out / f"{r.device}.csv"
        if r.error:
            print(f"{r.device}: stopped: {r.error}", file=sys.stderr)
            status = 1
        else:
            print(f"{r.device}: {r.measured} measured, {r.skipped} already in {table}, {len(r.failed)} failed")
        if r.noise is not None:
            print(f"{r.device}: device noise: {describe(r.noise)}; wrote {noise_path(table)}")
            for advice in noise_advice(r.noise):
                print(advice, file=sys.stderr)
        for spec, error in r.failed:
            print(f"{r.device}: failed {spec.name()}: {error.strip().splitlines()[-1] if error.strip() else error}",
                  file=sys.stderr)
            status = 1
    return status
