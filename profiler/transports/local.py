"""This machine: the runner in a subprocess with this Python, or with the entry's `python` (another
interpreter on this machine, e.g. the emulated ARM device's qemu wrapper)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from profiler.devices import Device
from profiler.transports import DeviceError

RUNNER = Path(__file__).resolve().parent.parent / "runner.py"


def parse_records(lines, device: str) -> Iterator[dict]:
    """The runner's JSON records from its output lines; other lines (runtime logs) are skipped."""
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise DeviceError(f"device '{device}': garbled runner output: {line[:200]}") from None


class LocalTransport:
    def __init__(self, device: Device, timeout_s: float = 3600):
        self.device = device
        self.timeout_s = timeout_s
        self.python = device.options.get("python", sys.executable)
        if not os.access(self.python, os.X_OK):
            setup = device.options.get("setup")
            hint = f": run `{setup}` first" if setup else "; fix python: in devices.yaml"
            raise DeviceError(f"device '{device.name}': interpreter {self.python} is not installed{hint}")

    def run(self, batch_dir: Path) -> Iterator[dict]:
        proc = subprocess.Popen(
            [self.python, str(RUNNER), str(batch_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            yield from parse_records(proc.stdout, self.device.name)
            proc.wait(timeout=self.timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode:
            raise DeviceError(
                f"device '{self.device.name}': runner failed (exit {proc.returncode}): {proc.stderr.read()[-1000:]}"
            )

    def close(self) -> None:
        pass
