"""Runtimes at reduced precision (profiler.runtimes.dense): xnnpack-int8 and xnnpack-fp16 run dense weights only, so a
candidate is pruned in channels only; the profiler times INT8 kernels as they run in a network; `--precision` picks a
device runtime's counterpart and `--channel-multiple` the channel rounding, both recorded in the sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tflite
import torch
from ai_edge_litert.interpreter import Interpreter

from jcw.cli import main
from predictor import features
from profiler.devices import get_device
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.profile import profile_device
from profiler.quantize import quantize_int8
from profiler.runtimes import at_precision, get_runtime
from profiler.store import ResultsStore
from profiler.tflite_reader import read_model
from profiler.tflite_writer import OP
from pruner import JCW
from pruner.deploy.export import export
from pruner.model.apply import apply_candidate, make_permanent
from pruner.model.checkpoint import Checkpoint, save_checkpoint
from pruner.model.graph import analyze
from pruner.model.reference import MobileNetV2
from pruner.search.space import SearchSpace, density_bounds

SHAPE = (1, 3, 28, 28)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return MobileNetV2(10, 0.35, in_channels=3).eval()


@pytest.fixture(scope="module")
def masked(net):
    """The net with 70% of every 1x1 conv's weights zeroed (masks baked in)."""
    space = SearchSpace(analyze(net, SHAPE), density_bounds=density_bounds("xnnpack"))
    x = space.full()
    x[space.n_width:] = np.maximum(space.lower[space.n_width:], 2)
    return make_permanent(apply_candidate(net, space, x))


def test_each_runtime_has_its_counterpart_at_another_precision_or_says_which_do():
    xnnpack = get_runtime("xnnpack", "4x1")
    assert (at_precision(xnnpack, "int8").name, at_precision(xnnpack, "int8").block) == ("xnnpack-int8", "4x1")
    assert at_precision(at_precision(xnnpack, "fp16"), "fp32").name == "xnnpack"
    assert at_precision(xnnpack, "fp32") is xnnpack
    with pytest.raises(UserError, match="runtime 'builtin' has no int8 counterpart; int8 models run on xnnpack-int8"):
        at_precision(get_runtime("builtin"), "int8")
    with pytest.raises(UserError, match="precision 'int4'"):
        at_precision(xnnpack, "int4")


@pytest.mark.parametrize("name", ["xnnpack-int8", "xnnpack-fp16"])
def test_a_dense_runtime_searches_channels_only_and_stores_a_pruned_model_dense(name, net, masked):
    runtime = get_runtime(name)
    assert set(density_bounds(runtime).values()) == {1.0} and runtime.weight_stage == 0.0
    assert SearchSpace(analyze(net, SHAPE), density_bounds=density_bounds(runtime)).lower[-1] == 9  # dense only
    exported = export(masked, SHAPE, runtime, runtime.storage_chooser(None))
    pointwise = [layer for layer in exported.layers if layer.pruned_density < 1]
    assert pointwise and {layer.storage for layer in exported.layers} == {"dense"}
    assert OP.DENSIFY not in {op.code for op in read_model(exported.model).ops}


def test_sparse_weights_are_refused_naming_why(masked):
    with pytest.raises(UserError, match=r"sparse FP16 .*src/subgraph/convolution-2d.c:84-85") as err:
        export(masked, SHAPE, "xnnpack-fp16")  # no chooser: a layer reaches the lowering sparse
    assert "\n" not in str(err.value) and "layer 'features." in str(err.value)
    with pytest.raises(UserError, match="xnnpack-int8 runs dense weights only: XNNPACK has no sparse INT8 kernels"):
        get_runtime("xnnpack-int8").kernel_model(KernelSpec("conv", 8, 8, 16, 16, density=0.3),
                                                 np.zeros((16, 16, 1, 1), np.float32), np.zeros(16, np.float32))
    sparse_file = export(masked, SHAPE, "xnnpack").model  # sparse weights behind DENSIFY
    with pytest.raises(UserError, match="masked.tflite: INT8 quantization needs weights stored dense"):
        quantize_int8(sparse_file, [np.zeros((1, 28, 28, 3), np.float32)], source="masked.tflite")


def test_an_int8_export_needs_calibration_images(net, tmp_path):
    jcw = JCW(net, SHAPE, "local", precision="int8")
    with pytest.raises(UserError, match="needs calibration images: .*--data"):
        jcw.export(net, tmp_path / "m.tflite")
    path = jcw.export(net, tmp_path / "m.tflite", calibration=[np.random.default_rng(0).random((8, *SHAPE[1:]))])
    assert json.loads(path.with_suffix(".tflite.json").read_text())["calibration_images"] == 8


