"""The profiler tests' builders: a simulated Android phone (tests/profiler/fake_device: an `adb` stand-in and
benchmark_model's real output text), and the processes of this machine, for the tests that stop runs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKE = Path(__file__).parent / "fake_device"


@dataclass
class FakePhone:
    """A simulated phone: `root` plays its filesystem; `env` puts the `adb` stand-in on PATH and points it at root."""

    root: Path
    env: dict[str, str]
    serial: str = "R58M12ABCDE"

    def configure(self, **config) -> None:
        """What benchmark_model on the phone does (see fake_device/benchmark_model): format, seconds, crash, ..."""
        (self.root / "fake_config.json").write_text(json.dumps(config))

    def device_yaml(self, name: str, **extra) -> str:
        """A devices.yaml entry for this phone."""
        fields = {"transport": "adb", "runtime": "litert", "serial": self.serial,
                  "benchmark_model": "/data/local/tmp/benchmark_model", **extra}
        return f"  {name}:\n" + "".join(f"    {k}: {v}\n" for k, v in fields.items())


def install_phone(directory: Path) -> FakePhone:
    """A simulated phone in `directory`: its filesystem root, with benchmark_model installed, a 4-core cpufreq sysfs
    and a battery, and the environment that reaches it."""
    root, bin_dir = directory / "phone", directory / "bin"
    (root / "data/local/tmp").mkdir(parents=True)
    bin_dir.mkdir()
    for name in ("adb", "benchmark_model", "getprop"):  # installed with this Python (-S: quick, stdlib only)
        text = (FAKE / name).read_text()
        if text.startswith("#!/usr/bin/env python3"):
            text = text.replace("#!/usr/bin/env python3", f"#!{sys.executable} -S", 1)
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    shutil.copy(bin_dir / "benchmark_model", root / "data/local/tmp/benchmark_model")
    phone = FakePhone(root, {"FAKE_ADB_ROOT": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    (root / "serial").write_text(phone.serial)
    (root / "state").write_text("device")
    for cpu in range(4):
        freq = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        freq.mkdir(parents=True)
        for name, value in [("scaling_governor", "schedutil"), ("scaling_cur_freq", "1800000"),
                            ("scaling_max_freq", "2400000"), ("cpuinfo_max_freq", "2400000")]:
            (freq / name).write_text(value + "\n")
    (root / "sys/class/power_supply/battery").mkdir(parents=True)
    (root / "sys/class/power_supply/battery/temp").write_text("312\n")
    return phone


@pytest.fixture
def fake_phone(tmp_path) -> FakePhone:
    """A simulated phone for a process started with its `env` (this process's environment is left alone)."""
    return install_phone(tmp_path / "device")


@pytest.fixture
def phone(fake_phone, monkeypatch) -> FakePhone:
    """A simulated phone reached by this process's `adb`."""
    for name, value in fake_phone.env.items():
        monkeypatch.setenv(name, value)
    return fake_phone


def live_processes(*texts: str) -> list[int]:
    """Pids of the live processes whose command line holds every one of `texts`."""
    found = []
    for pid in [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if all(text in cmdline for text in texts):
            found.append(pid)
    return found


@pytest.fixture(scope="session")
def processes() -> Callable[..., list[int]]:
    """processes(*texts): pids of the live processes whose command line holds every one of the texts."""
    return live_processes


def models_mapped(pid: int) -> bool:
    """Whether the runner `pid` has loaded every model of its batch (LiteRT memory-maps each file it loads): from
    then on it only measures, printing nothing until the batch ends."""
    try:
        batch = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode())
        maps = Path(f"/proc/{pid}/maps").read_text()
    except (OSError, IndexError):
        return False
    models = {str(path) for path in batch.glob("*.tflite")}
    return bool(models) and models <= {line.split()[-1] for line in maps.splitlines() if line.endswith(".tflite")}


@pytest.fixture(scope="session")
def models_loaded() -> Callable[[int], bool]:
    """models_loaded(pid): whether the runner `pid` has loaded every model of its batch and now measures."""
    return models_mapped


HANG_S = 600  # what only a hung process takes, however busy the machine


def wait_until(condition: Callable[[], object], what: str, timeout: float = HANG_S) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., None]:
    """wait_for(condition, what): poll `condition` until it holds; a deadline of 10 minutes only catches hangs."""
    return wait_until
