"""The SSH transport against a REAL OpenSSH server (sshd on 127.0.0.1, started by the `sshd` fixture).

The "board" is this machine reached over SSH: the runner is pushed over SFTP and run by sshd with
the venv's Python (so ai_edge_litert is importable there), exactly as on a Raspberry Pi.
"""

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from jcw.cli import main
from profiler.devices import load_devices
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.profile import profile_device
from profiler.store import ResultsStore
from profiler.transports import DeviceError, open_transport

SPECS = [KernelSpec("conv", 28, 28, 64, c, density=d, block="4x1") for c in (32, 64) for d in (0.2, 1.0)] + [
    KernelSpec("conv", 14, 14, 32, 32, k=3, activation="relu", block="4x1"),
    KernelSpec("fc", 1, 1, 512, 64, block="4x1"),
]


def devices_file(tmp_path: Path, *entries: str) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n" + "".join(entries))
    return path


def board(tmp_path: Path, sshd, name: str = "board", **extra):
    fields = {"work_dir": tmp_path / "remote", "python": sys.executable, **extra}
    path = devices_file(tmp_path, sshd.device_yaml(name, **fields))
    return load_devices(path)[name]


def test_profile_over_ssh_agrees_with_a_local_run_of_the_same_plan(tmp_path, sshd):
    """The board measures every kernel with the same runtime as a local run. How close the two runs' timings are is
    bench/ssh_bench.py's to say (alternating rounds): a busy machine may slow one run and not the other."""
    device = board(tmp_path, sshd)
    ssh_store = ResultsStore(tmp_path / "ssh.csv")
    result = profile_device(device, SPECS, ssh_store, batch_size=3)
    assert (result.measured, result.failed, result.error) == (len(SPECS), [], "")
    local = load_devices(devices_file(tmp_path, "  here:\n    transport: local\n    runtime: litert\n"
                                      "    xnnpack: false\n    warmup: 1\n    repeats: 5\n    rounds: 1\n"))["here"]
    local_store = ResultsStore(tmp_path / "local.csv")
    profile_device(local, SPECS, local_store, batch_size=3)

    assert ssh_store.measured() == local_store.measured() == {s.key() for s in SPECS}
    assert set(ssh_store.table.device) == {"board"}
    assert ssh_store.table.runtime_version.str.contains("ai_edge_litert").all()
    assert set(ssh_store.table.runtime_version) == set(local_store.table.runtime_version)
    keys = ["op", "h", "cin", "cout", "k", "density"]
    both = ssh_store.table.merge(local_store.table, on=keys, suffixes=("_ssh", "_local"))
    assert len(both) == len(SPECS) and (both.model_ms_ssh > 0).all() and (both.model_ms_local > 0).all()
    print("model time over SSH / locally:", (both.model_ms_ssh / both.model_ms_local).round(2).tolist())
    assert list((tmp_path / "remote").iterdir()) == []  # every batch's remote dir was cleaned


def test_sshd_killed_mid_batch_keeps_rows_names_the_device_and_resume_completes(tmp_path, sshd, wait_for):
    """Kill sshd (and its sessions) while the second batch's runner is running on the board."""
    device = board(tmp_path, sshd)
    store = ResultsStore(tmp_path / "board.csv")

    class KillDuringSecondBatch:
        def reset(self, total):
            self.batches = 0

        def update(self, n):
            self.batches += 1
            if self.batches == 2:  # first batch stored (the first update counts skipped kernels)
                threading.Thread(target=kill_when_runner_starts, daemon=True).start()

    def kill_when_runner_starts():
        with contextlib.suppress(AssertionError):  # no runner (a hang): kill anyway, profile_device then fails
            wait_for(lambda: any(b"runner.py" in Path(f"/proc/{p}/cmdline").read_bytes()
                                 for p in sshd.sessions() if os.path.exists(f"/proc/{p}/cmdline")),
                     "the second batch's runner")
        sshd.kill()

    with pytest.raises(DeviceError, match=r"device 'board'.*connection dropped.*re-run to resume") as info:
        profile_device(device, SPECS, store, batch_size=2, progress=KillDuringSecondBatch())
    assert "\n" not in str(info.value)
    kept = ResultsStore(tmp_path / "board.csv").table
    assert len(kept) == 2

    sshd.start()
    result = profile_device(device, SPECS, ResultsStore(tmp_path / "board.csv"), batch_size=2)
    assert (result.skipped, result.measured) == (2, len(SPECS) - 2)
    final = ResultsStore(tmp_path / "board.csv")
    assert final.measured() == {s.key() for s in SPECS} and len(final.table) == len(SPECS)


