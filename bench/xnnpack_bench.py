"""XNNPACK benchmark (issue 12): does the toolkit price what XNNPACK really runs? On arm-emu (XNNPACK's ARM code
under qemu-user; emulated milliseconds, about 100x a phone's, so ratios and regimes matter, not the numbers).

1. the demo's first steps on arm-emu (cached in bench/cache/arm-emu): MobileNetV2 x0.5 with 3 input channels
   trained on MNIST (replicated to 3 channels) at SIZE pixels, its kernels profiled in both regimes (nhwc dense;
   nchw inside a sparse cluster), the predictor fitted, the per-network overhead fitted end to end;
2. candidates on both sides of XNNPACK's 2/3-zeros gate and close to it (random widths; the 1x1 convs' densities
   set for a target zero share), exported for the xnnpack flavour; the exporter's verdict is the predicted regime;
3. all measured end to end (median of interleaved passes), each beside its dense twin (the same network with every
   zero weight set to 1e-7: XNNPACK runs it dense); the measured regime is sparse where the candidate runs at least
   15% faster than its twin;
4. the same candidates priced the old way (each layer alone at its faster form, no gate);
5. the fronts of joint, channel-only, weight-only and uniform widths, same budget, against arm-emu's predictor.

    .venv/bin/python bench/xnnpack_bench.py      (about 25 min the first time; needs `make arm-emu`)

Writes bench/results/xnnpack.md, xnnpack.png and xnnpack_fronts.png.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from jcw.demo import DemoConfig, Steps, prepare  # noqa: E402
from profiler.measure import measure_files  # noqa: E402
from profiler.runtimes.base import faster_forms  # noqa: E402
from pruner.accuracy.estimate import mnist_proxy_data, proxy_estimator  # noqa: E402
from pruner.deploy.export import export  # noqa: E402
from pruner.model.apply import apply_candidate, make_permanent  # noqa: E402
from pruner.search.engine import SearchConfig  # noqa: E402
from pruner.search.fronts import run_fronts  # noqa: E402
from pruner.search.pareto import plot_fronts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / "cache" / "arm-emu"
TARGETS = (0.0, 0.5, 0.6, 0.63, 0.65, 0.66, 0.665, 0.67, 0.68, 0.7, 0.75, 0.8, 0.9)
"""Zero shares of the candidates' 1x1 convs: far under the gate, close under it, close over it, far over it."""
TOLERANCE = 0.15
PASSES = 3


def zero_share(latency, x: np.ndarray) -> float:
    """The share of zero weights in the 1x1 convs XNNPACK's gate counts, for candidate `x`."""
    zeros, params = latency.cluster.zeros_and_params(latency.space.kernel_specs(x, latency.block))
    return zeros / params


def toward(space, latency, x: np.ndarray, target: float) -> np.ndarray:
    """`x` with its 1x1 convs' densities set so their zero share is at least `target`: all at the grid level just
    above, then layers lowered one level at a time, largest first, until the share reaches the target."""
    x = x.copy()
    n_w, grid = space.n_width, np.asarray(space.density_grid)
    prunable = [layer.name for layer in space.graph.prunable]
    genes = sorted((n_w + prunable.index(n) for n in latency.cluster.gated if n in prunable),
                   key=lambda g: -space.graph.prunable[g - n_w].cin * space.graph.prunable[g - n_w].cout)
    level = int(np.searchsorted(grid, 1 - target - 1e-9))  # the densest grid level with share <= target
    x[genes] = np.clip(level, space.lower[genes], space.upper[genes])
    for g in genes:
        if zero_share(latency, x) >= target - 1e-9:
            break
        x[g] = max(space.lower[g], x[g] - 1)
    return x


def old_price(latency, x: np.ndarray) -> float:
    """The per-layer price without the gate: each sparse 1x1 conv at the faster of its sparse (nchw) and dense
    forms, as if XNNPACK decided per layer."""
    specs = [s.replace(layout="nchw") if s.is_sparse and latency.cluster.runs_nchw(n, s) else s.replace(density=1.0)
             for n, s in latency.space.kernel_specs(x, latency.block).items()]
    cost, _ = faster_forms(latency.predict, specs)
    return float(cost.sum()) + latency.overhead_ms


