"""`jcw report RUN_DIR`, written by `jcw search` too: a user's own run gets the demo's kind of report. A small run
end to end (a model of the user's file, a generated image folder, this machine's `local-sparse` device, one
generation): how far the latencies can be trusted, the fronts, the picks with predicted and measured latency, the
warnings; then the same run reported against a predictor fitted on a noise-bound table (injected, not timed)."""

from __future__ import annotations

import json
import re
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from predictor.quality import advice
from pruner.model.checkpoint import format_genes, load_model


@pytest.fixture(scope="module")
def run(tmp_path_factory, user_files, jcw):
    """A searched, calibrated and measured run: (its directory, the user's model flags, its predictor)."""
    d = user_files(tmp_path_factory.mktemp("report"), {"train": 4, "val": 2})
    model = ["--model", f"{d / 'net.py'}:build", "--weights", d / "weights.pt", "--input-shape", "3,32,32"]
    device, predictor, out = ["--device", "local-sparse"], d / "p.jcwm", d / "run"
    assert jcw("plan", *model, *device, "--candidates", 1, "--out", d / "plan.yaml") == 0
    assert jcw("profile", *device, "--plan", d / "plan.yaml", "--out", d / "results", "--noise-kernels", 4) == 0
    assert jcw("fit", "--table", d / "results" / "local-sparse.csv", "--out", predictor) == 0
    space = load_model(f"{d / 'net.py'}:build", d / "weights.pt", "3,32,32").space("builtin")
    networks = []
    for name, genes in {"full": space.full(), "small": space.lower,
                        "some": space.sample(np.random.default_rng(0), 1)[0]}.items():
        networks.append(d / f"{name}.tflite")
        assert jcw("export", *model, *device, "--candidate", format_genes(genes), "--out", networks[-1]) == 0
    assert jcw("calibrate", "--predictor", predictor, *device, "--passes", 1, *networks) == 0
    assert jcw("search", *model, *device, "--predictor", predictor, "--data", f"imagefolder:{d / 'images'}",
               "--torch-device", "cpu", "--threads", 1, "--generations", 1, "--population", 6, "--val-size", 8,
               "--budgets", "1000,0.000001", "--out", out) == 0
    pick = pd.read_csv(out / "budgets.csv").iloc[0]
    assert jcw("export", *model, *device, "--predictor", predictor, "--candidate", pick.genes, "--out",
               out / "pick.tflite") == 0
    assert jcw("measure", *device, "--predictor", predictor, "--passes", 1, "--out", out / "measured.csv",
               out / "pick.tflite") == 0
    return out, model, predictor


def test_the_search_writes_a_report_and_jcw_report_rewrites_it_with_the_measured_pick(run, jcw, capsys):
    out, _, predictor = run
    capsys.readouterr()
    assert jcw("report", out) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out / 'report.md'} (")
    text = (out / "report.md").read_text()
    for section in ("## Warnings", "## How far the latencies can be trusted", "## Fronts", "## Picks"):
        assert section in text
    assert re.search(r"- Predictor \(physics, fitted on \d+ kernels of local-sparse\): held-out \d+ of \d+ kernels: "
                     r"within \+-10% ", text)
    assert re.search(r"- Device noise \(local-sparse, at the end of its profile\): \d of 4 kernels measured again",
                     text)
    assert "- Per-network overhead (jcw calibrate): " in text and "predicted within +-10%: " in text
    assert "![fronts](fronts.png)" in text and (out / "fronts.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    for method, value in summary["hypervolume"].items():
        assert f"| {method} | {value:.4g} |" in text
    assert summary["estimate"] == {"estimator": "proxy", "val_images": 8, "bn_batches": 10, "seed": 0}
    pick = pd.read_csv(out / "budgets.csv").iloc[0]
    measured = pd.read_csv(out / "measured.csv").iloc[0]
    (row,) = [line for line in text.splitlines() if f"`{pick.genes}`" in line]
    assert f"{pick.latency_ms:.4f}" in row and f"{measured.latency_ms:.4f}" in row
    assert f"{pick.latency_ms / measured.latency_ms - 1:+.1%}" in row and f"`{pick.genes}`" in row
    assert "no candidate within 1e-06 ms" in text  # a budget no candidate meets has its note
    assert "XNNPACK's verdict: none, the device runs builtin, not XNNPACK." in text
    manifest = json.loads(zipfile.ZipFile(predictor).read("manifest.json"))
    for warning in advice(manifest["quality"], manifest["overhead"]):  # the predictor's warnings, all of them
        assert f"- {warning}" in text


def test_a_noise_bound_predictor_is_warned_about_in_the_report(run, jcw, kernel_table, tmp_path):
    out, _, _ = run
    noisy = tmp_path / "noisy.csv"
    kernel_table(spread=0.5, clamped=3).to_csv(noisy, index=False)
    assert jcw("fit", "--table", noisy, "--out", tmp_path / "noisy.jcwm") == 0
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["predictor"]["path"] = str(tmp_path / "noisy.jcwm")
    (copy / "summary.json").write_text(json.dumps(summary))
    assert jcw("report", copy) == 0
    warnings = [line for line in (copy / "report.md").read_text().splitlines() if line.startswith("- warning: ")]
    assert any("3 of 144 rows" in w and "clamped to 0.0001 ms" in w for w in warnings)
    assert any("the table is noise-bound" in w and "likely cause: " in w and "fix: " in w for w in warnings)
    assert any("the per-network overhead was never fitted" in w for w in warnings)


def test_an_xnnpack_devices_picks_carry_its_verdict_into_budgets_and_the_report(run, jcw, device_table, tmp_path):
    from predictor import persist
    from predictor.latency import LatencyModel
    from pruner import JCW

    user = run[0].parent
    ckpt = load_model(f"{user / 'net.py'}:build", user / "weights.pt", "3,32,32")
    persist.save(LatencyModel.fit(device_table(ckpt, "local")), tmp_path / "local.jcwm")  # made-up latencies
    jcw_ = JCW.from_checkpoint(ckpt, "local", predictor=tmp_path / "local.jcwm", data=f"imagefolder:{user / 'images'}",
                               torch_device="cpu")
    jcw_.search([1000.0], tmp_path / "run", generations=1, population=4, val_images=8, bn_batches=1)
    picks = pd.read_csv(tmp_path / "run" / "budgets.csv")
    verdict = jcw_.exported(picks.genes[0]).verdict  # what the exporter says of the pick's file
    regime = "sparse" if verdict["sparse"] else "dense"
    assert picks.xnnpack.tolist() == [regime] and picks.xnnpack_reason[0] == verdict["reason"] != ""
    assert jcw("report", tmp_path / "run") == 0
    text = (tmp_path / "run" / "report.md").read_text()
    assert f"- XNNPACK runs a pick {regime}: {picks.xnnpack_reason[0]}" in text
    (row,) = [line for line in text.splitlines() if f"`{picks.genes[0]}`" in line]
    assert f"| {regime} " in row and "not measured" in row and "No pick is measured yet" in text
