"""Predictor benchmark: cross-layer accuracy of each model, adaptive vs random sampling, prediction speed.

Cross-layer, for each held-out layer: fit on the other layers plus a random 10% of the held-out
layer's grid, predict the rest of that layer; repeated for several random samples. On the phone
table, and on six layer-like grids measured on local-sparse (profiled into bench/cache/,
resumed on later runs). Adaptive sampling replays both tables as devices and counts the measurements
needed to reach 95% within +-10%. Writes bench/results/predictor.md and predictor_adaptive.png.
Run: .venv/bin/python bench/predictor_bench.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
import yaml
from threadpoolctl import threadpool_limits

from predictor import metrics
from predictor.adaptive import replay, sample
from predictor.latency import LatencyModel
from predictor.models import MODELS
from predictor.table import load, normalise
from profiler.devices import get_device
from profiler.kernel import FIELDS, KernelSpec
from profiler.plan import expand, load_plan
from profiler.profile import profile_device
from profiler.store import ResultsStore

PHONE = Path(__file__).resolve().parents[1] / "data" / "resnet18_phone_layers_0-9.csv"
HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "predictor.md"
LAYERS_PLAN = HERE / "local_sparse_layers.yaml"
SPARSE_TABLE = HERE / "cache" / "local-sparse.csv"
SAMPLE = 0.10
SEEDS = (0, 1, 2)
TARGET = 0.95
ADAPTIVE = {  # per table: budget, held-out, initial and per-round sizes of the sampling runs
    "phone": {"budget": 400, "holdout": 60, "initial": 40, "step": 20},
    "local-sparse": {"budget": 300, "holdout": 40, "initial": 30, "step": 10},
}


def cross_layer(df: pd.DataFrame, layers: np.ndarray, kind: str, seed: int) -> tuple[dict, dict]:
    """Pooled metrics over all held-out layers, and +-10% share per layer, for one model and seed."""
    rng = np.random.default_rng(seed)
    y_all, p_all, per_layer = [], [], {}
    for layer in np.unique(layers):
        idx = np.flatnonzero(layers == layer)
        sample = rng.choice(idx, max(1, round(SAMPLE * len(idx))), replace=False)
        test = np.setdiff1d(idx, sample)
        train = np.concatenate([np.flatnonzero(layers != layer), sample])
        model = MODELS[kind]().fit(df.iloc[train].reset_index(drop=True))
        p = model.predict(df.iloc[test].reset_index(drop=True))
        y = df["latency_ms"].to_numpy()[test]
        per_layer[int(layer)] = 100 * metrics.within(y, p, 0.10)
        y_all.append(y)
        p_all.append(p)
    return metrics.summary(np.concatenate(y_all), np.concatenate(p_all)), per_layer


def speed(df: pd.DataFrame, n: int = 100_000, runs: int = 5) -> dict[str, float]:
    """Median kernel predictions per second of the default model over `runs` calls of n kernels each.

    From KernelSpecs and from a frame, with duplicates (n drawn from the table's rows) and all
    distinct; "no dedupe" calls the regressor on every row, as predict did before deduplicating.
    """
    model = LatencyModel.fit(df)
    rows = df.sample(n, replace=True, random_state=0)
    rng = np.random.default_rng(0)
    distinct = [
        KernelSpec("conv", 28, 28, int(a), int(b), k=3, density=float(d))
        for a, b, d in zip(rng.integers(1, 1025, n), rng.integers(1, 1025, n), rng.random(n), strict=True)
    ]
    cases = {
        "KernelSpecs, repeated": [KernelSpec.from_row(r) for r in rows.to_dict("records")],
        "table, repeated": rows.drop(columns="latency_ms").reset_index(drop=True),
        "KernelSpecs, all distinct": distinct,
    }
    out = {}
    for name, kernels in cases.items():
        for label, call in (
            ("", model.predict),
            (" (no dedupe)", lambda k: model.regressor.predict(model._frame(k, {}))),
        ):
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                call(kernels)
                times.append(time.perf_counter() - t)
            out[name + label] = n / statistics.median(times)
    return out


def model_table(df: pd.DataFrame, layers: np.ndarray) -> tuple[list[str], list[str], list]:
    """Cross-layer rows of the markdown table for every model, per-layer rows, and the layer ids."""
    lines = [
        "| model | within +-10% | within +-5% | RMSPE | worst layer (+-10%) | fit+predict s |",
        "|---|---|---|---|---|---|",
    ]
    per_layer_rows = []
    for kind, cls in MODELS.items():
        t = time.perf_counter()
        runs = [cross_layer(df, layers, kind, seed) for seed in SEEDS]
        elapsed = (time.perf_counter() - t) / len(SEEDS)
        mean = {k: np.mean([r[0][k] for r in runs]) for k in ("within10_pct", "within5_pct", "rmspe_pct")}
        by_layer = {layer: np.mean([r[1][layer] for r in runs]) for layer in runs[0][1]}
        worst = min(by_layer, key=by_layer.get)
        lines.append(
            f"| {cls.name} (`{kind}`) | {mean['within10_pct']:.1f}% | {mean['within5_pct']:.1f}% | "
            f"{mean['rmspe_pct']:.2f}% | layer {worst}: {by_layer[worst]:.1f}% | {elapsed:.1f} |"
        )
        per_layer_rows.append(f"| `{kind}` | " + " | ".join(f"{v:.1f}" for v in by_layer.values()) + " |")
        print(lines[-1], flush=True)
    return lines, per_layer_rows, list(runs[0][1])


def per_layer_table(rows: list[str], layer_ids: list) -> list[str]:
    """The per-held-out-layer markdown table."""
    return [
        "",
        "Within +-10% per held-out layer (%, mean over seeds):",
        "",
        "| model | " + " | ".join(f"L{layer}" for layer in layer_ids) + " |",
        "|---|" + "---|" * len(layer_ids),
        *rows,
    ]


def local_sparse_layers() -> tuple[pd.DataFrame, np.ndarray, float]:
    """Measure (or resume) the layer grids on local-sparse; rows, their layer (plan entry) and seconds spent."""
    device = get_device("local-sparse", HERE.parent / "devices.yaml")
    store = ResultsStore(SPARSE_TABLE)
    t = time.perf_counter()
    result = profile_device(device, load_plan(LAYERS_PLAN, device.runtime.block), store)
    if result.failed:
        raise SystemExit(f"local-sparse: {len(result.failed)} kernels failed, e.g. {result.failed[0]}")
    entries = yaml.safe_load(LAYERS_PLAN.read_text())["kernels"]
    layer_of = {s.key(): i for i, e in enumerate(entries) for s in expand(e, device.runtime.block, f"layer {i}")}
    df = normalise(store.table, str(SPARSE_TABLE))
    layers = np.array([layer_of.get(KernelSpec.from_row(r).key(), -1) for r in df.to_dict("records")])
    return df[layers >= 0].reset_index(drop=True), layers[layers >= 0], time.perf_counter() - t


def repeatability(df: pd.DataFrame, share: float = 0.1) -> float:
    """Share (%) of a random `share` of the local-sparse kernels whose re-measurement is within +-10% of the table."""
    device = get_device("local-sparse", HERE.parent / "devices.yaml")
    again = df.sample(frac=share, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "again.csv")
        profile_device(device, [KernelSpec.from_row(r) for r in again.to_dict("records")], store)
        second = normalise(store.table, "re-measurement").set_index(list(FIELDS))["latency_ms"]
    first = again.set_index(list(FIELDS))["latency_ms"]
    return 100 * metrics.within(first.to_numpy(), second.reindex(first.index).to_numpy(), 0.10)


def first_reaching(curve: pd.DataFrame, column: str) -> tuple[float, float]:
    """Measurements at the first round whose `column` reaches TARGET, and the true accuracy there (NaN if never)."""
    hit = curve[curve[column] >= TARGET]
    if hit.empty:
        return float("nan"), float("nan")
    return float(hit["measurements"].iloc[0]), float(hit["monitor_within10"].iloc[0])


def adaptive_vs_random(tables: dict[str, pd.DataFrame]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """Markdown rows comparing the strategies on each replayed table, and one curve per table and strategy."""
    lines = [
        "| table (kernels) | strategy | held-out reaches 95% at | true accuracy then | true 95% reached at | s |",
        "|---|---|---|---|---|---|",
    ]
    curves = {}
    for name, data in tables.items():
        pool, measure = replay(data, name)
        for strategy in ("adaptive", "random"):
            t = time.perf_counter()
            runs = [
                sample(pool, measure, target=2.0, strategy=strategy, seed=seed, monitor=data, log=lambda _: None,
                       **ADAPTIVE[name]).curve
                for seed in SEEDS
            ]
            elapsed = (time.perf_counter() - t) / len(SEEDS)
            stop = [first_reaching(c, "within10") for c in runs]
            true = [first_reaching(c, "monitor_within10")[0] for c in runs]
            curves[f"{name}, {strategy}"] = runs[0]
            lines.append(
                f"| {name} ({len(pool)}) | {strategy} | {_counts([s[0] for s in stop])} | "
                f"{_counts([100 * s[1] for s in stop], '%')} | {_counts(true)} | {elapsed:.0f} |"
            )
            print(lines[-1], flush=True)
    return lines, curves


def _counts(values: list[float], unit: str = "") -> str:
    """Per-seed values and their median ("never" where a run did not get there)."""
    shown = ", ".join("never" if np.isnan(v) else f"{v:.0f}{unit}" for v in values)
    return f"{np.median(values):.0f}{unit} ({shown})" if not np.isnan(values).any() else shown


def main() -> None:
    """Run every benchmark; print and write the report."""
    raw = pd.read_csv(PHONE)
    df, layers = load(PHONE), raw["layer"].to_numpy()
    lines = [
        "# Predictor benchmark",
        "",
        "## Cross-layer, ResNet-18 phone table",
        "",
        f"Each of the {len(np.unique(layers))} layers held out in turn: fit on the other layers plus a random "
        f"{SAMPLE:.0%} of the held-out layer's grid, predict the rest of it. Pooled over held-out rows, "
        f"mean over sampling seeds {SEEDS}. One CPU thread.",
        "",
    ]
    rows, per_layer, ids = model_table(df, layers)
    lines += rows + per_layer_table(per_layer, ids)

    sparse, sparse_layers, seconds = local_sparse_layers()
    lines += [
        "",
        "## Cross-layer, local-sparse (this machine, TFLite built-in kernels, 4x1 blocks)",
        "",
        f"The {len(np.unique(sparse_layers))} layer grids of `bench/local_sparse_layers.yaml` ({len(sparse)} kernels: "
        "1x1 and 3x3 convs at 56, 28 and 14 pixels, grids over cin, cout and density) measured with "
        f"`profile_device` into `{SPARSE_TABLE.relative_to(HERE.parent)}` ({seconds:.0f} s this run; "
        "measured kernels are reused on later runs). Same protocol as above.",
        "",
    ]
    rows, per_layer, ids = model_table(sparse, sparse_layers)
    lines += rows + per_layer_table(per_layer, ids)
    repeat = repeatability(sparse)
    lines += [
        "",
        f"Noise floor: re-measuring a random 10% of these kernels, {repeat:.1f}% of the second measurements are "
        "within +-10% of the first (the shared 2-core machine's run-to-run spread), which bounds what any "
        "model can score here.",
    ]
    print(lines[-1], flush=True)

    rows, curves = adaptive_vs_random({"phone": raw, "local-sparse": sparse})
    sizes = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for name, c in ADAPTIVE.items())
    lines += [
        "",
        "## Adaptive vs random sampling (tables replayed as devices)",
        "",
        "Each table's distinct kernels are the pool, and looking a kernel up in the table is its measurement "
        "(`predictor.adaptive.replay`). Runs measure a random held-out set and a random initial set, then "
        "add kernels each round: `adaptive` takes half next to measured kernels that a 4-model bootstrap "
        "ensemble misses by over 10% out of bag and half where that ensemble disagrees most; `random` takes "
        "them at random. Measurements "
        f"count the held-out set. Sizes: {sizes}. Seeds {SEEDS}, median (per seed). "
        "*Held-out reaches 95%* is where `jcw profile --adaptive --target 0.95` stops; *true accuracy* is "
        "the share within +-10% over every kernel of the pool not measured; *true 95% reached at* is the "
        "first round where that share reaches 95%.",
        "",
        *rows,
        "",
        "Curves (seed 0): `predictor_adaptive.png`.",
    ]
    _plot(curves)

    rates = speed(df)
    lines += [
        "",
        "## Prediction speed",
        "",
        "Default model, one thread, 100,000 kernels per call, median of 5 calls. `predict` predicts each distinct "
        "kernel once; *no dedupe* is the regressor on every row (predict before deduplication). The repeated "
        "cases draw from the phone table's 6,424 rows.",
        "",
        "| input | kernels/s | no dedupe |",
        "|---|---|---|",
        *(f"| {k} | {v:,.0f} | {rates[k + ' (no dedupe)']:,.0f} |" for k, v in rates.items() if "dedupe" not in k),
        "",
        "Reproduce: `.venv/bin/python bench/predictor_bench.py` (or `make bench`).",
    ]
    print("\n".join(lines[-8:-2]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


def _plot(curves: dict[str, pd.DataFrame]) -> None:
    """Held-out and true accuracy vs measurements, adaptive and random, one panel per table."""
    tables = list(dict.fromkeys(k.split(", ")[0] for k in curves))
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4))
    for ax, name in zip(np.atleast_1d(axes), tables, strict=True):
        for strategy, colour in (("adaptive", "C0"), ("random", "C1")):
            c = curves[f"{name}, {strategy}"]
            ax.plot(c["measurements"], 100 * c["monitor_within10"], color=colour, label=f"{strategy}: true")
            ax.plot(c["measurements"], 100 * c["within10"], color=colour, linestyle=":", label=f"{strategy}: held-out")
        ax.axhline(100 * TARGET, color="grey", linestyle="--")
        ax.set(xlabel="measurements", ylabel="within +-10% (%)", title=f"{name} (seed 0)", ylim=(50, 100))
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT.parent / "predictor_adaptive.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
