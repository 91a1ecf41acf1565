"""The demo pipeline end to end on a tiny configuration: real MNIST, torch, LiteRT, this machine as the device."""

import os

import numpy as np
import pandas as pd
import pytest

import jcw.report
import pruner.search.fronts
from jcw.demo import DemoConfig, run_demo

TINY = DemoConfig(width=0.35, input_size=28, train_images=1000, train_epochs=1, plan_candidates=2,
                  overhead_candidates=3, generations=2, population=8, val_size=128, bn_batches=2,
                  finetune_images=320)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, record_figures):
    """The demo's directory, its report and the figures of its two plots (the fronts, the fine-tuned candidates)."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fronts = record_figures(monkeypatch, pruner.search.fronts, "plot_fronts")
        candidates = record_figures(monkeypatch, jcw.report, "_candidates_plot")
        report = run_demo(out, TINY)
    return out, report, {"fronts": fronts[0], "candidates": candidates[0]}


def report_rows(text: str) -> dict[str, dict[str, str]]:
    """The report's table of measured models: model name -> {column: cell}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model "))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        rows[cells["model"]] = cells
    return rows


def test_demo_writes_a_report_with_fronts_candidates_and_predictor_accuracy(demo):
    out, report, figures = demo
    text = report.read_text()
    for section in ("## Accuracy vs latency fronts", "## Fine-tuned candidates", "## Latency predictor",
                    "## The device", "XNNPACK"):
        assert section in text
    assert (out / "search" / "fronts.png").is_file() and (out / "candidates.png").is_file()
    pareto = pd.read_csv(out / "search" / "pareto.csv")
    assert set(pareto.method) == {"joint", "channel-only", "weight-only", "uniform"}
    assert (pareto.latency_ms > 0).all() and pareto.top1.between(0, 1).all()
    rows = report_rows(text)
    assert "full" in rows and any(name.startswith("under_") for name in rows)  # the full model and a candidate

    # fronts.png: each method's front of pareto.csv, top-1 along latency
    (ax,) = figures["fronts"].axes
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == set(pareto.method)
    for method, front in pareto.groupby("method"):
        front = front.sort_values("latency_ms")
        np.testing.assert_allclose(lines[method].get_xydata(), front[["latency_ms", "top1"]], rtol=1e-12)

    # candidates.png: each measured model of the report's table at its top-1, measured (a dot) and predicted (a cross)
    (ax,) = figures["candidates"].axes
    lines = ax.get_lines()
    assert [label.get_text() for label in ax.texts] == list(rows) and len(lines) == 2 * len(rows)
    for (name, row), dot, cross in zip(rows.items(), lines[::2], lines[1::2], strict=True):
        (x_dot, y_dot), (x_cross, y_cross) = dot.get_xydata()[0], cross.get_xydata()[0]
        assert (dot.get_marker(), cross.get_marker()) == ("o", "x"), name
        # the report prints ms to 4 decimals and top-1 in % to 2
        assert (x_dot, x_cross) == pytest.approx((float(row["measured ms"]), float(row["predicted ms"])), abs=1e-4)
        assert y_dot == y_cross == pytest.approx(float(row["top-1 after"].rstrip("%")), abs=5e-3), name


def test_a_second_run_reuses_every_cached_step(demo):
    out, report, _ = demo
    cached = {p: p.stat().st_mtime_ns for p in [out / "model.pt", out / "predictor.zip",
                                                out / "model.accuracy.json", *(out / "finetuned").glob("*")]}
    rows = len(pd.read_csv(out / "results" / "local-sparse.csv"))
    run_demo(out, TINY)
    assert {p: p.stat().st_mtime_ns for p in cached} == cached
    assert len(pd.read_csv(out / "results" / "local-sparse.csv")) == rows
    assert os.path.exists(report)
