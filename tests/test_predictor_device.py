"""Predictors know their device: recorded when fitted, refused for another device by every command that takes one
(unless --allow-other-device), and calibrated end to end by `jcw calibrate`; a model the exporter cannot lower is
refused before any search."""

from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest
import torch
from torch import nn

from jcw.cli import main
from predictor import persist
from predictor.latency import LatencyModel, Target
from profiler.errors import UserError
from pruner import JCW
from pruner.deploy.export import ExportError
from pruner.model.checkpoint import Checkpoint, format_genes, save_checkpoint
from pruner.model.reference import build_model
from tests.test_predict_file import device_table, sparse_candidate
from tests.test_predictor_model import PHONE

REFUSAL = ("predictor {p} was fitted on device 'local-sparse' (builtin, 4x1), "
           "not 'local' (xnnpack, 1x4); pass --allow-other-device if you mean it")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A directory with ckpt.pt (untrained MobileNetV2 x0.35, 1 channel, 32x32), p.jcwm (a local-sparse predictor)
    and two candidates exported for local-sparse, a.tflite and b.tflite."""
    d = tmp_path_factory.mktemp("device")
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 1, "width_mult": 0.35}
    ckpt = Checkpoint(build_model("mobilenet_v2", **kwargs), "mobilenet_v2", kwargs, (1, 1, 32, 32))
    save_checkpoint(d / "ckpt.pt", ckpt)
    persist.save(LatencyModel.fit(device_table(ckpt, "local-sparse")), d / "p.jcwm")
    genes = {"a": format_genes(sparse_candidate(ckpt, "builtin")), "b": format_genes(ckpt.space("builtin").full())}
    for name, x in genes.items():
        assert main(["export", "--model", str(d / "ckpt.pt"), "--candidate", x, "--device", "local-sparse",
                     "--predictor", str(d / "p.jcwm"), "--out", str(d / f"{name}.tflite")]) == 0
    return d


def test_the_model_file_records_the_device_it_was_fitted_on(work):
    manifest = json.loads(zipfile.ZipFile(work / "p.jcwm").read("manifest.json"))
    assert manifest["fitted_on"] == {"device": "local-sparse", "runtime": "builtin",
                                     "runtime_version": "ai_edge_litert.interpreter 2.3.0", "block": "4x1"}
    assert persist.load(work / "p.jcwm").fitted_on == Target("local-sparse", "builtin",
                                                             "ai_edge_litert.interpreter 2.3.0", "4x1")
    assert LatencyModel.fit(pd.read_csv(PHONE)).fitted_on is None  # a table that names no device


def test_a_manifest_naming_another_device_than_its_table_is_refused(work, tmp_path):
    with zipfile.ZipFile(work / "p.jcwm") as src, zipfile.ZipFile(tmp_path / "t.jcwm", "w") as dst:
        manifest = json.loads(src.read("manifest.json"))
        manifest["fitted_on"]["device"] = "pixel"
        dst.writestr("manifest.json", json.dumps(manifest))
        for name in ("training.parquet", "state.npz"):
            dst.writestr(name, src.read(name))
    with pytest.raises(UserError, match="field 'fitted_on'.*measured on 'local-sparse'"):
        persist.load(tmp_path / "t.jcwm")


def test_every_command_refuses_a_predictor_of_another_device_unless_told(work, tmp_path, capsys):
    p, ckpt, a = str(work / "p.jcwm"), str(work / "ckpt.pt"), str(work / "a.tflite")
    commands = {
        "export": ["export", "--model", ckpt, "--device", "local", "--predictor", p, "--out",
                   str(tmp_path / "x.tflite")],
        "measure": ["measure", "--device", "local", "--predictor", p, "--passes", "1", a],
        "predict": ["predict", "--predictor", p, a, "--measure", "local", "--passes", "1"],
        "calibrate": ["calibrate", "--predictor", p, "--device", "local", "--passes", "1", "--out",
                      str(tmp_path / "c.jcwm"), a],
        "search": ["search", "--model", ckpt, "--device", "local", "--predictor", p, "--out", str(tmp_path / "s"),
                   "--generations", "1", "--population", "2"],
    }
    for name, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 3, name
        err = capsys.readouterr().err
        assert err == f"jcw {name}: error: {REFUSAL.format(p=p)}\n", err
        assert not (tmp_path / "s").exists()
    for name in ("export", "measure", "predict"):
        assert main([*commands[name], "--allow-other-device"]) == 0, name


def test_calibrate_fits_the_overhead_to_the_measured_networks(work, tmp_path, capsys):
    p, files = work / "p.jcwm", [str(work / "a.tflite"), str(work / "b.tflite")]
    capsys.readouterr()
    assert main(["calibrate", "--predictor", str(p), "--device", "local-sparse", "--passes", "1",
                 "--out", str(tmp_path / "c.jcwm"), *files]) == 0
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in capsys.readouterr().out.splitlines()
            if line.split()[0] in files}
    measured, before, after = zip(*rows.values(), strict=True)
    # two networks of one size: the overhead is their mean gap, so predicted equals measured on average
    assert sum(after) == pytest.approx(sum(measured), rel=1e-3)
    assert abs(sum(before) - sum(measured)) > 0.01 * sum(measured)
    calibrated = persist.load(tmp_path / "c.jcwm")
    assert calibrated.overhead != persist.load(p).overhead
    assert main(["predict", "--predictor", str(tmp_path / "c.jcwm"), files[0], "--out", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["predicted_ms"] == pytest.approx(after[0], abs=1e-4)


def test_predict_measure_prints_both_and_every_command_prices_a_file_alike(work, tmp_path, capsys):
    p, a = str(work / "p.jcwm"), str(work / "a.tflite")
    capsys.readouterr()
    assert main(["predict", "--predictor", p, a, "--measure", "local-sparse", "--passes", "1",
                 "--out", str(tmp_path / "a.json")]) == 0
    result = json.loads((tmp_path / "a.json").read_text())
    printed = capsys.readouterr().out.splitlines()[-2]
    assert printed.startswith(f"measured on 'local-sparse': {result['measured_ms']:.4f} ms; predicted "
                              f"{result['predicted_ms']:.4f} ms") and result["measured_ms"] > 0
    assert json.loads((work / "a.tflite.json").read_text())["predicted_ms"] == pytest.approx(result["predicted_ms"])
    assert main(["measure", "--device", "local-sparse", "--predictor", p, "--passes", "1", a]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == a and float(row[2]) == pytest.approx(result["predicted_ms"], abs=1e-3)


class Upscaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x)).mean((2, 3))


def test_a_model_the_exporter_cannot_lower_is_refused_before_searching():
    with pytest.raises(ExportError) as err:
        JCW(Upscaled(), (1, 1, 8, 8), device="local-sparse")
    assert str(err.value).startswith("the model cannot be exported for 'local-sparse' (builtin), so nothing is "
                                     "searched: module 'shuffle' (nn.PixelShuffle) is not supported")
    model = build_model("mobilenet_v2", num_classes=10, in_channels=1, width_mult=0.35)
    assert JCW(model, (1, 1, 32, 32), device="local").space.n_var > 0
