"""Target runtimes are objects registered by name (profiler.runtimes): a toy runtime registered by a test runs the
whole path, devices file to profiled table, predictor and exported file read back; older devices files still read."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from torch import nn

from predictor import features
from profiler.devices import get_device, load_devices
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.profile import profile_device
from profiler.runtimes import base, get_runtime, register, registered
from profiler.runtimes.tflite import TFLiteRuntime
from profiler.store import ResultsStore
from profiler.tflite_reader import read_model
from profiler.tflite_writer import OP
from pruner.deploy.export import export
from pruner.search.space import DENSITY_BOUNDS, density_bounds


class DenseTFLite(TFLiteRuntime):
    """A toy: LiteRT with XNNPACK, where zeros buy nothing, so nothing is weight-pruned (every density floor 1.0)."""

    name = "toy-dense"
    density_floors = dict.fromkeys(DENSITY_BOUNDS, 1.0)

    def runner_options(self) -> dict:
        return {"runtime": self.package, "xnnpack": True}

    def run_density(self, df: pd.DataFrame) -> np.ndarray:
        return np.ones(len(df))


@pytest.fixture
def toy(monkeypatch):
    """DenseTFLite registered for one test (the registry restored after it)."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register(DenseTFLite)
    return DenseTFLite


def test_a_registered_runtime_runs_from_the_devices_file_to_a_read_back_file(toy, tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  box:\n    transport: local\n    runtime: toy-dense\n    repeats: 3\n"
                       "    rounds: 1\n")
    device = get_device("box", devices)
    assert isinstance(device.runtime, DenseTFLite) and device.runtime.block == "1x4"
    assert density_bounds(device.runtime) == dict.fromkeys(DENSITY_BOUNDS, 1.0)
    specs = [KernelSpec("conv", 8, 8, 16, 16, density=d) for d in (0.3, 1.0)]
    store = ResultsStore(tmp_path / "box.csv")
    assert not profile_device(device, specs, store).failed
    assert list(store.table["runtime"]) == ["toy-dense"] * 2
    assert list(features.run_density(store.table)) == [1.0, 1.0]  # the runtime says what runs dense

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    exported = export(model, (1, 3, 8, 8), device.runtime)
    assert exported.suffix == ".tflite" and exported.verdict is None
    path = tmp_path / "net.tflite"
    path.write_bytes(exported.model)
    assert list(device.runtime.read_file(path)) == [layer.name for layer in exported.layers]
    assert "toy-dense" in registered()


def test_an_unknown_runtime_is_refused_naming_the_registered_ones(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  box:\n    transport: local\n    runtime: tensorflow\n")
    with pytest.raises(UserError, match="device 'box': field 'runtime'.*xnnpack") as err:
        load_devices(devices)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown runtime 'tensorflow'; expected one of xnnpack, builtin, onnx"):
        get_runtime("tensorflow")
    with pytest.raises(UserError, match="runtime 'xnnpack': unknown sparsity block '2x2'"):
        get_runtime("xnnpack", "2x2")


@pytest.mark.parametrize("entry, name, block", [
    ("runtime: litert", "xnnpack", "1x4"),
    ("runtime: litert\n    xnnpack: true", "xnnpack", "1x4"),
    ("runtime: litert\n    xnnpack: false", "builtin", "4x1"),
    ("runtime: litert\n    xnnpack: false\n    block: '1x4'", "builtin", "1x4"),
    ("runtime: onnxruntime", "onnx", "1x4"),
])
def test_an_older_devices_file_names_the_same_runtimes(tmp_path, entry, name, block):
    devices = tmp_path / "devices.yaml"
    devices.write_text(f"devices:\n  box:\n    transport: local\n    {entry}\n")
    runtime = load_devices(devices)["box"].runtime
    assert (runtime.name, runtime.block) == (name, block)


def test_every_runtime_writes_a_kernel_its_own_way():
    """One spec, three files: sparse behind DENSIFY (XNNPACK), sparse FULLY_CONNECTED (built-in), dense ONNX."""
    spec = KernelSpec("conv", 8, 8, 16, 16, density=0.25)
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal(spec.weight_shape) * (rng.random(spec.weight_shape) < 0.25)).astype(np.float32)
    files = {name: get_runtime(name, "1x4").kernel_model(spec, weight, np.zeros(16, np.float32))
             for name in ("xnnpack", "builtin", "onnx")}
    codes = {name: [op.code for op in read_model(files[name]).ops] for name in ("xnnpack", "builtin")}
    assert OP.DENSIFY in codes["xnnpack"] and OP.CONV_2D in codes["xnnpack"]
    assert OP.FULLY_CONNECTED in codes["builtin"] and OP.DENSIFY not in codes["builtin"]
    graph = onnx.load_from_string(files["onnx"]).graph
    assert [node.op_type for node in graph.node] == ["Conv"] and len(graph.initializer) == 2
