"""Predictor benchmark on real phone data: cross-layer accuracy of each model, and prediction speed.

For each held-out layer of the phone table: fit on the other layers plus a random 10% of the
held-out layer's grid, predict the rest of that layer. Repeated for several random samples.
Writes bench/results/predictor.md.  Run: .venv/bin/python bench/predictor_bench.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from predictor import metrics
from predictor.latency import LatencyModel
from predictor.models import MODELS
from predictor.table import load
from profiler.kernel import KernelSpec

PHONE = Path(__file__).resolve().parents[2] / "shared" / "data" / "resnet18_phone_layers_0-9.csv"
OUT = Path(__file__).resolve().parent / "results" / "predictor.md"
SAMPLE = 0.10
SEEDS = (0, 1, 2)


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


def speed(df: pd.DataFrame, n: int = 100_000) -> tuple[float, float]:
    """Kernel predictions per second of the default model: from KernelSpecs, and from a frame."""
    model = LatencyModel.fit(df)
    rows = df.sample(n, replace=True, random_state=0)
    specs = [KernelSpec.from_row(r) for r in rows.to_dict("records")]
    t = time.perf_counter()
    model.predict(specs)
    from_specs = n / (time.perf_counter() - t)
    frame = rows.drop(columns="latency_ms").reset_index(drop=True)
    t = time.perf_counter()
    model.predict(frame)
    return from_specs, n / (time.perf_counter() - t)


def main() -> None:
    """Run every model over every held-out layer and seed; print and write the table."""
    raw = pd.read_csv(PHONE)
    df, layers = load(PHONE), raw["layer"].to_numpy()
    lines = [
        "# Predictor benchmark: ResNet-18 phone table, cross-layer",
        "",
        f"Each of the {len(np.unique(layers))} layers held out in turn: fit on the other layers plus a random "
        f"{SAMPLE:.0%} of the held-out layer's grid, predict the rest of it. Pooled over held-out rows, "
        f"mean over sampling seeds {SEEDS}. One CPU thread.",
        "",
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
    layer_ids = runs[0][1].keys()
    lines += [
        "",
        "Within +-10% per held-out layer (%, mean over seeds):",
        "",
        "| model | " + " | ".join(f"L{layer}" for layer in layer_ids) + " |",
        "|---|" + "---|" * len(layer_ids),
        *per_layer_rows,
    ]
    from_specs, from_frame = speed(df)
    lines += [
        "",
        f"Default model, one thread: {from_specs:,.0f} kernel predictions/s from KernelSpecs, "
        f"{from_frame:,.0f}/s from a table (100,000 kernels per call).",
        "",
        "Reproduce: `.venv/bin/python bench/predictor_bench.py` (or `make bench`).",
    ]
    print(lines[-3])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
