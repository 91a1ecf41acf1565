"""Shared fixtures: one torch thread for every test; a real OpenSSH server on 127.0.0.1 with its own host key and
a client key made for the test."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny convs on a shared 2-core machine are ~100x slower with OpenMP's 2 threads than with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Decoded image folders are cached under the user's cache directory: the tests use one of their own."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = saved


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd's per-connection children and what they run), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class SshServer:
    """A running `sshd -D` for one test; `kill()` drops every connection, `start()` brings it back."""

    directory: Path
    port: int
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.directory / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-f", str(self.directory / "sshd_config"), "-D", "-e"],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.directory / 'sshd.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """SIGKILL sshd and its per-connection children (by pid): a board that drops off the network."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def device_yaml(self, name: str, **extra) -> str:
        """A devices.yaml entry for this server (work_dir and python among `extra`)."""
        fields = {"transport": "ssh", "runtime": "litert", "xnnpack": False, "host": "127.0.0.1",
                  "port": self.port, "user": getpass.getuser(), "key_file": str(self.client_key),
                  "known_hosts": str(self.known_hosts),
                  "warmup": 1, "repeats": 5, "rounds": 1, **extra}
        return f"  {name}:\n" + "".join(f"    {k}: {v}\n" for k, v in fields.items())


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory) -> Path:
    """Host key, an authorised client key and a stranger's key, made once per session."""
    directory = tmp_path_factory.mktemp("sshkeys")
    for name in ("host_key", "client_key", "stranger_key"):
        keygen(directory / name)
    return directory


def start_sshd(directory: Path, keys: Path) -> SshServer:
    """Configure and start an sshd in `directory` with `keys`/host_key, accepting only `keys`/client_key."""
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    shutil.copy(keys / "client_key.pub", directory / "authorized_keys")
    (directory / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPidFile {directory / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        "LogLevel ERROR\n"
    )
    host_pub = (keys / "host_key.pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    server = SshServer(directory, port, keys / "client_key", known_hosts)
    server.start()
    return server


@pytest.fixture
def sshd(tmp_path, ssh_keys):
    """A real OpenSSH server on 127.0.0.1:<free port> accepting only `client_key`; stopped by its pid."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd is not installed: run .ci/run (apt-get install openssh-server)")
    server = start_sshd(tmp_path / "sshd", ssh_keys)
    yield server
    server.kill()


@pytest.fixture(scope="session")
def space():
    """A small real MobileNetV2's search space (width 0.35, 32x32, 1 channel), for the pricing, fronts and
    weight-stage tests; modules with a space of their own override it."""
    from pruner.model.graph import analyze
    from pruner.model.reference import MobileNetV2
    from pruner.search.space import SearchSpace

    return SearchSpace(analyze(MobileNetV2(10, 0.35, in_channels=1), (1, 1, 32, 32)))