def test_a_dropped_board_stops_only_itself_in_a_farm(tmp_path, sshd, capsys):
    """Two devices at once: the board is down, the local device still fills its table; exit status 1."""
    sshd.kill()
    path = devices_file(tmp_path, sshd.device_yaml("board", work_dir=tmp_path / "r", python=sys.executable),
                        "  here:\n    transport: local\n    runtime: litert\n    xnnpack: false\n"
                        "    warmup: 1\n    repeats: 5\n    rounds: 1\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("kernels:\n  - {op: conv, hw: 14, cin: 32, cout: [16, 32]}\n")
    out = tmp_path / "results"
    args = ["profile", "--device", "board", "--device", "here", "--devices", str(path), "--plan", str(plan),
            "--out", str(out)]
    assert main(args) == 1
    assert "board: stopped: device 'board'" in capsys.readouterr().err
    assert len(pd.read_csv(out / "here.csv")) == 2 and not (out / "board.csv").exists()


def test_unknown_host_key_is_refused_unless_the_entry_trusts_it(tmp_path, sshd):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(DeviceError, match=r"device 'board'.*unknown host key \(ssh-ed25519 SHA256:.*trust_unknown"):
        open_transport(board(tmp_path, sshd, known_hosts=empty))
    open_transport(board(tmp_path, sshd, known_hosts=empty, trust_unknown_host="true")).close()


def test_changed_host_key_is_refused(tmp_path, sshd, ssh_keys):
    other = (ssh_keys / "stranger_key.pub").read_text().split()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(DeviceError, match="host key does not match"):
        open_transport(board(tmp_path, sshd, known_hosts=wrong, trust_unknown_host="true"))


def test_wrong_key_is_refused(tmp_path, sshd, ssh_keys):
    with pytest.raises(DeviceError, match=r"device 'board'.*authentication refused with key_file .*stranger_key"):
        open_transport(board(tmp_path, sshd, key_file=ssh_keys / "stranger_key"))


def test_unreachable_host_is_a_one_line_error(tmp_path, sshd):
    sshd.kill()
    with pytest.raises(DeviceError, match=r"device 'board'.*unreachable.*check host, port") as info:
        open_transport(board(tmp_path, sshd, connect_timeout=3))
    assert "\n" not in str(info.value)


def test_missing_runtime_and_missing_python_say_so(tmp_path, sshd):
    """A Python without site-packages has no TFLite runtime: the runner names what it tried."""
    bare = tmp_path / "bare-python3"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    device = board(tmp_path, sshd, python=bare)
    with pytest.raises(DeviceError, match=r"device 'board'.*runner failed.*no litert runtime on this device"):
        profile_device(device, SPECS[:1], ResultsStore(tmp_path / "t.csv"))
    device = board(tmp_path, sshd, python="/no/such/python3")
    with pytest.raises(DeviceError, match=r"python '/no/such/python3' not found on the board"):
        profile_device(device, SPECS[:1], ResultsStore(tmp_path / "t.csv"))


def test_passphrase_comes_only_from_the_named_env_var_and_never_shows(tmp_path, sshd, ssh_keygen, monkeypatch,
                                                                       caplog):
    secret = "s3cret-Pass phrase"
    key = ssh_keygen(tmp_path / "locked_key", passphrase=secret)
    with open(sshd.directory / "authorized_keys", "a") as f:
        f.write((tmp_path / "locked_key.pub").read_text())
    monkeypatch.delenv("JCW_TEST_PASSPHRASE", raising=False)
    with pytest.raises(DeviceError, match="JCW_TEST_PASSPHRASE.*is not set"):
        open_transport(board(tmp_path, sshd, key_file=key, passphrase_env="JCW_TEST_PASSPHRASE"))
    with pytest.raises(DeviceError, match="is encrypted: name the environment variable"):
        open_transport(board(tmp_path, sshd, key_file=key))
    monkeypatch.setenv("JCW_TEST_PASSPHRASE", "wrong " + secret)
    with pytest.raises(DeviceError, match="wrong passphrase") as info:
        open_transport(board(tmp_path, sshd, key_file=key, passphrase_env="JCW_TEST_PASSPHRASE"))
    assert secret not in str(info.value)
    monkeypatch.setenv("JCW_TEST_PASSPHRASE", secret)
    device = board(tmp_path, sshd, key_file=key, passphrase_env="JCW_TEST_PASSPHRASE")
    assert secret not in repr(device)
    store = ResultsStore(tmp_path / "t.csv")
    profile_device(device, SPECS[-1:], store)
    assert len(store.table) == 1
    assert secret not in (tmp_path / "t.csv").read_text() and secret not in caplog.text


@pytest.mark.parametrize("field, value", [
    ("work_dir", "'/tmp/x; touch /tmp/pwned'"), ("work_dir", "'$(touch /tmp/pwned)'"), ("work_dir", "'-rf'"),
    ("python", "'python3 -c import os'"), ("python", "'`id`'"), ("user", "'root; id'"), ("host", "'h`id`'"),
    ("passphrase_env", "'X; id'"),
])
def test_hostile_fields_are_refused_by_the_schema(tmp_path, sshd, field, value):
    with pytest.raises(UserError, match=f"device 'board': field '{field}'"):
        board(tmp_path, sshd, **{field: value})


def test_odd_but_valid_remote_paths_are_quoted_and_home_relative(tmp_path, sshd):
    """A '~/'-relative work_dir with '+' and '.' lands in the login user's home, and is cleaned per batch."""
    work = f"~/.jcw-test+{os.getpid()}"
    device = board(tmp_path, sshd, work_dir=work)
    profile_device(device, SPECS[-1:], ResultsStore(tmp_path / "t.csv"))
    remote = Path(os.path.expanduser(work))
    try:
        assert remote.is_dir() and list(remote.iterdir()) == []
    finally:
        remote.rmdir()


def test_ctrl_c_in_the_profiling_thread_stops_the_runner_on_the_board_and_removes_its_dir(tmp_path, sshd, processes,
                                                                                          models_loaded, wait_for):
    """`jcw demo` and `jcw profile --adaptive` profile in the main thread: a real SIGINT, sent to this process while
    the runner measures under the real sshd, closes the channel there; the runner exits and its dir goes."""
    device = board(tmp_path, sshd, repeats=10_000)  # a batch of a minute or more: 6 kernels x 10,000 samples >= 1 ms
    store = ResultsStore(tmp_path / "board.csv")

    def runners() -> list[int]:
        """The board's runners, searched everywhere: one outliving its sshd session is reparented away from sshd."""
        return processes("runner.py", str(tmp_path))

    def interrupt_once_measuring():
        with contextlib.suppress(AssertionError):  # no runner (a hang): no interrupt, and the test fails on it
            wait_for(lambda: any(map(models_loaded, runners())), "the board's runner to load its models")
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_measuring, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        profile_device(device, SPECS, store, batch_size=len(SPECS))
    wait_for(lambda: not runners() and list((tmp_path / "remote").iterdir()) == [],
             "the board's runner to exit and its dir to go")
    assert not (tmp_path / "board.csv").exists()