def dense_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The same network with no zero weight left (each set to 1e-7): the same work in XNNPACK's dense regime."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                m.weight[m.weight == 0] = 1e-7
    return twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=56, help="input pixels a side (MNIST scaled)")
    parser.add_argument("--generations", type=int, default=10, help="every method's search budget")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = DemoConfig(device="arm-emu", input_size=args.size, devices_file=str(ROOT / "devices.yaml"))
    CACHE.mkdir(parents=True, exist_ok=True)
    p = prepare(CACHE / str(args.size), cfg, Steps(4))
    space, latency, device = p.jcw.space, p.jcw.latency, p.jcw.device
    prepared_min = (time.perf_counter() - started) / 60

    rng = np.random.default_rng(3)
    rows, files = [], []
    out_dir = CACHE / str(args.size) / "candidates"
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, target in enumerate(TARGETS):
        x = space.full()
        x[: space.n_width] = rng.integers(space.lower[: space.n_width], space.upper[: space.n_width] + 1)
        x = toward(space, latency, x, target) if target > 0 else x
        pruned = make_permanent(apply_candidate(p.base.model, space, x, device.runtime.block)).eval()
        exported = export(pruned, p.base.input_shape, device.runtime)
        twin = export(dense_twin(pruned), p.base.input_shape, device.runtime)
        assert not twin.verdict["sparse"]
        for suffix, e in (("", exported), ("_twin", twin)):
            files.append(out_dir / f"c{i:02d}{suffix}.tflite")
            files[-1].write_bytes(e.model)
        rows.append({"candidate": f"c{i:02d}", "zero_share": zero_share(latency, x),
                     "predicted_regime": "sparse" if exported.verdict["sparse"] else "dense",
                     "predicted_ms": float(latency(x[None])[0]), "old_price_ms": old_price(latency, x)})
    t0 = time.perf_counter()
    measured = measure_files(device, files, passes=PASSES)
    measure_min = (time.perf_counter() - t0) / 60
    table = pd.DataFrame(rows)
    table["measured_ms"] = [m.get("latency_ms", np.nan) for m in measured[0::2]]
    table["twin_ms"] = [m.get("latency_ms", np.nan) for m in measured[1::2]]
    table["measured_regime"] = np.where(table.measured_ms < 0.85 * table.twin_ms, "sparse", "dense")
    table["error"] = table.predicted_ms / table.measured_ms - 1
    table["old_error"] = table.old_price_ms / table.measured_ms - 1

    t0 = time.perf_counter()
    estimator = proxy_estimator(p.base.model, space, mnist_proxy_data(p.data, cfg.val_size, cfg.bn_batches),
                                device.runtime.block)
    config = SearchConfig(n_gen=args.generations, pop_size=cfg.population, seed=cfg.seed)
    fronts = run_fronts(space, latency, estimator, CACHE / str(args.size) / f"search{args.generations}", config,
                        repair=latency.repair, weight_stage=device.runtime.weight_stage)
    search_min = (time.perf_counter() - t0) / 60
    plot_fronts(fronts.fronts, OUT / "xnnpack_fronts.png", y="top1")
    write_report(args, table, fronts, latency, p, prepared_min, measure_min, search_min)


