"""Transports carry a batch of models to a device, run them there and stream the runner's records back.

Every transport has `run(batch_dir) -> Iterator[dict]` yielding the runner's JSON records (see
profiler/runner.py) and `close()`. A device that cannot be reached or drops mid-batch raises
DeviceError naming the device.
"""

from __future__ import annotations

from profiler.devices import Device
from profiler.errors import UserError


class DeviceError(UserError):
    """A device that cannot be reached, or dropped, or lacks what the profiler needs."""


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
