"""The demo's report: a Markdown file with PNG plots, written into the run directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pruner.search.fronts import WEIGHT_STAGE

NOTE = """\
**What the device is.** `{device}` is this machine (x86) running TFLite's built-in kernels with XNNPACK
off. On x86 with AVX, XNNPACK never runs sparse kernels ("dense is expected to be faster"), so weight
sparsity would buy nothing there; the built-in kernels run a 1x1 conv as FULLY_CONNECTED straight from
1x4-block sparse weights (TFLite's 1x4 = 4 consecutive input channels, "4x1" in this toolkit's in x out
naming), which does get faster with sparsity, and is the one sparse path this machine can measure for
real. On an ARM phone the XNNPACK sparse path applies instead (`devices.yaml: pixel`, block "1x4"): the same
search, profiled there, prices weight sparsity as that phone runs it. MNIST digits are scaled to
{size}x{size} so that layers are large enough for their latency to stand well above timer noise; whole
networks still take about a millisecond, so the per-invoke overhead is fitted from end-to-end
measurements and added to every prediction.
"""


def _candidates_plot(path: Path, runs: dict, results: dict, full_top1: float) -> Figure:
    """Save a PNG of the measured candidates' top-1 against their measured and predicted latency; returns the
    figure, so what was plotted can be read back."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, run in runs.items():
        if "latency_ms" not in run:
            continue
        top1 = full_top1 if name == "full" else results[name]["after"].top1
        ax.plot(run["latency_ms"], 100 * top1, "o", color="C0" if name != "full" else "C3")
        ax.plot(run["predicted_ms"], 100 * top1, "x", color="grey")
        ax.annotate(name, (run["latency_ms"], 100 * top1), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("latency (ms): measured (dots), predicted (crosses)")
    ax.set_ylabel("MNIST test top-1 (%)")
    ax.set_title("fine-tuned candidates and the full model")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


def prediction_error(run: dict) -> float:
    """How far a measured network's prediction is off: predicted / measured - 1."""
    return run["predicted_ms"] / run["latency_ms"] - 1


def busy_note(runs: dict, tolerance: float = 0.1) -> str:
    """A warning when the unpruned model, whose kernels the predictor was fitted on, measures more than
    `tolerance` off its prediction: then the machine was busy while measuring, not the predictor wrong."""
    full = runs.get("full", {})
    if "latency_ms" not in full:
        return ""
    error = prediction_error(full)
    if abs(error) <= tolerance:
        return ""
    return (f"**Note:** the full model too measured {error:+.1%} off its prediction, so the machine was probably "
            "busy while measuring (this is a shared machine). `make demo` again re-measures only, in about a "
            "minute.\n")


def write_report(out: Path, device, cfg, full_eval, held_out: dict, overhead, fronts, results: dict,
                 runs: dict) -> Path:
    """Write out/report.md (and out/candidates.png); returns the report's path."""
    _candidates_plot(out / "candidates.png", runs, results, full_eval.top1)
    hv = pd.DataFrame({"method": list(fronts.hypervolume), "hypervolume": list(fronts.hypervolume.values()),
                       "front size": [len(fronts.fronts[m]) for m in fronts.hypervolume]})
    lines = [
        "# JCW demo report", "",
        f"MobileNetV2 x{cfg.width} on MNIST ({cfg.input_size}x{cfg.input_size}), pruned for `{device.name}` "
        f"({device.description}).", "",
        f"Full model: test top-1 {full_eval.top1:.2%}.", "",
        "## Accuracy vs latency fronts", "",
        "Joint channel + weight pruning against channel-only, weight-only and uniform width multipliers, "
        f"each searched with the same estimator (proxy: BatchNorm recalibrated, {cfg.val_size} held-out validation "
        f"images) and predicted latency ({cfg.generations} generations of {cfg.population}). A density the device "
        "would run dense anyway is set back to dense in every method. The joint search is an NSGA-II over "
        f"widths, then, with at least {WEIGHT_STAGE:.0%} of its evaluations, its weight stage: each layer is made "
        "sparse alone in the full model and scored once, and the front's candidates get the layers that add the "
        "least loss per ms saved, cheapest first (`pruner.search.sensitivity`). Points of the joint front that prune "
        f"weights at all: {(fronts.fronts['joint']['weight_pruned_layers'] > 0).sum()} of "
        f"{len(fronts.fronts['joint'])}.", "",
        "![fronts](search/fronts.png)", "",
        "Hypervolume (loss x latency, one reference point; larger is better):", "",
        hv.to_markdown(index=False, floatfmt=".4f"), "",
        "## Fine-tuned candidates", "",
        "The best joint candidate under each latency budget, fine-tuned with its weight masks fixed "
        f"({cfg.finetune_images} images, {cfg.finetune_epochs} epoch), exported to TFLite and measured end to end "
        f"on the device (median of {cfg.measure_passes} interleaved passes). Accuracy is on the MNIST test split, "
        "which the search never saw.", "",
        "![candidates](candidates.png)", "",
    ]
    rows = []
    for name, run in runs.items():
        if "latency_ms" not in run:
            rows.append({"model": name, "note": f"measurement failed: {run.get('error', '?')[:80]}"})
            continue
        r = results.get(name)
        rows.append({
            "model": name,
            "top-1 before": f"{r['before'].top1:.2%}" if r else "",
            "top-1 after": f"{(r['after'] if r else full_eval).top1:.2%}",
            "predicted ms": f"{run['predicted_ms']:.4f}",
            "measured ms": f"{run['latency_ms']:.4f}",
            "error": f"{prediction_error(run):+.1%}",
            "size KiB": f"{run['bytes'] / 1024:.0f}",
        })
    lines += [pd.DataFrame(rows).to_markdown(index=False), "", busy_note(runs)]
    for name, r in results.items():
        layers = {layer.name: layer for layer in runs[name]["layers"]}
        table = r["table"].copy()
        table["exported as"] = [layers[n].storage if n in layers else "" for n in table["layer"]]
        lines += [f"### {name}: {r['row'].latency_ms:.4f} ms predicted at search time", "",
                  f"genes `{r['row'].genes}`", "", table.to_markdown(index=False), ""]
    lines += [
        "## Latency predictor", "",
        f"Fitted on {held_out['rows']} kernels measured on `{device.name}`; on 20% held out of the fit: "
        f"{held_out['within10_pct']:.1f}% within +-10%, {held_out['within5_pct']:.1f}% within +-5%, "
        f"RMSPE {held_out['rmspe_pct']:.1f}%. Per-network overhead fitted end to end: "
        f"{overhead.per_network_ms:.4f} ms + {overhead.per_kernel_ms:.5f} ms per kernel.", "",
        "## The device", "", NOTE.format(device=device.name, size=cfg.input_size), "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
