"""The emulated ARM device (devices.yaml: arm-emu): aarch64 Python and LiteRT 1.4.0 under qemu-user, so XNNPACK's
ARM kernels and its sparse-or-dense decision run for real. Timings are emulated (about 100x a phone's): the tests
compare regimes and ratios, never milliseconds. Small on purpose: emulation is slow.

`make arm-emu` installs the device (CI runs it); without it these tests are skipped, except under CI, where a
missing device is a failure."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from jcw.cli import main
from profiler.devices import get_device
from profiler.kernel import KernelSpec
from profiler.measure import measure_files
from profiler.profile import profile_device
from profiler.runtimes import get_runtime
from profiler.store import ResultsStore
from profiler.transports import DeviceError
from pruner.deploy.export import export
from pruner.model.apply import apply_candidate, make_permanent
from pruner.model.graph import analyze
from pruner.model.reference import MobileNetV2
from pruner.search.space import SearchSpace, density_bounds

INSTALLED = os.access(".arm-emu/python", os.X_OK)
if not INSTALLED and os.environ.get("CI"):
    raise RuntimeError("the arm-emu device is not installed: .ci/run must run `make arm-emu` before the tests")
pytestmark = pytest.mark.skipif(not INSTALLED, reason="arm-emu not installed: run `make arm-emu` (needs apt-get)")


@pytest.fixture(scope="module")
def device():
    return get_device("arm-emu", "devices.yaml")


def test_a_1x1_conv_runs_much_faster_in_the_sparse_regime_than_in_the_dense_one(device, tmp_path):
    """The profiler's two regimes on real XNNPACK ARM code: the same sparse 1x1 conv timed alone (dense NHWC: XNNPACK
    densifies it) and inside the NCHW wrapper (sparse: its cluster passes the gate)."""
    spec = KernelSpec("conv", 14, 14, 128, 128, density=0.2)
    specs = [spec.replace(density=1.0), spec.replace(layout="nchw"), spec.replace(density=1.0, layout="nchw")]
    store = ResultsStore(tmp_path / "arm.csv")
    result = profile_device(device, specs, store)
    assert result.measured == 3 and not result.failed
    table = store.table.set_index("layout")
    assert "ai_edge_litert" in table["runtime_version"].iloc[0] and "1.4.0" in table["runtime_version"].iloc[0]
    ms = {(row.layout, row.density): row.latency_ms for row in store.table.itertuples()}
    assert ms[("nchw", 0.2)] < 0.6 * ms[("nhwc", 1.0)]  # sparse SpMM at 80% zeros beats dense GEMM
    assert ms[("nchw", 0.2)] < ms[("nchw", 1.0)]  # and within the sparse regime density counts


def test_an_exported_network_runs_sparse_exactly_when_the_rules_say_so(device, tmp_path):
    """Three exports of one 3-channel MobileNetV2: dense, 60% zeros (under the gate) and 80% zeros (over it). The
    rules' verdict in each export decides; the timings show it: only the one over the gate is much faster."""
    torch.manual_seed(0)
    model = MobileNetV2(10, 0.35, in_channels=3).eval()
    shape = (1, 3, 48, 48)
    space = SearchSpace(analyze(model, shape), density_bounds=density_bounds(get_runtime("xnnpack")))
    files, verdicts = [], []
    for name, level in (("dense", None), ("under", 3), ("over", 1)):
        x = space.full()
        if level is not None:
            x[space.n_width:] = np.maximum(space.lower[space.n_width:], level)
        exported = export(make_permanent(apply_candidate(model, space, x)), shape, "xnnpack")
        files.append(tmp_path / f"{name}.tflite")
        files[-1].write_bytes(exported.model)
        verdicts.append(exported.verdict["sparse"])
    assert verdicts == [False, False, True]
    dense, under, over = (r["latency_ms"] for r in measure_files(device, files, passes=1))
    assert over < 0.75 * dense and over < 0.75 * under
    assert 0.8 < under / dense < 1.25  # zeros under the gate buy nothing


def test_the_cli_exports_for_arm_emu_with_the_verdict_and_can_require_sparse(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    from pruner.model.checkpoint import Checkpoint, save_checkpoint

    kwargs = {"num_classes": 10, "in_channels": 3, "width_mult": 0.35}
    save_checkpoint(ckpt, Checkpoint(MobileNetV2(**kwargs), "mobilenet_v2", kwargs, (1, 3, 32, 32)))
    out = tmp_path / "full.tflite"
    assert main(["export", "--model", str(ckpt), "--device", "arm-emu", "--out", str(out)]) == 0
    sidecar = pd.read_json(f"{out}.json", typ="series")
    assert sidecar["xnnpack"]["sparse"] is False and "needs more than 2/3" in sidecar["xnnpack"]["reason"]
    assert main(["export", "--model", str(ckpt), "--device", "arm-emu", "--out", str(out), "--require-sparse"]) == 3
    assert "will run full.tflite dense" in capsys.readouterr().err


def test_a_device_asking_for_arm_emu_before_it_is_installed_says_how(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  arm-emu:\n    transport: local\n    python: /nonexistent/.arm-emu/python\n"
                       "    setup: make arm-emu\n    runtime: litert\n")
    store = ResultsStore(tmp_path / "t.csv")
    with pytest.raises(DeviceError, match=r"run `make arm-emu` first"):
        profile_device(get_device("arm-emu", devices), [KernelSpec("conv", 4, 4, 4, 4)], store)


def test_the_instruction_clock_counts_the_same_on_a_busy_machine(device, tmp_path):
    """arm-emu's clock counts the ARM instructions the emulated process executes (scripts/qemu-insn-clock.c, loaded
    by the wrapper): a kernel profiled twice, the second time beside two busy processes, costs the same to a part in a
    hundred, where emulated wall time moves by tens of percent."""
    import subprocess
    import sys

    spec = KernelSpec("conv", 8, 8, 64, 64, density=0.3, layout="nchw")
    quiet = ResultsStore(tmp_path / "quiet.csv")
    assert not profile_device(device, [spec], quiet).failed
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        loaded = ResultsStore(tmp_path / "loaded.csv")
        assert not profile_device(device, [spec], loaded).failed
    finally:
        for process in busy:
            process.kill()
    first, second = quiet.table["latency_ms"].iloc[0], loaded.table["latency_ms"].iloc[0]
    assert first > 0 and abs(second - first) / first < 0.01


def test_the_instruction_clock_without_its_plugin_says_so(tmp_path):
    """A device asking for the instruction clock but running plain Python (no qemu wrapper): every kernel fails with
    the reason, none is stored with a made-up count."""
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  plain:\n    transport: local\n    runtime: xnnpack\n    clock: instructions\n")
    store = ResultsStore(tmp_path / "plain.csv")
    result = profile_device(get_device("plain", devices), [KernelSpec("conv", 8, 8, 16, 16)], store)
    assert result.measured == 0 and len(result.failed) == 1 and "instruction clock" in result.failed[0][1]
    assert store.table.empty


def test_the_device_runs_from_another_working_directory(tmp_path, monkeypatch):
    """`jcw measure --devices /path/to/devices.yaml` from elsewhere: the wrapper is found beside the devices file."""
    root = os.getcwd()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path / "net.tflite"
    path.write_bytes(export(model, (1, 3, 16, 16), "xnnpack").model)
    monkeypatch.chdir(tmp_path)
    assert main(["measure", "--devices", f"{root}/devices.yaml", "--device", "arm-emu", "--passes", "1",
                 str(path)]) == 0
