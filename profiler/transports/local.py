"""This machine: the runner in a subprocess with this Python, or with the entry's `python` (another
interpreter on this machine, e.g. the emulated ARM device's qemu wrapper)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from profiler.devices import Device
from profiler.transports import DeviceError, Interrupted

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
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._aborted = False

    def run(self, batch_dir: Path) -> Iterator[dict]:
        proc = self._start(batch_dir)
        try:
            yield from parse_records(proc.stdout, self.device.name)
            proc.wait(timeout=self.timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
        if self._aborted:
            raise Interrupted(f"device '{self.device.name}': stopped")
        if proc.returncode:
            raise DeviceError(
                f"device '{self.device.name}': runner failed (exit {proc.returncode}): {proc.stderr.read()[-1000:]}"
            )

    def _start(self, batch_dir: Path) -> subprocess.Popen:
        """The runner on `batch_dir`; it exits by itself if this process dies (its stdin is our pipe)."""
        with self._lock:
            if self._aborted:
                raise Interrupted(f"device '{self.device.name}': stopped")
            env = dict(os.environ)
            if self.device.clock == "instructions":  # where the wrapper's counting plugin writes (profiler.runner)
                env["JCW_INSN_FILE"] = str(batch_dir / "instructions.count")
            self._proc = subprocess.Popen(
                [self.python, str(RUNNER), "--watch-stdin", str(batch_dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
            return self._proc

    def abort(self) -> None:
        """Kill the running batch's runner; `run` then raises Interrupted."""
        with self._lock:
            self._aborted = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def close(self) -> None:
        pass
