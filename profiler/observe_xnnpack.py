#!/usr/bin/env python3
"""What XNNPACK executes for .tflite files on the emulated ARM device (arm-emu), counted, not timed.

    python3 -m profiler.observe_xnnpack [--emu .arm-emu] MODEL.tflite ...

Every model is loaded and invoked once in arm-emu's aarch64 Python with LiteRT's default settings (XNNPACK on, as
`Interpreter(model_path=...)` runs it), and once more with BUILTIN_WITHOUT_DEFAULT_DELEGATES as the reference, all in
one emulated process started as `qemu-aarch64 -g PORT`. `gdb-multiarch` attaches in batch mode and counts breakpoint
hits on XNNPACK's own functions inside LiteRT 1.4.0's libpywrap_litert_common.so (its .symtab keeps XNNPACK's local
symbols); each breakpoint counts and lets the program go on. The guest calls getppid() before each model, so the
counts split by model. One JSON record per model:

  nchw_convs      xnn_create_convolution2d_nchw_*: convs and depthwise convs XNNPACK runs on CHW kernels
  spmm_convs      ... of them 1x1 convs on the SpMM path (xnn_analyze_f*_spmm_w; create_spmm_path is inlined)
  hwc2chw_convs   ... of them entry convs (xnn_pack_f*_dconv_oki_w)
  nhwc_convs      xnn_create_convolution2d_nhwc_*: convs and depthwise convs run dense NHWC (1x1s become FCs)
  fc_creates      xnn_create_fully_connected_nc_*: fully connected operators (dense 1x1 convs included)
  spmm_calls      xnn_compute_spmm: SpMM tasks run by the invoke
  runtime_flags   the flags of each xnn_create_runtime_v4 (one per delegated partition; 0x1: the sparse hint)
  max_abs, max_diff   the output's largest magnitude and its largest difference from the reference
  regime          "dense" (no CHW conv), "sparse" (CHW convs, output equal to the reference within 1e-4 of its
                  magnitude) or "broken" (CHW convs, output differs)

Self-contained (standard library on the host; numpy and ai_edge_litert in the guest, which runs this same file with
--guest), like profiler/runner.py. Needs Debian's qemu-user and gdb-multiarch (`make arm-emu` installs both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COUNTERS = {
    "nchw_convs": ["xnn_create_convolution2d_nchw_f32", "xnn_create_convolution2d_nchw_f16",
                   "xnn_create_convolution2d_nchw_f32_f16"],
    "spmm_convs": ["xnn_analyze_f32_spmm_w", "xnn_analyze_f16_spmm_w"],
    "hwc2chw_convs": ["xnn_pack_f32_dconv_oki_w", "xnn_pack_f16_dconv_oki_w", "xnn_pack_f32_to_f16_dconv_oki_w"],
    "nhwc_convs": ["xnn_create_convolution2d_nhwc_f32", "xnn_create_convolution2d_nhwc_f16",
                   "xnn_create_convolution2d_nhwc_f32_f16"],
    "fc_creates": ["xnn_create_fully_connected_nc_f32", "xnn_create_fully_connected_nc_f16",
                   "xnn_create_fully_connected_nc_f32_f16"],
    "spmm_calls": ["xnn_compute_spmm"],
}
MARKER = "getppid"  # the guest calls it before each model
TOLERANCE = 1e-4

GDB_SCRIPT = r'''
import gdb, json
COUNTERS = json.loads(%(counters)r)
records = []

class Counter(gdb.Breakpoint):
    def __init__(self, fn, key):
        super().__init__(fn, internal=True)
        self.key = key
    def stop(self):
        if self.key == "marker":
            records.append({k: 0 for k in COUNTERS} | {"runtime_flags": []})
        elif records and self.key == "runtime":
            records[-1]["runtime_flags"].append(hex(int(gdb.parse_and_eval("$x4")) & 0xffffffff))
        elif records:
            records[-1][self.key] += 1
        return False

for command in ("set pagination off", "set confirm off", "set breakpoint pending on", "set sysroot %(sysroot)s",
                "set solib-search-path %(solibs)s", "file %(python)s", "target remote 127.0.0.1:%(port)d"):
    gdb.execute(command)
for key, functions in COUNTERS.items():
    for function in functions:
        Counter(function, key)
Counter("xnn_create_runtime_v4", "runtime")
Counter("%(marker)s", "marker")
gdb.execute("continue")
print("OBSERVED " + json.dumps(records))
'''


def observe(models: list[str | Path], emu: str | Path = ".arm-emu", timeout: float = 1800.0) -> list[dict]:
    """The counts of each model (its record, see the module's docstring), in the order given."""
    emu = Path(emu).resolve()
    sysroot, site = emu / "sysroot", emu / "site"
    python = sysroot / "usr/bin/python3.11"
    for tool in ("qemu-aarch64", "gdb-multiarch"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: run `make arm-emu` (it installs qemu-user and gdb-multiarch)")
    if not python.exists():
        raise RuntimeError(f"no arm-emu in {emu}: run `make arm-emu`")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONHOME=str(sysroot / "usr"))
    guest = subprocess.Popen(["qemu-aarch64", "-g", str(port), "-L", str(sysroot), str(python), __file__, "--guest",
                              *(str(Path(m).resolve()) for m in models)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    script = GDB_SCRIPT % {"counters": json.dumps(COUNTERS), "sysroot": sysroot, "solibs": site / "ai_edge_litert",
                           "python": python, "port": port, "marker": MARKER}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    try:
        _listening(port, 30.0)
        gdb = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-x", f.name], capture_output=True, text=True,
                             timeout=timeout)
        out, _ = guest.communicate(timeout=60)
    finally:
        os.unlink(f.name)
        if guest.poll() is None:
            guest.kill()
            guest.wait()
    line = next((x for x in gdb.stdout.splitlines() if x.startswith("OBSERVED ")), None)
    outputs = [json.loads(x[7:]) for x in out.splitlines() if x.startswith("OUTPUT ")]
    if line is None or guest.returncode != 0 or len(outputs) != len(models):
        raise RuntimeError(f"the observation failed (guest exit {guest.returncode}): {gdb.stderr[-1500:]}{out[-1500:]}")
    counts = json.loads(line[9:])
    if len(counts) != len(models):
        raise RuntimeError(f"{len(counts)} markers for {len(models)} models: something else called {MARKER}()")
    records = []
    for count, output in zip(counts, outputs, strict=True):
        close = output["max_diff"] <= TOLERANCE * max(output["max_abs"], 1e-30)
        regime = "dense" if count["nchw_convs"] == 0 else "sparse" if close else "broken"
        records.append({**count, **output, "regime": regime})
    return records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int, timeout: float) -> None:
    """Wait until qemu's gdb stub listens on 127.0.0.1:port, read from /proc/net/tcp (a probe connection would be
    taken for the debugger: the stub accepts one)."""
    deadline, needle = time.monotonic() + timeout, f":{port:04X}"
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            rows = [row.split() for row in Path(table).read_text().splitlines()[1:]] if Path(table).exists() else []
            if any(row[1].endswith(needle) and row[3] == "0A" for row in rows):
                return
        time.sleep(0.05)
    raise RuntimeError(f"qemu's gdb stub did not listen on port {port} within {timeout:.0f} s")


def _guest(paths: list[str]) -> None:
    """In the emulated Python: each model once with the default settings and once on the built-in kernels."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def run(path, **kwargs):
        interpreter = Interpreter(model_path=path, num_threads=1, **kwargs)
        interpreter.allocate_tensors()
        for i, detail in enumerate(interpreter.get_input_details()):
            data = np.random.default_rng(i).standard_normal(detail["shape"]).astype(detail["dtype"])
            interpreter.set_tensor(detail["index"], data)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]

    for path in paths:
        os.getppid()  # the marker: gdb starts this model's counts
        default = run(path)
        reference = run(path, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(default, reference, strict=True))
        top = max(float(np.abs(b).max()) for b in reference)
        print("OUTPUT " + json.dumps({"file": Path(path).name, "max_abs": top, "max_diff": diff}), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--guest"]:
        _guest(args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--emu", default=".arm-emu", help="arm-emu's folder (make arm-emu)")
    parsed = parser.parse_args(args)
    for record in observe(parsed.models, parsed.emu):
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
