"""Ctrl-C (SIGINT) and SIGTERM stop `jcw profile` at once on every transport, and leave nothing behind.

Each test runs the real `jcw profile` as a subprocess on a plan whose first batch is quick and whose next batch
takes minutes, waits until the first batch is stored and the next one is being measured, signals the process (its
pid only, as `kill` does: the runner gets no signal of its own) and checks what is left: exit status, runner
processes, temporary directories and the rows of the finished batches. That the batch being measured left no row
shows the run stopped within it, not at its end, however long a busy machine makes either take. Local devices run
the real runner and LiteRT; the SSH board is this machine behind a real OpenSSH server (the `sshd` fixture); the
phone is simulated (tests/profiler/fake_device: the `adb` stand-in and benchmark_model's real output text, the
models of the second batch after its first kernel made to run for ten minutes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from profiler.devices import load_devices
from profiler.kernel import KernelSpec
from profiler.profile import profile_device
from profiler.store import ResultsStore
from profiler.transports import open_transport

JCW = Path(sys.executable).parent / "jcw"
LOCAL = ("    transport: local\n    runtime: litert\n    xnnpack: false\n    warmup: 1\n    repeats: 300\n"
         "    rounds: 1\n")
PLAN = ("kernels:\n"
        "  - {op: conv, hw: 8, cin: 16, cout: 16, density: [0.5, 1.0]}\n"  # the first batch: about a second
        "  - {op: conv, hw: 112, cin: 256, cout: [256, 128], k: 3, density: [0.5, 1.0]}\n")  # 300 samples of ~1 s each


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class Profile:
    """`jcw profile` run as a real process, in its own session, with TMPDIR pointed into the test's directory."""

    def __init__(self, tmp_path: Path, devices: str, names: list[str], env: dict | None = None, batch_size: int = 2):
        (tmp_path / "devices.yaml").write_text("devices:\n" + devices)
        (tmp_path / "plan.yaml").write_text(PLAN)
        self.tmp, self.out = tmp_path / "tmp", tmp_path / "results"
        self.tmp.mkdir()
        self.stderr = tmp_path / "stderr.txt"
        cmd = [str(JCW), "profile", *[a for name in names for a in ("--device", name)],
               "--devices", str(tmp_path / "devices.yaml"), "--plan", str(tmp_path / "plan.yaml"),
               "--out", str(self.out), "--batch-size", str(batch_size)]
        with open(self.stderr, "w") as stderr:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                         env={**os.environ, **(env or {}), "TMPDIR": str(self.tmp)})

    def table(self, device: str) -> pd.DataFrame:
        return pd.read_csv(self.out / f"{device}.csv")

    def stored(self, device: str) -> bool:
        """Whether the device's first batch is in its table."""
        assert self.proc.poll() is None, self.stderr.read_text()
        return (self.out / f"{device}.csv").exists()

    def stop(self, signum: int, wait_for) -> None:
        """Send `signum` and wait until the process has exited."""
        self.proc.send_signal(signum)
        try:
            wait_for(lambda: self.proc.poll() is not None, f"jcw profile to exit after signal {signum}")
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def assert_interrupted(self, code: int) -> None:
        assert self.proc.returncode == code, self.stderr.read_text()
        assert "jcw: interrupted; finished rows are saved, re-run to resume" in self.stderr.read_text()
        assert list(self.tmp.iterdir()) == []  # every local batch dir removed


def test_sigint_stops_a_local_run_within_a_kernel_and_keeps_the_finished_batches(tmp_path, wait_for, processes,
                                                                                  models_loaded):
    """Real runner and LiteRT on this machine: SIGINT during the second batch kills the runner at once."""
    run = Profile(tmp_path, "  here:\n" + LOCAL, ["here"])
    wait_for(lambda: run.stored("here"), "the first batch's rows")
    before = run.table("here")
    wait_for(lambda: any(map(models_loaded, processes("runner.py", str(run.tmp)))), "a runner measuring the next batch")

    run.stop(signal.SIGINT, wait_for)
    run.assert_interrupted(130)
    assert processes("runner.py", str(run.tmp)) == []
    assert len(before) == 2 and run.table("here").equals(before)  # the first batch kept, nothing of the second


