"""`jcw predict --predictor P FILE`: a model file read back as KernelSpecs and priced, equal to the search's price of
the candidate it was exported from; ONNX files and checkpoints the same way; unreadable files named.

The predictor is a real LatencyModel fitted on a table of the model's own plan whose latencies follow a formula
(profiling the plan would take a minute), labelled as the device's table."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from jcw.cli import main
from predictor import persist
from predictor.latency import LatencyModel
from predictor.network import Overhead
from profiler import xnnpack
from profiler.devices import get_device
from profiler.kernel import KernelSpec
from profiler.runtimes import get_runtime
from profiler.tflite_reader import layer_specs, read_model
from pruner.deploy.export import export
from pruner.model.apply import apply_candidate
from pruner.model.checkpoint import Checkpoint, format_genes, load_checkpoint, save_checkpoint
from pruner.model.reference import build_model
from pruner.search.latency import device_latency, model_cluster

SETUPS = {"local-sparse": 1, "local": 3}  # device -> input channels (XNNPACK's sparse path needs 3)
MODERN_SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module", params=list(SETUPS))
def setup(request, tmp_path_factory, device_table):
    """(device name, checkpoint path, predictor path) for an untrained MobileNetV2 x0.35 on 32x32 inputs."""
    device, d = request.param, tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": SETUPS[device], "width_mult": 0.35}
    ckpt = Checkpoint(build_model("mobilenet_v2", **kwargs), "mobilenet_v2", kwargs, (1, SETUPS[device], 32, 32))
    save_checkpoint(d / "ckpt.pt", ckpt)
    model = LatencyModel.fit(device_table(ckpt, device))
    model.overhead = Overhead(0.05, 0.001)
    persist.save(model, d / "p.jcwm")
    return device, d / "ckpt.pt", d / "p.jcwm"


def test_predicting_an_exported_file_gives_the_search_price_of_its_candidate(setup, sparse_candidate, tmp_path, capsys):
    device_name, ckpt_path, predictor_path = setup
    device, ckpt = get_device(device_name), load_checkpoint(ckpt_path)
    genes = sparse_candidate(ckpt, device.runtime.name)
    out = tmp_path / "cand.tflite"
    assert main(["export", "--model", str(ckpt_path), "--candidate", format_genes(genes), "--device", device_name,
                 "--predictor", str(predictor_path), "--out", str(out)]) == 0
    sidecar = json.loads((tmp_path / "cand.tflite.json").read_text())
    if device.runtime.name == "xnnpack":
        assert sidecar["xnnpack"]["sparse"]  # the nchw regime is exercised
    else:
        assert any(layer["storage"] == "sparse" for layer in sidecar["layers"])
    capsys.readouterr()
    assert main(["predict", "--predictor", str(predictor_path), str(out), "--out", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "p.json").read_text())

    predictor = persist.load(predictor_path)
    cluster = model_cluster(ckpt.model, ckpt.input_shape, device.runtime)
    price = device_latency(ckpt.space(device.runtime), predictor, device.runtime.block, cluster)
    assert result["predicted_ms"] == pytest.approx(float(price(genes[None])[0]), rel=2e-3)
    assert [r["layer"] for r in result["layers"]] == [layer["name"] for layer in sidecar["layers"]]
    assert f"predicted total on '{device_name}'" in printed and f"{result['predicted_ms']:.4f} ms" in printed
    assert sum(r["predicted_ms"] for r in result["layers"]) + result["overhead_ms"] == pytest.approx(
        result["predicted_ms"])


def test_the_reader_rebuilds_the_written_model_and_its_xnnpack_clusters(sparse_candidate, run_exported):
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 3, "width_mult": 0.35}
    ckpt = Checkpoint(build_model("mobilenet_v2", **kwargs), "mobilenet_v2", kwargs, (1, 3, 32, 32))
    pruned = apply_candidate(ckpt.model, ckpt.space("xnnpack"), sparse_candidate(ckpt, "xnnpack"), block="1x4")
    exported = export(pruned.eval(), ckpt.input_shape, get_runtime("xnnpack", "1x4"))
    m = read_model(exported.model)
    assert xnnpack.analyse(m) == list(exported.analysis) and exported.analysis[0].sparse
    rewritten = dataclasses.replace(exported, model=m.to_bytes())  # every tensor, buffer, sparse index, option
    x = torch.randn(ckpt.input_shape)
    np.testing.assert_array_equal(run_exported(rewritten, x), run_exported(exported, x))
    xnn = get_runtime("xnnpack", "1x4")
    assert xnn.in_layouts(layer_specs(m, "1x4"), xnn.analyse_model(m)) == {e.name: e.spec for e in exported.layers}


def test_onnx_files_and_checkpoints_are_predicted_through_the_same_specs(device_table, sparse_candidate, tmp_path,
                                                                         capsys):
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 1, "width_mult": 0.35}
    ckpt = Checkpoint(build_model("mobilenet_v2", **kwargs), "mobilenet_v2", kwargs, (1, 1, 32, 32))
    save_checkpoint(tmp_path / "ckpt.pt", ckpt)
    persist.save(LatencyModel.fit(device_table(ckpt, "local-onnx")), tmp_path / "onnx.jcwm")
    genes = format_genes(sparse_candidate(ckpt, "onnx"))
    assert main(["export", "--model", str(tmp_path / "ckpt.pt"), "--candidate", genes, "--device", "local-onnx",
                 "--out", str(tmp_path / "c.onnx")]) == 0
    sidecar = json.loads((tmp_path / "c.onnx.json").read_text())
    assert main(["predict", "--predictor", str(tmp_path / "onnx.jcwm"), str(tmp_path / "c.onnx"),
                 "--out", str(tmp_path / "c.csv")]) == 0
    rows = pd.read_csv(tmp_path / "c.csv")
    assert [KernelSpec.from_row(r) for r in rows.to_dict("records")] == \
        [KernelSpec.from_row(layer) for layer in sidecar["layers"]]
    assert (rows["density"] < 1).any()

    assert main(["predict", "--predictor", str(tmp_path / "onnx.jcwm"), "--model", str(tmp_path / "ckpt.pt"),
                 "--out", str(tmp_path / "full.json")]) == 0
    full = json.loads((tmp_path / "full.json").read_text())
    assert full["predicted_ms"] > rows["predicted_ms"].sum() and len(full["layers"]) == len(rows)


def test_unreadable_files_and_wrong_inputs_are_one_line_errors(setup, tmp_path, capsys):
    device_name, ckpt_path, predictor_path = setup
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    (tmp_path / "x.pt").write_bytes(b"")
    full = tmp_path / "f.tflite"
    assert main(["export", "--model", str(ckpt_path), "--device", device_name, "--out", str(full)]) == 0
    (tmp_path / "cut.tflite").write_bytes(full.read_bytes()[:5000])
    cases = [
        ([str(tmp_path / "junk.tflite")], "junk.tflite: not a TFLite file"),
        ([str(tmp_path / "cut.tflite")], "cut.tflite: not a readable TFLite model"),
        ([str(tmp_path / "junk.onnx")], "junk.onnx: a .onnx model, but runtime"),
        ([str(tmp_path / "x.pt")], "unknown model file type '.pt'"),
        ([str(tmp_path / "missing.tflite")], "missing.tflite: cannot read the model file"),
        ([], "pass one of FILE"),
        ([str(full), "--out", str(tmp_path / "p.txt")], "p.txt: predictions of a model are written as .csv or .json"),
        (["--model", str(ckpt_path), "--measure", device_name], "--measure times a model file"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["predict", "--predictor", str(predictor_path), *args]) == 3
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_modern_networks_read_back_as_the_exporter_wrote_their_layers(modern_net):
    """Squeeze-and-excite, hardswish, hardsigmoid, SiLU, 5x5 depthwise and concat networks, every runtime: the
    activation written as ops of its own is read as the layer's, as the exporter's KernelSpecs have it."""
    net, model = modern_net
    for name in ("builtin", "xnnpack", "onnx"):
        runtime = get_runtime(name, "4x1")
        exported = export(model, MODERN_SHAPE, runtime)
        read = runtime.read_layers(exported.model)
        assert read == {layer.name: layer.spec for layer in exported.layers}, name
    if net != "inception":  # the concat network is plain ReLU
        assert {s.activation for s in read.values()} - {"none", "relu", "relu6"}, "no new activation exercised"
