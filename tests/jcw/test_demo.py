"""The demo pipeline end to end on a tiny configuration: real MNIST, torch, LiteRT, this machine as the device."""

import os

import pandas as pd
import pytest

from jcw.demo import DemoConfig, run_demo

TINY = DemoConfig(width=0.35, input_size=28, train_images=1000, train_epochs=1, plan_candidates=2,
                  overhead_candidates=3, generations=2, population=8, val_size=128, bn_batches=2,
                  finetune_images=320)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, TINY)


def test_demo_writes_a_report_with_fronts_candidates_and_predictor_accuracy(demo):
    out, report = demo
    text = report.read_text()
    for section in ("## Accuracy vs latency fronts", "## Fine-tuned candidates", "## Latency predictor",
                    "## The device", "XNNPACK"):
        assert section in text
    assert (out / "search" / "fronts.png").stat().st_size > 1000 and (out / "candidates.png").exists()
    pareto = pd.read_csv(out / "search" / "pareto.csv")
    assert set(pareto.method) == {"joint", "channel-only", "weight-only", "uniform"}
    assert (pareto.latency_ms > 0).all() and pareto.top1.between(0, 1).all()
    measured_rows = [line for line in text.splitlines() if line.startswith("| full") or line.startswith("| under_")]
    assert len(measured_rows) >= 2  # the full model and at least one fine-tuned candidate, measured


def test_a_second_run_reuses_every_cached_step(demo):
    out, report = demo
    cached = {p: p.stat().st_mtime_ns for p in [out / "model.pt", out / "predictor.zip",
                                                out / "model.accuracy.json", *(out / "finetuned").glob("*")]}
    rows = len(pd.read_csv(out / "results" / "local-sparse.csv"))
    run_demo(out, TINY)
    assert {p: p.stat().st_mtime_ns for p in cached} == cached
    assert len(pd.read_csv(out / "results" / "local-sparse.csv")) == rows
    assert os.path.exists(report)
