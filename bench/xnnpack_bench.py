"""XNNPACK benchmark (issues 12, 20): does the toolkit price what XNNPACK really runs? On arm-emu: XNNPACK's ARM code
under qemu-user, timed by its instruction clock (executed ARM instructions, deterministic; about 100x a phone's
milliseconds, so ratios and regimes matter, not the numbers).

Three families, each cached in bench/cache/arm-emu:
- MobileNetV2 x0.5 with 3 input channels, the demo's (trained on MNIST replicated to 3 channels at SIZE pixels);
- MobileNetV3-style blocks (hardswish, 3x3 and 5x5 depthwise) with squeeze-and-excite gated by sigmoid;
- the same gated by hardsigmoid (written (1/6) * relu6(3 + x), the form XNNPACK runs in NCHW).

For each: its kernels profiled on arm-emu in both regimes (nhwc dense; nchw inside a sparse cluster), the predictor
and its per-network overheads fitted; candidates on both sides of the 2/3 gate and close to it (random widths, the
gated 1x1 convs' densities set for a target zero share) exported; the predicted regime is the exporter's verdict
(profiler.xnnpack), the measured regime what XNNPACK executes (profiler.observe_xnnpack: its CHW and SpMM convs,
the output checked against the built-in kernels'); the gate-aware price against the instruction clock, beside the old
per-layer price (each layer at its faster form, no gate). Then the MobileNetV2 fronts of joint, channel-only,
weight-only and uniform widths, same budget, against arm-emu's predictor.

    .venv/bin/python bench/xnnpack_bench.py      (about 20 min the first time on a busy 2-core machine; `make arm-emu`)

Writes bench/results/xnnpack.md, xnnpack.png and xnnpack_fronts.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from jcw.demo import DemoConfig, Steps, prepare  # noqa: E402
from predictor import LatencyModel, save  # noqa: E402
from profiler.measure import measure_files  # noqa: E402
from profiler.observe_xnnpack import observe  # noqa: E402
from profiler.profile import profile_device  # noqa: E402
from profiler.runtimes.base import faster_forms  # noqa: E402
from profiler.store import ResultsStore  # noqa: E402
from pruner import JCW  # noqa: E402
from pruner.accuracy.estimate import mnist_proxy_data, proxy_estimator  # noqa: E402
from pruner.deploy.export import export  # noqa: E402
from pruner.model.apply import apply_candidate, make_permanent  # noqa: E402
from pruner.search.engine import SearchConfig  # noqa: E402
from pruner.search.fronts import run_fronts  # noqa: E402
from pruner.search.latency import overhead_probes  # noqa: E402
from pruner.search.pareto import plot_fronts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / "cache" / "arm-emu"
TARGETS = (0.0, 0.5, 0.6, 0.63, 0.65, 0.66, 0.665, 0.67, 0.68, 0.7, 0.75, 0.8, 0.9)
"""Zero shares of the candidates' gated 1x1 convs: far under the gate, close under it, close over it, far over it."""
SE_TARGETS = (0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9)
TOLERANCE = 0.15


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    """Global mean -> 1x1 conv -> relu -> 1x1 conv -> gate -> channel-wise multiply (MobileNetV3)."""

    def __init__(self, channels: int, gate: type):
        super().__init__()
        self.reduce, self.expand, self.gate = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4,
                                                                                               channels, 1), gate()

    def forward(self, x):
        return x * self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class SEBlock(nn.Module):
    """An inverted residual with squeeze-and-excite: 1x1 expand, k x k depthwise, SE, 1x1 project, [+ input]."""

    def __init__(self, cin: int, expand: int, cout: int, k: int, stride: int, act: type, gate: type):
        super().__init__()
        self.expand, self.dw = conv_bn(cin, expand, act=act), conv_bn(expand, expand, k, stride, expand, act)
        self.se, self.project = SqueezeExcite(expand, gate), conv_bn(expand, cout, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


def se_net(gate: type) -> nn.Module:
    """MobileNetV3-style blocks, every one with squeeze-and-excite gated by `gate` (random weights: latency only)."""
    torch.manual_seed(0)
    hs, re = nn.Hardswish, nn.ReLU
    return nn.Sequential(conv_bn(3, 16, 3, 2, act=hs), SEBlock(16, 48, 16, 3, 1, re, gate),
                         SEBlock(16, 72, 24, 3, 2, re, gate), SEBlock(24, 96, 24, 5, 1, hs, gate),
                         SEBlock(24, 96, 40, 5, 2, hs, gate), conv_bn(40, 96, act=hs), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(96, 10)).eval()


def prepare_family(name: str, model: nn.Module, shape: tuple[int, ...], plan_candidates: int = 8,
                   probes: int = 6) -> JCW:
    """A model's kernels profiled on arm-emu, the predictor and its overheads fitted (cached): its priced facade."""
    out = CACHE / name
    out.mkdir(parents=True, exist_ok=True)
    predictor_path = out / "predictor.zip"
    if not predictor_path.exists():
        unpriced = JCW(model, shape, "arm-emu", devices=ROOT / "devices.yaml")
        store = ResultsStore(out / "results" / "arm-emu.csv")
        profile_device(unpriced.device, unpriced.plan(plan_candidates, 0), store)
        predictor = LatencyModel.fit(store.table)
        genes = overhead_probes(unpriced.space, unpriced.cluster, probes, np.random.default_rng(1))
        networks, files = [], []
        for i, x in enumerate(genes):
            exported = export(unpriced.apply(x), shape, unpriced.runtime)
            files.append(out / "probes" / f"probe{i}.tflite")
            files[-1].parent.mkdir(exist_ok=True)
            files[-1].write_bytes(exported.model)
            networks.append(list(unpriced.runtime.read_layers(exported.model).values()))
        measured = measure_files(unpriced.device, files)
        predictor.fit_overhead(networks, [m["latency_ms"] for m in measured])
        save(predictor, predictor_path)
    return JCW(model, shape, "arm-emu", predictor=predictor_path, devices=ROOT / "devices.yaml")


def zero_share(latency, x: np.ndarray) -> float:
    """The share of zero weights in the 1x1 convs XNNPACK's gate counts, for candidate `x`."""
    zeros, params = latency.cluster.zeros_and_params(latency.space.kernel_specs(x, latency.block))
    return zeros / params


def toward(space, latency, x: np.ndarray, target: float) -> np.ndarray:
    """`x` with its gated 1x1 convs' densities set so their zero share is at least `target`: all at the grid level
    just above, then layers lowered one level at a time, largest first, until the share reaches the target."""
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


def candidates(family: str, jcw: JCW, model: nn.Module, targets: tuple[float, ...], seed: int) -> tuple[list, list]:
    """Rows (predicted regime and price) and exported files of candidates at each target zero share."""
    space, latency = jcw.space, jcw.latency
    rng, rows, files = np.random.default_rng(seed), [], []
    out = CACHE / family / "candidates"
    out.mkdir(parents=True, exist_ok=True)
    for i, target in enumerate(targets):
        x = space.full()
        x[: space.n_width] = rng.integers(space.lower[: space.n_width], space.upper[: space.n_width] + 1)
        x = toward(space, latency, x, target) if target > 0 else x
        pruned = make_permanent(apply_candidate(model, space, x, jcw.runtime.block)).eval()
        exported = export(pruned, jcw.input_shape, jcw.runtime)
        files.append(out / f"c{i:02d}.tflite")
        files[-1].write_bytes(exported.model)
        rows.append({"family": family, "candidate": f"c{i:02d}", "zero_share": zero_share(latency, x),
                     "predicted_regime": "sparse" if exported.verdict["sparse"] else "dense",
                     "predicted_ms": float(latency(x[None])[0]), "old_price_ms": old_price(latency, x)})
    return rows, files


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
    shape = (1, 3, args.size, args.size)
    families = {"MobileNetV2": (p.jcw, p.base.model, TARGETS)}
    for gate in (nn.Sigmoid, nn.Hardsigmoid):
        model = se_net(gate)
        families[f"SE {gate.__name__.lower()}"] = (prepare_family(f"se_{gate.__name__.lower()}_{args.size}", model,
                                                                  shape), model, SE_TARGETS)
    prepared_min = (time.perf_counter() - started) / 60

    rows, files = [], []
    for seed, (family, (jcw, model, targets)) in enumerate(families.items()):
        r, f = candidates(family, jcw, model, targets, seed + 3)
        rows += r
        files += f
    t0 = time.perf_counter()
    measured = measure_files(p.jcw.device, files)
    observed = observe(files, ROOT / ".arm-emu")
    measure_min = (time.perf_counter() - t0) / 60
    table = pd.DataFrame(rows)
    table["measured_ms"] = [m.get("latency_ms", np.nan) for m in measured]
    table["measured_regime"] = [o["regime"] for o in observed]
    table["chw_spmm"] = [f"{o['nchw_convs']}/{o['spmm_convs']}" for o in observed]
    table["error"] = table.predicted_ms / table.measured_ms - 1
    table["old_error"] = table.old_price_ms / table.measured_ms - 1

    t0 = time.perf_counter()
    space, latency = p.jcw.space, p.jcw.latency
    estimator = proxy_estimator(p.base.model, space, mnist_proxy_data(p.data, cfg.val_size, cfg.bn_batches),
                                p.jcw.runtime.block)
    config = SearchConfig(n_gen=args.generations, pop_size=cfg.population, seed=cfg.seed)
    fronts = run_fronts(space, latency, estimator, CACHE / str(args.size) / f"search{args.generations}", config,
                        repair=latency.repair, weight_stage=p.jcw.runtime.weight_stage)
    search_min = (time.perf_counter() - t0) / 60
    plot_fronts(fronts.fronts, OUT / "xnnpack_fronts.png", y="top1")
    write_report(args, table, fronts, families, p, prepared_min, measure_min, search_min)


def write_report(args, table, fronts, families, p, prepared_min, measure_min, search_min) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (family, t), marker in zip(table.groupby("family", sort=False), "os^", strict=False):
        ax.scatter(t.measured_ms, t.predicted_ms, marker=marker, label=f"{family}: gate-aware price")
    ax.scatter(table.measured_ms, table.old_price_ms, marker="x", color="grey", label="old per-layer price")
    lim = [0, 1.1 * max(table.measured_ms.max(), table.predicted_ms.max(), table.old_price_ms.max())]
    ax.plot(lim, lim, "k--", linewidth=0.8)
    ax.fill_between(lim, [v * (1 - TOLERANCE) for v in lim], [v * (1 + TOLERANCE) for v in lim], alpha=0.1)
    ax.set(xlabel="measured on arm-emu (instruction clock, ms)", ylabel="predicted (ms)", xlim=lim, ylim=lim,
           title=f"XNNPACK on arm-emu, {args.size} px")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "xnnpack.png", dpi=100)
    summary = []
    for family, t in table.groupby("family", sort=False):
        over = t[t.predicted_regime == "sparse"]
        summary.append({
            "family": family, "candidates": len(t),
            "verdict = observed regime": f"{int((t.predicted_regime == t.measured_regime).sum())} of {len(t)}",
            "within +-15%": f"{(t.error.abs() <= TOLERANCE).mean():.0%}",
            "median |error|": f"{t.error.abs().median():.1%}", "worst |error|": f"{t.error.abs().max():.1%}",
            "over the gate: within +-15%": f"{(over.error.abs() <= TOLERANCE).mean():.0%} of {len(over)}",
            "old price within +-15%": f"{(t.old_error.abs() <= TOLERANCE).mean():.0%}"})
    latency = p.jcw.latency
    hv = pd.DataFrame({"method": list(fronts.hypervolume), "hypervolume": list(fronts.hypervolume.values()),
                       "front size": [len(fronts.fronts[m]) for m in fronts.hypervolume],
                       "points running sparse": [int(sum(latency.cluster.sparse(latency.space.kernel_specs(
                           np.array([int(g) for g in genes.split(",")]), latency.block)) for genes in t.genes))
                           for t in fronts.fronts.values()]})
    shown = table.assign(zero_share=table.zero_share.map("{:.3f}".format),
                         error=table.error.map("{:+.1%}".format), old_error=table.old_error.map("{:+.1%}".format),
                         **{c: table[c].map("{:.2f}".format) for c in ("measured_ms", "predicted_ms", "old_price_ms")})
    kernels = {family: len(jcw.predictor.training) for family, (jcw, _, _) in families.items()}
    lines = [
        "# XNNPACK benchmark (arm-emu)", "",
        "`.venv/bin/python bench/xnnpack_bench.py" + (f" --size {args.size}" if args.size != 56 else "") + "`: "
        f"three families at {args.size}x{args.size} on `arm-emu` (aarch64 LiteRT 1.4.0 under qemu-user: XNNPACK's "
        "ARM kernels and its sparse-or-dense decision run for real), timed by its instruction clock (executed ARM "
        "instructions as ms of a core running one per ns: deterministic, one pass suffices; ratios and regimes "
        "matter, not the numbers). MobileNetV2 x0.5 is the demo's (trained on MNIST replicated to 3 channels); the "
        "SE families are MobileNetV3-style blocks (hardswish, 3x3 and 5x5 depthwise), each with squeeze-and-excite "
        "gated by sigmoid or by hardsigmoid, random weights.", "",
        f"Prepared (train, profile {', '.join(f'{k}: {v}' for k, v in kernels.items())} kernels in both regimes, fit, "
        f"overheads) in {prepared_min:.1f} min; exporting, measuring and observing {len(table)} candidates "
        f"{measure_min:.1f} min; the four searches {search_min:.1f} min.", "",
        "## Predicted vs measured, both sides of the gate", "",
        "Predicted regime: the exporter's verdict (profiler.xnnpack). Measured regime: what XNNPACK executes "
        "(profiler.observe_xnnpack: `chw_spmm` counts the convs it created on CHW kernels and, of them, the SpMM "
        "ones; a file with CHW convs whose output differs from the built-in kernels' would read \"broken\"). Price: "
        "the gate-aware prediction (the regime the candidate's densities put its cluster in, plus that regime's "
        "per-network overhead) against the instruction clock; old price: each layer at its faster form, no gate.", "",
        pd.DataFrame(summary).to_markdown(index=False), "",
        "![predicted vs measured](xnnpack.png)", "",
        shown[["family", "candidate", "zero_share", "predicted_regime", "measured_regime", "chw_spmm", "measured_ms",
               "predicted_ms", "error", "old_price_ms", "old_error"]].to_markdown(index=False, disable_numparse=True),
        "",
        "## MobileNetV2 fronts against arm-emu's predictor", "",
        f"Joint (one NSGA-II over widths and densities: on XNNPACK no layer is faster sparse alone, so the weight "
        f"stage is off), channel-only, weight-only and uniform widths, {args.generations} generations of "
        f"{DemoConfig().population}, proxy estimator, repair by the gate. Hypervolumes as they came out:", "",
        hv.to_markdown(index=False, floatfmt=".4f"), "",
        "![fronts](xnnpack_fronts.png)", "",
    ]
    (OUT / "xnnpack.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
