"""Transports carry a batch of models to a device, run them there and stream the runner's records back.

Every transport has `run(batch_dir) -> Iterator[dict]` yielding the runner's JSON records (see
profiler/runner.py), `abort()` and `close()`. A device that cannot be reached or drops mid-batch raises
DeviceError naming the device. `abort()` may be called from another thread: it kills the batch being run
at once (its runner, on the device too) and makes `run` raise Interrupted; a batch cut short by an
exception in the caller's own thread (Ctrl-C) is killed the same way when its generator is closed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from profiler.errors import UserError

if TYPE_CHECKING:  # every `jcw` start imports DeviceError; devices.yaml's schema checker (jsonschema) is slow to import
    from profiler.devices import Device


class DeviceError(UserError):
    """A device that cannot be reached, or dropped, or lacks what the profiler needs."""


class Interrupted(Exception):
    """Profiling was stopped (Ctrl-C or SIGTERM): nothing is wrong with the device."""


class Stop:
    """The stop switch of one profiling run, shared by its worker threads.

    The main thread calls `trip()` on Ctrl-C or SIGTERM: every transport being watched aborts its batch (its
    runner is killed within one kernel's measurement, not at the end of the plan), and `check()` raises
    Interrupted in workers that are between batches.
    """

    def __init__(self) -> None:
        self._tripped = threading.Event()
        self._lock = threading.Lock()
        self._watched: set = set()

    def check(self) -> None:
        """Raise Interrupted once the switch is tripped."""
        if self._tripped.is_set():
            raise Interrupted("stopped")

    def trip(self) -> None:
        with self._lock:
            self._tripped.set()
            for transport in self._watched:
                transport.abort()

    @contextmanager
    def watching(self, transport) -> Iterator[None]:
        """While inside, `trip()` aborts `transport`."""
        with self._lock:
            self._watched.add(transport)
        try:
            yield
        finally:
            with self._lock:
                self._watched.discard(transport)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_transport(device: Device):
    """The transport for a device entry."""
    if device.transport == "local":
        from profiler.transports.local import LocalTransport

        return LocalTransport(device)
    if device.transport == "ssh":
        from profiler.transports.ssh import SSHTransport

        return SSHTransport(device)
    if device.transport == "adb":
        from profiler.transports.adb import AdbTransport

        return AdbTransport(device)
    raise DeviceError(f"device '{device.name}': unknown transport '{device.transport}'")
