"""Fixtures every package's tests share: one torch thread for every test; a real OpenSSH server on 127.0.0.1 with its
own host key and a client key made for the test; a free TCP port; a small MobileNetV2's search space; the modern
networks of tests/modern_nets.py; running an exported model in its runtime; a planted pickle; the figures a
plotting function returns; results tables made up, from a model's own plan or with a given spread and clamping."""

from __future__ import annotations

import contextlib
import getpass
import os
import pickle
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests import modern_nets as nets

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny convs on a shared 2-core machine are ~100x slower with OpenMP's 2 threads than with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_as_from_a_terminal():
    """The Ctrl-C tests send SIGINT to this process and to the `jcw` it starts. A suite started in the background
    (`cmd &` in a script) inherits SIGINT ignored, and so would every `jcw` it runs: handle it as a terminal's
    Python does (KeyboardInterrupt here; the default action in children, which exec resets to it)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


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
    """A TCP port on 127.0.0.1 that nothing listens on."""
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
        deadline = time.monotonic() + 120  # only a hung sshd takes this long, however busy the machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.directory / 'sshd.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("sshd did not start listening")

    def sessions(self) -> list[int]:
        """Pids of sshd's per-connection children and what they run."""
        return [] if self.proc is None else descendants(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL sshd and its per-connection children (by pid): a board that drops off the network."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid, *self.sessions()]:
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
    """An ed25519 key pair at `path` and `path`.pub."""
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


@pytest.fixture(scope="session")
def ssh_keygen() -> Callable[..., Path]:
    """keygen(path, passphrase=""): a key pair made for a test."""
    return keygen


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a torchrun rendezvous)."""
    return free_port()


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


@pytest.fixture(scope="session")
def modern_nets() -> dict[str, Callable[[], nn.Module]]:
    """name -> builder of each network of tests/modern_nets.py: seeded, in eval mode, BatchNorm statistics random."""
    return {name: partial(nets.built, name) for name in nets.NETS}


@pytest.fixture(params=list(nets.NETS))
def modern_net(request, modern_nets) -> tuple[str, nn.Module]:
    """(name, network) for each modern network in turn."""
    return request.param, modern_nets[request.param]()


@pytest.fixture(scope="session")
def randomise_bn() -> Callable[[nn.Module, torch.Generator], None]:
    """randomise_bn(model, generator): non-trivial BatchNorm statistics, so that folding them is really tested."""
    return nets.randomise_bn


def run_in_runtime(exported, x: torch.Tensor) -> np.ndarray:
    """The output of an exported model (pruner.deploy.export) for the NCHW input `x`, run in its runtime."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if exported.runtime.name == "onnx":
        session = ort.InferenceSession(exported.model, providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x.numpy()})[0]
    resolver = {"xnnpack": OpResolverType.AUTO,
                "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}[exported.runtime.name]
    interpreter = Interpreter(model_content=exported.model, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).contiguous().numpy())
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.fixture(scope="session")
def run_exported() -> Callable[..., np.ndarray]:
    """run_exported(exported, x): the exported model's output for `x`, from LiteRT or onnxruntime."""
    return run_in_runtime


class Payload:
    """A pickle that, when unpickled, creates `marker`: what a crafted model or checkpoint file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="session")
def planted_pickle() -> Callable[[Path], bytes]:
    """planted_pickle(marker): pickle bytes that create the file `marker` if anything ever unpickles them."""
    return lambda marker: pickle.dumps(Payload(marker))


@pytest.fixture(scope="session")
def record_figures() -> Callable[[pytest.MonkeyPatch, object, str], list]:
    """record_figures(monkeypatch, module, name): the list of Figures that `module.name`, a plotting function, returns
    from now on (its PNG is still written), so that a test reads back what was plotted."""

    def spy(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list:
        figures, plot = [], getattr(module, name)

        def recording(*args, **kwargs):
            figures.append(plot(*args, **kwargs))
            return figures[-1]

        monkeypatch.setattr(module, name, recording)
        return figures

    return spy


def made_up_latency(spec) -> float:
    """A made-up but plausible latency of a KernelSpec: MACs, cheaper when sparse (more so in the nchw layout)."""
    factor = (0.3 + 0.8 * spec.density) * (0.5 if spec.layout == "nchw" else 1.0) if spec.is_sparse else 1.0
    return 0.002 + spec.macs / 5e7 * factor


def plan_table(ckpt, device_name: str) -> pd.DataFrame:
    """The model's profiling plan as the device's results table would hold it, latencies made up."""
    from profiler.devices import get_device
    from pruner.search.latency import model_cluster, profiling_plan

    device = get_device(device_name)
    space = ckpt.space(device.runtime)
    cluster = model_cluster(ckpt.model, ckpt.input_shape, device.runtime)
    specs = profiling_plan(space, device.runtime, candidates=12, cluster=cluster)
    return pd.DataFrame([{"device": device.name, "runtime": device.runtime.name,
                          "runtime_version": "ai_edge_litert.interpreter 2.3.0", **s.to_row(),
                          "latency_ms": made_up_latency(s)}
                         for s in specs])


@pytest.fixture(scope="session")
def device_table() -> Callable[..., pd.DataFrame]:
    """device_table(checkpoint, device name): the model's profiling plan as that device's table, latencies made up (a
    formula stands in for profiling it, which would take a minute)."""
    return plan_table


def spread_table(spread: float = 0.02, scatter: float = 0.0, clamped: int = 0, seed: int = 0) -> pd.DataFrame:
    """A local-sparse results table of 1x1 convs whose latency is proportional to their work, each row's
    interquartile range `spread` of its latency, scattered by a lognormal of sigma `scatter`, its first `clamped`
    rows at the floor."""
    from profiler.noise import MIN_KERNEL_MS
    from profiler.store import COLUMNS

    rng = np.random.default_rng(seed)
    rows = []
    for hw in (14, 28, 56):
        for cin in (16, 32, 64, 96):
            for cout in (16, 32, 64, 96):
                for density in (0.3, 0.6, 1.0):
                    ms = 2e-7 * hw * hw * cin * cout * density * float(np.exp(rng.normal(0, scatter)))
                    rows.append({"device": "local-sparse", "runtime": "builtin", "runtime_version": "test 1.0",
                                 "op": "conv", "h": hw, "w": hw, "cin": cin, "cout": cout, "k": 1, "stride": 1,
                                 "groups": 1, "density": density, "block": "4x1", "activation": "none",
                                 "layout": "nhwc", "latency_ms": ms, "iqr_ms": spread * ms, "cv": spread / 1.35,
                                 "model_ms": ms + 0.01, "baseline_ms": 0.01, "runs": 60, "timestamp": "",
                                 "version": "test"})
    table = pd.DataFrame(rows, columns=COLUMNS[: COLUMNS.index("version") + 1])
    table.loc[: clamped - 1, "latency_ms"] = MIN_KERNEL_MS
    return table


@pytest.fixture(scope="session")
def kernel_table() -> Callable[..., pd.DataFrame]:
    """kernel_table(spread=0.02, scatter=0.0, clamped=0): 144 rows of a made-up local-sparse table whose measurements
    spread, scatter and clamp as asked (the fit-quality warnings, injected rather than timed)."""
    return spread_table