def test_sigterm_stops_every_worker_of_a_farm_ssh_board_and_local_device(tmp_path, sshd, wait_for, processes,
                                                                          models_loaded):
    """A real sshd board and a local device, two workers: SIGTERM kills both runners (the board's over SSH,
    which must die on the server, not just lose its channel) and removes the remote batch dir."""
    work = tmp_path / "remote"
    devices = sshd.device_yaml("board", work_dir=work, python=sys.executable, repeats=300) + "  here:\n" + LOCAL
    run = Profile(tmp_path, devices, ["board", "here"])
    wait_for(lambda: run.stored("board") and run.stored("here"), "the first batch of both devices")
    before = {name: run.table(name) for name in ("board", "here")}
    wait_for(lambda: all(any(map(models_loaded, processes("runner.py", str(where)))) for where in (work, run.tmp)),
             "both runners measuring their next batch")

    run.stop(signal.SIGTERM, wait_for)
    run.assert_interrupted(143)
    assert processes("runner.py", str(run.tmp)) == []
    # searched everywhere: a runner outliving its sshd session is reparented away from sshd's descendants
    wait_for(lambda: not processes("runner.py", str(work)), "the board's runner to exit")
    wait_for(lambda: list(work.iterdir()) == [], "the remote batch dir to go")
    for name, rows in before.items():
        assert len(rows) == 2 and run.table(name).equals(rows), name


def test_sigint_stops_the_phone_mid_batch_and_keeps_the_kernels_it_finished(tmp_path, fake_phone, wait_for,
                                                                            processes):
    """Simulated phone: SIGINT while the second batch's second kernel runs (for ten minutes, unless stopped) stops
    benchmark_model and the batch shell on the phone, removes the phone's batch dir, and keeps the rows of the first
    batch and of the second batch's first kernel (the phone reports kernels one by one)."""
    root = fake_phone.root
    fake_phone.configure(seconds=600, seconds_from=7)
    run = Profile(tmp_path, fake_phone.device_yaml("pixel", cooldown_s=0), ["pixel"], env=fake_phone.env, batch_size=3)
    calls = root / "benchmark_calls"
    # batch 1: a baseline and 3 kernels (calls 1-4); batch 2: baseline (5), kernel (6), kernel (7) ...
    wait_for(lambda: run.stored("pixel") and calls.exists() and int(calls.read_text() or 0) >= 7,
             "the second kernel of the second batch")

    run.stop(signal.SIGINT, wait_for)
    run.assert_interrupted(130)
    assert processes(str(root)) == []  # neither the batch shell nor benchmark_model is left on the phone
    assert list((root / "data/local/tmp/jcw").iterdir()) == []
    assert len(run.table("pixel")) == 4


def test_a_killed_runs_local_batch_dirs_are_removed_by_the_next_run_of_that_device(tmp_path, monkeypatch):
    """Real run on this machine; the leftovers are made by hand: a dead pid's dir goes, a live run's dir and
    another device's dir stay."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale, live, other = (tmp_path / f"jcw-here-{dead_pid()}-k1ll3d", tmp_path / f"jcw-here-{os.getpid()}-l1ve",
                          tmp_path / f"jcw-here-2-{dead_pid()}-0ther")
    for path in (stale, live, other):
        path.mkdir()
        (path / "job.json").write_text("{}")
    (tmp_path / "devices.yaml").write_text("devices:\n  here:\n" + LOCAL)
    device = load_devices(tmp_path / "devices.yaml")["here"]
    profile_device(device, [KernelSpec("fc", 1, 1, 64, 16)], ResultsStore(tmp_path / "here.csv"))
    assert not stale.exists() and live.is_dir() and other.is_dir()


def test_a_killed_runs_remote_dir_is_removed_at_connect_and_a_live_runs_dir_is_kept(tmp_path, sshd):
    """Real sshd: a jcw-<pid>-* dir of a dead session goes, one of a live session (any live pid) stays."""
    work = tmp_path / "remote"
    stale, live = work / f"jcw-{dead_pid()}-0123456789abcdef", work / f"jcw-{os.getpid()}-fedcba9876543210"
    for path in (stale, live):
        path.mkdir(parents=True)
        (path / "runner.py").write_text("")
    (work / "notes.txt").write_text("not ours")
    (tmp_path / "devices.yaml").write_text("devices:\n" + sshd.device_yaml("board", work_dir=work))
    open_transport(load_devices(tmp_path / "devices.yaml")["board"]).close()
    assert sorted(p.name for p in work.iterdir()) == sorted([live.name, "notes.txt"])


def test_a_killed_runs_phone_dir_is_removed_at_connect_and_a_live_runs_dir_is_kept(tmp_path, phone):
    """Simulated phone: a jcw-<pid>-* dir whose profiler (a pid on this machine) is gone goes; a live one stays."""
    work = phone.root / "data/local/tmp/jcw"
    stale, live = work / f"jcw-{dead_pid()}-0123abcd", work / f"jcw-{os.getpid()}-89abcdef"
    for path in (stale, live):
        path.mkdir(parents=True)
        (path / "job.json").write_text("{}")
    (tmp_path / "devices.yaml").write_text("devices:\n" + phone.device_yaml("pixel"))
    open_transport(load_devices(tmp_path / "devices.yaml")["pixel"]).close()
    assert [p.name for p in work.iterdir()] == [live.name]
