"""INT8 and FP16 on the emulated ARM device (devices arm-emu-int8 and arm-emu-fp16: XNNPACK's QS8 and FP16 kernels
under qemu, timed by the instruction clock): FP16 files compute the model in FP16 under the default Interpreter, each
precision runs other kernels, and a JCW on arm-emu-int8 profiles, prices, searches channels only and exports INT8."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from predictor.latency import LatencyModel
from profiler.devices import get_device
from profiler.measure import measure_files
from profiler.profile import profile_device
from profiler.store import ResultsStore
from pruner import JCW
from pruner.data.loading import load_data
from pruner.model.reference import MobileNetV2
from tests.pruner.deploy.precision import INSTALLED, arm_outputs, small_net

pytestmark = pytest.mark.skipif(not INSTALLED, reason="arm-emu not installed: run `make arm-emu` (needs apt-get)")
SHAPE = (1, 3, 56, 56)


@pytest.fixture(scope="module")
def net(randomise_bn):
    torch.manual_seed(0)
    model = MobileNetV2(10, 0.35, in_channels=3).eval()
    randomise_bn(model, torch.Generator().manual_seed(0))
    return model


@pytest.fixture(scope="module")
def files(net, tmp_path_factory):
    """The net exported for arm-emu at each precision (INT8 calibrated on random images)."""
    out = tmp_path_factory.mktemp("precisions")
    paths = {}
    for precision in ("fp32", "fp16", "int8"):
        jcw = JCW(net, SHAPE, "arm-emu", precision=precision)
        paths[precision] = jcw.export(net, out / f"{precision}.tflite",
                                      calibration=[np.random.default_rng(0).standard_normal((32, *SHAPE[1:]))])
    return paths


def test_an_fp16_file_computes_the_model_in_fp16_on_arm_emu(net, files, tmp_path):
    """The file's hint makes XNNPACK compute in FP16 (qemu's CPU has FP16 arithmetic): close to PyTorch, but not the
    FP32 file's numbers, which it would equal if the hint were ignored."""
    x = torch.randn(4, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x).numpy()
    images = x.permute(0, 2, 3, 1).numpy()
    scale = np.abs(want).max()
    fp32, fp16 = (arm_outputs(files[p], images, tmp_path) for p in ("fp32", "fp16"))
    assert np.abs(fp32 - want).max() <= 1e-5 * scale
    assert 1e-5 * scale < np.abs(fp16 - want).max() <= 1e-2 * scale


def test_each_precision_runs_its_own_kernels_on_arm_emu(files):
    """One network, three files, timed on the device of each precision by the instruction clock: the counts differ
    by more than 10% between any two (a file run at the wrong precision would count as its twin)."""
    counts = {}
    for precision, device in (("fp32", "arm-emu"), ("fp16", "arm-emu-fp16"), ("int8", "arm-emu-int8")):
        (result,) = measure_files(get_device(device, "devices.yaml"), [files[precision]], passes=1)
        counts[precision] = result["latency_ms"]
    print(f"instruction-clock ms: {counts}")
    values = sorted(counts.values())
    assert all(b > 1.1 * a for a, b in zip(values, values[1:], strict=False)), counts


def test_a_jcw_on_arm_emu_int8_searches_channels_only_and_exports_int8_priced_as_measured(tmp_path):
    """Plan, profile INT8 kernels, fit, fit the per-network overhead on two networks, search (densities stay 1.0),
    export the cheapest channel-only candidate as INT8 and measure it: within 10% of its price."""
    torch.manual_seed(0)
    shape = (1, 3, 28, 28)
    data = load_data("mnist", shape, train_limit=2000, augment="none")
    model = small_net().eval()
    jcw = JCW(model, shape, "arm-emu-int8", data=(data.train, data.val))
    store = ResultsStore(tmp_path / "arm-emu-int8.csv")
    assert not profile_device(jcw.device, jcw.plan(candidates=6), store).failed
    assert set(store.table["runtime"]) == {"xnnpack-int8"} and set(store.table["density"]) == {1.0}
    predictor = LatencyModel.fit(store.table)
    jcw = JCW(model, shape, "arm-emu-int8", predictor=predictor, data=(data.train, data.val))
    probes = [jcw.space.full(), jcw.space.lower.copy()]
    paths = [jcw.export(x, tmp_path / f"probe{i}.tflite") for i, x in enumerate(probes)]
    measured = [r["latency_ms"] for r in measure_files(jcw.device, paths, passes=1)]
    predictor.fit_overhead([list(jcw.runtime.read_file(p).values()) for p in paths], measured)
    fronts = jcw.search(out=tmp_path / "run", generations=3, population=8, val_images=200,
                        methods=("channel-only", "joint"))
    for front in fronts.fronts.values():
        assert all(jcw.space.decode(jcw.genes(g)).densities == (1.0,) * len(jcw.space.graph.prunable)
                   for g in front["genes"])
    genes = fronts.fronts["joint"].sort_values("latency_ms")["genes"].iloc[0]
    path = jcw.export(genes, tmp_path / "best.tflite")
    record = json.loads(path.with_suffix(".tflite.json").read_text())
    assert (record["runtime"], record["precision"]) == ("xnnpack-int8", "int8")
    result = jcw.measure(path, passes=1)
    assert abs(result["predicted_ms"] / result["latency_ms"] - 1) < 0.10, result
