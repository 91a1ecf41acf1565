"""Whole exported networks timed on this machine through the runner (real LiteRT and onnxruntime)."""

import pytest

from profiler.devices import get_device
from profiler.errors import UserError
from profiler.measure import measure_files
from pruner.deploy.export import export
from pruner.model.reference import build_model


@pytest.mark.parametrize("device_name", ["local-sparse", "local-onnx"])
def test_wider_network_measures_slower(tmp_path, device_name):
    """MobileNetV2 at 0.25x and 1.0x width on 128x128 inputs: 8-10x apart when timed here beside other jobs (load
    average 7 on 2 cores), the two files interleaved in every pass, so 1.5x leaves a busy machine a wide margin."""
    device = get_device(device_name, "devices.yaml")
    files = []
    for width in (0.25, 1.0):
        exported = export(build_model("mobilenet_v2", num_classes=10, width_mult=width), (1, 3, 128, 128),
                          device.runtime)
        path = tmp_path / f"mbv2_{width}{exported.suffix}"
        path.write_bytes(exported.model)
        files.append(path)
    narrow, wide = measure_files(device, files, passes=3)
    assert narrow["file"] == str(files[0]) and narrow["latency_ms"] > 0
    assert wide["latency_ms"] > 1.5 * narrow["latency_ms"]
    for record in (narrow, wide):  # the median of three interleaved passes
        assert len(record["passes"]) == 3 and record["latency_ms"] == sorted(record["passes"])[1]
    with pytest.raises(UserError, match="passes 0"):
        measure_files(device, files, passes=0)


def test_wrong_file_type_and_missing_file_are_named(tmp_path):
    onnx_file = tmp_path / "net.onnx"
    onnx_file.write_bytes(b"not used")
    with pytest.raises(UserError, match="net.onnx: device 'local-sparse' runs .tflite"):
        measure_files(get_device("local-sparse", "devices.yaml"), [onnx_file])
    with pytest.raises(UserError, match="missing.tflite: no such model file"):
        measure_files(get_device("local", "devices.yaml"), [tmp_path / "missing.tflite"])


def test_a_corrupt_model_fails_alone(tmp_path):
    good = tmp_path / "good.tflite"
    good.write_bytes(export(build_model("mobilenet_v1", num_classes=10, width_mult=0.25), (1, 3, 32, 32),
                            "builtin").model)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    results = measure_files(get_device("local-sparse", "devices.yaml"), [bad, good])
    assert "error" in results[0] and results[1]["latency_ms"] > 0


def test_jcw_measure_writes_the_gap_and_the_failure_in_columns_of_their_own(tmp_path, capsys, device_table):
    import json

    import pandas as pd
    import torch

    from jcw.cli import main
    from predictor import persist
    from predictor.latency import LatencyModel
    from pruner.model.checkpoint import Checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 1, "width_mult": 0.35}
    ckpt = Checkpoint(build_model("mobilenet_v2", **kwargs), "mobilenet_v2", kwargs, (1, 1, 32, 32))
    persist.save(LatencyModel.fit(device_table(ckpt, "local-sparse")), tmp_path / "p.jcwm")
    good, bad = tmp_path / "good.tflite", tmp_path / "bad.tflite"
    good.write_bytes(export(ckpt.model, ckpt.input_shape, "builtin").model)
    good.with_name("good.tflite.json").write_text(json.dumps({"layers": [], "genes": None}))  # an export sidecar
    bad.write_bytes(b"\x00" * 64)
    capsys.readouterr()
    assert main(["measure", "--device", "local-sparse", "--predictor", str(tmp_path / "p.jcwm"), "--passes", "1",
                 "--out", str(tmp_path / "m.csv"), str(good)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["file", "measured", "ms", "predicted", "ms", "gap"]
    table = pd.read_csv(tmp_path / "m.csv")
    assert list(table.columns) == ["file", "latency_ms", "predicted_ms", "gap", "failure"]
    (ok,) = table.itertuples()
    assert ok.gap == pytest.approx(ok.predicted_ms / ok.latency_ms - 1) and pd.isna(ok.failure)
    measured = json.loads(good.with_name("good.tflite.json").read_text())["measured"]
    assert measured["device"] == "local-sparse" and measured["latency_ms"] == pytest.approx(ok.latency_ms)

    assert main(["measure", "--device", "local-sparse", "--passes", "1", "--out", str(tmp_path / "n.csv"), str(good),
                 str(bad)]) == 1  # a file the runner cannot load fails alone, its reason in `failure`
    table = pd.read_csv(tmp_path / "n.csv")
    assert list(table.columns) == ["file", "latency_ms", "predicted_ms", "gap", "failure"]
    assert table.failure.isna().tolist() == [True, False] and table.gap.isna().all()
    assert table.failure[1].strip() != "" and pd.isna(table.latency_ms[1])