def write_report(args, table, fronts, latency, p, prepared_min, measure_min, search_min) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for regime, marker in (("dense", "o"), ("sparse", "s")):
        t = table[table.predicted_regime == regime]
        ax.scatter(t.measured_ms, t.predicted_ms, marker=marker, label=f"gate-aware price, predicted {regime}")
    ax.scatter(table.measured_ms, table.old_price_ms, marker="x", color="grey", label="old per-layer price")
    lim = [0, 1.1 * max(table.measured_ms.max(), table.predicted_ms.max(), table.old_price_ms.max())]
    ax.plot(lim, lim, "k--", linewidth=0.8)
    ax.fill_between(lim, [v * (1 - TOLERANCE) for v in lim], [v * (1 + TOLERANCE) for v in lim], alpha=0.1)
    ax.set(xlabel="measured on arm-emu (emulated ms)", ylabel="predicted (ms)", xlim=lim, ylim=lim,
           title=f"MobileNetV2 x0.5, 3 channels, {args.size} px")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "xnnpack.png", dpi=100)
    agree = int((table.predicted_regime == table.measured_regime).sum())
    within = float((table.error.abs() <= TOLERANCE).mean())
    old_within = float((table.old_error.abs() <= TOLERANCE).mean())
    hv = pd.DataFrame({"method": list(fronts.hypervolume), "hypervolume": list(fronts.hypervolume.values()),
                       "front size": [len(fronts.fronts[m]) for m in fronts.hypervolume],
                       "points running sparse": [int(sum(latency.cluster.sparse(latency.space.kernel_specs(
                           np.array([int(g) for g in genes.split(",")]), latency.block)) for genes in t.genes))
                           for t in fronts.fronts.values()]})
    shown = table.assign(zero_share=table.zero_share.map("{:.3f}".format),
                         error=table.error.map("{:+.1%}".format), old_error=table.old_error.map("{:+.1%}".format),
                         **{c: table[c].map("{:.1f}".format) for c in ("measured_ms", "twin_ms", "predicted_ms",
                                                                        "old_price_ms")})
    lines = [
        "# XNNPACK benchmark (arm-emu)", "",
        "`.venv/bin/python bench/xnnpack_bench.py" + (f" --size {args.size}" if args.size != 56 else "") + "`: "
        f"MobileNetV2 x0.5, 3 input channels, MNIST at {args.size}x{args.size}, on `arm-emu` (aarch64 LiteRT 1.4.0 "
        "under qemu-user: XNNPACK's ARM kernels and its sparse-or-dense decision run for real, the milliseconds are "
        "emulated, about 100x a phone's). The input size is the demo's: at 96 px one candidate takes about 0.6 s an "
        "inference under emulation and the profile, the passes and the searches would not fit a bench run.", "",
        f"Prepared (train, profile {len(p.jcw.predictor.training)} kernels in both regimes, fit, overhead) in "
        f"{prepared_min:.1f} min; measuring {len(table)} candidates x {PASSES} interleaved passes {measure_min:.1f} "
        f"min (with their dense twins); the four searches {search_min:.1f} min.", "",
        "## Predicted vs measured, both sides of the gate", "",
        f"- (a) predicted regime (the exporter's verdict, profiler.xnnpack) = measured regime for **{agree} of "
        f"{len(table)}** candidates (measured regime: sparse where the candidate runs at least 15% faster than its "
        "dense twin, the same network with no zero weight).",
        f"- (b) gate-aware price within +-{TOLERANCE:.0%} of measured for **{within:.0%}** of them (median |error| "
        f"{table.error.abs().median():.1%}, worst {table.error.abs().max():.1%}).",
        f"- (c) the old per-layer price (each layer at its faster form, no gate): within +-{TOLERANCE:.0%} for "
        f"**{old_within:.0%}** (median |error| {table.old_error.abs().median():.1%}, worst "
        f"{table.old_error.abs().max():.1%}).", "",
        "![predicted vs measured](xnnpack.png)", "",
        shown[["candidate", "zero_share", "predicted_regime", "measured_regime", "measured_ms", "twin_ms",
               "predicted_ms", "error", "old_price_ms", "old_error"]].to_markdown(index=False, disable_numparse=True),
        "",
        "## Fronts against arm-emu's predictor", "",
        f"Joint (one NSGA-II over widths and densities: on XNNPACK no layer is faster sparse alone, so the weight "
        f"stage is off), channel-only, weight-only and uniform widths, {args.generations} generations of "
        f"{p.jcw.latency and DemoConfig().population}, proxy estimator, repair by the gate. Hypervolumes as they came "
        "out:", "",
        hv.to_markdown(index=False, floatfmt=".4f"), "",
        "![fronts](xnnpack_fronts.png)", "",
    ]
    (OUT / "xnnpack.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
