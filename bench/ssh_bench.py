"""SSH vs local profiling: wall time of the same 52-kernel plan through a real sshd on 127.0.0.1 and locally.

Rounds alternate the order (local first, then SSH first, ...); each run starts from an empty table
and includes connecting, model generation, pushes and the runner. Reports per-round times, medians,
the SSH/local ratio (target <= 1.3) and how well the two runs' latencies agree; writes
bench/results/ssh.md. Needs openssh-server (sshd) installed; takes about 2 minutes here.

    .venv/bin/python bench/ssh_bench.py [--rounds N]   (default 5)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler.devices import load_devices  # noqa: E402
from profiler.plan import load_plan  # noqa: E402
from profiler.profile import BATCH_SIZE, profile_device  # noqa: E402
from profiler.store import ResultsStore  # noqa: E402
from tests.conftest import SSHD, keygen, start_sshd  # noqa: E402

PLAN = """
kernels:
  - {op: conv, hw: 28, cin: 64, cout: [16, 32, 48, 64, 80, 96, 112, 128], density: [0.25, 0.5, 0.75, 1.0]}
  - {op: conv, hw: 14, cin: 32, cout: [16, 32, 48, 64], k: 3, density: [0.5, 1.0], activation: relu}
  - {op: dwconv, hw: [14, 28], cin: [16, 32, 64], k: 3, stride: [1, 2], activation: relu6}
"""


def timed_run(device, specs, table: Path) -> tuple[float, ResultsStore]:
    store = ResultsStore(table)
    start = time.perf_counter()
    result = profile_device(device, specs, store)
    elapsed = time.perf_counter() - start
    if result.measured != len(specs):
        raise SystemExit(f"{device.name}: measured {result.measured} of {len(specs)}: {result.failed[:1]}")
    return elapsed, store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not Path(SSHD).exists():
        print("ssh_bench: sshd is not installed: apt-get install openssh-server (bash .ci/run does)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="jcw-ssh-bench-") as tmp:
        tmp = Path(tmp)
        keys = tmp / "keys"
        keys.mkdir()
        for name in ("host_key", "client_key"):
            keygen(keys / name)
        server = start_sshd(tmp / "sshd", keys)
        try:
            (tmp / "plan.yaml").write_text(PLAN)
            specs = load_plan(tmp / "plan.yaml", "4x1")
            board = server.device_yaml("board", work_dir=tmp / "remote", python=sys.executable, xnnpack="false",
                                       block="'4x1'", warmup=3, repeats=20, rounds=3)
            (tmp / "devices.yaml").write_text(
                "devices:\n  here:\n    transport: local\n    runtime: litert\n    xnnpack: false\n"
                "    block: '4x1'\n    warmup: 3\n    repeats: 20\n    rounds: 3\n" + board)
            devices = load_devices(tmp / "devices.yaml")
            times: dict[str, list[float]] = {"here": [], "board": []}
            stores = {}
            for r in range(args.rounds):
                order = ["here", "board"] if r % 2 == 0 else ["board", "here"]
                for name in order:
                    elapsed, stores[name] = timed_run(devices[name], specs, tmp / f"{name}-{r}.csv")
                    times[name].append(elapsed)
                    print(f"round {r + 1}: {'local' if name == 'here' else 'ssh  '} {elapsed:6.1f} s", flush=True)
        finally:
            server.kill()
    local, ssh = statistics.median(times["here"]), statistics.median(times["board"])
    ratios = [s / loc for s, loc in zip(times["board"], times["here"], strict=True)]
    keys_ = ["op", "h", "cin", "cout", "k", "stride", "density"]
    both = stores["board"].table.merge(stores["here"].table, on=keys_, suffixes=("_ssh", "_local"))
    agree = (both.model_ms_ssh / both.model_ms_local).describe(percentiles=[0.5])
    verdict = "PASS" if local and ssh / local <= 1.3 else "FAIL"
    report = "\n".join([
        "# SSH vs local profiling wall time",
        "",
        f"Plan: {len(specs)} kernels (1x1, 3x3, depthwise), batch size {BATCH_SIZE}, LiteRT built-in kernels, "
        "1 thread, warmup 3, 20 repeats x 3 rounds.",
        f"SSH: a real OpenSSH sshd on 127.0.0.1 (paramiko client, SFTP push + one runner command per batch); "
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "Each run starts from an empty table; rounds alternate which of the two goes first.",
        "",
        "| round | local (s) | ssh (s) | ssh / local |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {lt:.1f} | {st:.1f} | {st / lt:.3f} |"
          for i, (lt, st) in enumerate(zip(times["here"], times["board"], strict=True))],
        f"| **median** | **{local:.1f}** | **{ssh:.1f}** | **{ssh / local:.3f}** |",
        "",
        f"Median of per-round ratios: {statistics.median(ratios):.3f}. Target ssh / local <= 1.3: **{verdict}**.",
        "",
        f"Agreement (last round, per kernel, model time ssh / local): median {agree['50%']:.3f}, "
        f"min {agree['min']:.3f}, max {agree['max']:.3f} over {int(agree['count'])} kernels.",
        "",
        "Command: `.venv/bin/python bench/ssh_bench.py`",
        "",
    ])
    out = ROOT / "bench" / "results" / "ssh.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