def test_int8_kernels_are_profiled_with_int8_ends_as_they_run_in_a_network(tmp_path):
    """The profiler's INT8 kernel: the FP32 kernel quantized, int8 in and out (its network's QUANTIZE and DEQUANTIZE
    are the network's overhead), timed on a local xnnpack-int8 device; its rows run dense."""
    runtime = get_runtime("xnnpack-int8")
    spec = KernelSpec("conv", 14, 14, 32, 32, k=3, activation="relu6")
    rng = np.random.default_rng(0)
    m = read_model(runtime.kernel_model(spec, rng.standard_normal(spec.weight_shape).astype(np.float32),
                                        np.zeros(32, np.float32)))
    assert [op.code for op in m.ops] == [OP.PAD, OP.CONV_2D]
    assert {m.tensors[t].dtype for t in (*m.inputs, *m.outputs)} == {9}  # int8
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  box:\n    transport: local\n    runtime: xnnpack-int8\n    repeats: 3\n"
                       "    rounds: 1\n")
    store = ResultsStore(tmp_path / "box.csv")
    specs = [spec, spec.replace(cout=64), KernelSpec("fc", 1, 1, 64, 10)]
    assert not profile_device(get_device("box", devices), specs, store).failed
    assert list(store.table["runtime"]) == ["xnnpack-int8"] * 3 and (store.table["latency_ms"] > 0).all()
    assert list(features.run_density(store.table.assign(density=0.5))) == [1.0] * 3


def test_an_fp16_file_carries_xnnpacks_hint_and_computes_the_model(net):
    exported = export(net, SHAPE, "xnnpack-fp16")
    model = tflite.Model.GetRootAs(exported.model, 0)
    entries = {model.Metadata(i).Name().decode(): model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
               for i in range(model.MetadataLength())}
    assert entries == {"reduced_precision_support": b"fp16accfp16"}
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    run = Interpreter(model_content=exported.model).get_signature_runner("serving_default")
    got = run(input=x.permute(0, 2, 3, 1).numpy())["output"]
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()  # FP16 where the CPU has it, else FP32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, net):
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    kwargs = {"num_classes": 10, "in_channels": 3, "width_mult": 0.35}
    save_checkpoint(path, Checkpoint(net, "mobilenet_v2", kwargs, SHAPE))
    return path


def test_jcw_export_precision_int8_calibrates_on_the_datas_training_images(ckpt, tmp_path, capsys):
    out = tmp_path / "m8.tflite"
    args = ["export", "--model", str(ckpt), "--device", "local", "--out", str(out)]
    assert main([*args, "--precision", "int8", "--data", "mnist"]) == 0
    assert "xnnpack-int8, int8, calibrated on 512 images" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".tflite.json").read_text())
    assert (record["precision"], record["calibration_images"], record["data"]["kind"]) == ("int8", 512, "mnist")
    assert main([*args, "--precision", "int8"]) == 3
    assert "needs calibration images" in capsys.readouterr().err
    assert main([*args, "--precision", "fp16"]) == 0
    assert json.loads(out.with_suffix(".tflite.json").read_text())["precision"] == "fp16"
    assert main([*args[:4], "local-sparse", *args[5:], "--precision", "int8", "--data", "mnist"]) == 3
    assert "runtime 'builtin' has no int8 counterpart" in capsys.readouterr().err


def test_channel_multiple_rounds_a_candidate_and_is_recorded(ckpt, net, tmp_path, capsys):
    space = SearchSpace(analyze(net, SHAPE), multiple=8)
    genes = ",".join(map(str, space.lower))
    out = tmp_path / "c.tflite"
    args = ["export", "--model", str(ckpt), "--device", "local", "--out", str(out), "--candidate", genes]
    assert main([*args, "--channel-multiple", "8"]) == 0
    record = json.loads(out.with_suffix(".tflite.json").read_text())
    assert record["space"]["multiple"] == 8
    assert all(layer["cout"] % 8 == 0 for layer in record["layers"] if layer["op"] == "conv")
    assert main(args) == 0  # JCW's multiple of 4: some of the same candidate's widths are not multiples of 8
    record = json.loads(out.with_suffix(".tflite.json").read_text())
    assert record["space"]["multiple"] == 4
    assert any(layer["cout"] % 8 for layer in record["layers"] if layer["op"] == "conv")
    assert main(args[:-2] + ["--channel-multiple", "8"]) == 3
    assert "--channel-multiple applies with --candidate" in capsys.readouterr().err
