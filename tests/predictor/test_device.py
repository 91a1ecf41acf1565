"""Predictors know their device: recorded when fitted, refused for another device by every command that takes one
(unless --allow-other-device), and calibrated end to end by `jcw calibrate`; a model the exporter cannot lower is
refused before any search."""

from __future__ import annotations

import json
import re
import zipfile

import pandas as pd
import pytest
import torch
from torch import nn

from jcw.cli import main
from predictor import persist
from predictor.latency import LatencyModel, Target
from predictor.network import Overhead
from profiler.errors import UserError
from pruner import JCW
from pruner.deploy.export import ExportError
from pruner.model.checkpoint import Checkpoint, format_genes, save_checkpoint
from pruner.model.reference import build_model

REFUSAL = ("predictor {p} was fitted on device 'local-sparse' (builtin, 4x1), "
           "not 'local' (xnnpack, 1x4); pass --allow-other-device if you mean it")


@pytest.fixture(scope="module")
def work(tmp_path_factory, device_table, sparse_candidate):
    """A directory with ckpt.pt (untrained MobileNetV2 x0.35, 1 channel, 32x32), p.jcwm (a local-sparse predictor)
    and three candidates exported for local-sparse, a.tflite, b.tflite (the full model) and c.tflite (the smallest)."""
    d = tmp_path_factory.mktemp("device")
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 1, "width_mult": 0.35}
    ckpt = Checkpoint(build_model("mobilenet_v2", **kwargs), "mobilenet_v2", kwargs, (1, 1, 32, 32))
    save_checkpoint(d / "ckpt.pt", ckpt)
    persist.save(LatencyModel.fit(device_table(ckpt, "local-sparse")), d / "p.jcwm")
    space = ckpt.space("builtin")
    genes = {"a": format_genes(sparse_candidate(ckpt, "builtin")), "b": format_genes(space.full()),
             "c": format_genes(space.lower)}
    for name, x in genes.items():
        assert main(["export", "--model", str(d / "ckpt.pt"), "--candidate", x, "--device", "local-sparse",
                     "--predictor", str(d / "p.jcwm"), "--out", str(d / f"{name}.tflite")]) == 0
    return d


def test_the_model_file_records_the_device_it_was_fitted_on(work, phone_table):
    manifest = json.loads(zipfile.ZipFile(work / "p.jcwm").read("manifest.json"))
    assert manifest["fitted_on"] == {"device": "local-sparse", "runtime": "builtin",
                                     "runtime_version": "ai_edge_litert.interpreter 2.3.0", "block": "4x1"}
    assert persist.load(work / "p.jcwm").fitted_on == Target("local-sparse", "builtin",
                                                             "ai_edge_litert.interpreter 2.3.0", "4x1")
    assert LatencyModel.fit(pd.read_csv(phone_table)).fitted_on is None  # a table that names no device


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
    p, files = work / "p.jcwm", [str(work / f"{n}.tflite") for n in "abc"]
    capsys.readouterr()
    assert main(["calibrate", "--predictor", str(p), "--device", "local-sparse", "--passes", "1",
                 "--out", str(tmp_path / "c.jcwm"), *files]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: [float(v.rstrip("%")) for v in line.split()[1:]] for line in out.splitlines()
            if line.split()[0] in files}
    measured, before, after, left_out = zip(*rows.values(), strict=True)
    assert "note: all 3 networks have 53 layers: fitted the per-network overhead alone" in out
    # three networks of one size: the overhead is their mean gap, added to every prediction
    assert persist.load(p).overhead == Overhead()  # fitted on kernels alone: "before" is the kernels' sum
    calibrated = persist.load(tmp_path / "c.jcwm")
    assert calibrated.overhead.per_network_ms == pytest.approx((sum(measured) - sum(before)) / 3, abs=1e-3)
    assert calibrated.overhead.per_kernel_ms == 0
    assert after == pytest.approx([b + calibrated.overhead.per_network_ms for b in before], abs=2e-4)
    record = calibrated.quality["overhead"]  # each network predicted by the overhead of the other two
    assert record["networks"] == 3 and record["gaps"] == pytest.approx([g / 100 for g in left_out], abs=1e-3)
    assert main(["predict", "--predictor", str(tmp_path / "c.jcwm"), files[0], "--out", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["predicted_ms"] == pytest.approx(after[0], abs=1e-4)


def test_calibrate_refuses_fewer_than_three_networks_before_measuring(work, capsys):
    files = [str(work / "a.tflite"), str(work / "b.tflite")]
    assert main(["calibrate", "--predictor", str(work / "p.jcwm"), "--device", "local-sparse", *files]) == 3
    assert capsys.readouterr().err == (
        "jcw calibrate: error: 2 networks (a.tflite (53 layers), b.tflite (53 layers)): the overhead has two "
        "parameters (per network, per layer), and a stable fit needs at least 3 networks, of more than one size for "
        "the per-layer one; export more candidates (jcw export --candidate GENES) and pass them too\n")


def test_calibrate_refuses_an_overhead_that_makes_a_network_negative(work, tmp_path, monkeypatch, capsys):
    import profiler.measure

    files = [str(work / f"{n}.tflite") for n in "abc"]  # each measured at 0.001 ms: far below its layers' sum
    monkeypatch.setattr(profiler.measure, "measure_files",
                        lambda device, paths, passes: [{"file": f, "latency_ms": 0.001} for f in paths])
    assert main(["calibrate", "--predictor", str(work / "p.jcwm"), "--device", "local-sparse",
                 "--out", str(tmp_path / "c.jcwm"), *files]) == 3
    err = capsys.readouterr().err
    assert re.match(r"jcw calibrate: error: the fitted overhead \(-0\.\d{4} ms per network, \+0\.00000 ms per layer\) "
                    r"predicts [abc]\.tflite at -0\.\d{4} ms \(measured 0\.0010 ms\)", err), err
    assert not (tmp_path / "c.jcwm").exists()


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
