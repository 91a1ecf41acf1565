"""How far a latency model can be trusted, measured where it can be: its accuracy on kernels held out of its fit, the
table it was fitted on (clamped and noisy rows, profiler.noise), the device's repeatability, and its per-network
overhead's accuracy on networks left out of that fit. The numbers are saved in the model file (predictor.persist) and
every weakness becomes a warning with its likely cause and fix, so a search and its report say it too."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from predictor.latency import LatencyModel
from profiler.advice import NOISE_FIX, Advice
from profiler.noise import noise_advice, noise_bound, table_advice, table_summary

TARGET_WITHIN10 = 80.0
"""Percent of held-out kernels (or networks) within +-10% asked of a predictor (nn-Meter reports ~99% on phones)."""
MIN_HELD_OUT_ROWS = 20  # smaller tables are fitted on every row, their accuracy unknown


def held_out_accuracy(table: pd.DataFrame, kind: str = "physics", share: float = 0.2, seed: int = 0) -> dict | None:
    """Fit on all but a seeded random `share` of the rows and score the rest (LatencyModel.evaluate, plus "rows": the
    table's size); None when the table is too small or `share` is 0."""
    if share <= 0 or len(table) < MIN_HELD_OUT_ROWS:
        return None
    test = table.sample(frac=share, random_state=seed)
    return LatencyModel.fit(table.drop(test.index), kind).evaluate(test) | {"rows": len(table)}


def assess(raw: pd.DataFrame, held_out: dict | None, noise: dict | None, name: str = "the table") -> dict:
    """The quality record a fit saves in its model (JSON values): `held_out` accuracy, the raw table's
    clamped and noisy rows (`name` is how warnings call it), and the device's re-measured `noise` if known."""
    return {"held_out": held_out, "table": {**table_summary(raw), "name": name}, "device_noise": noise}


def describe_held_out(held_out: dict | None) -> str:
    """The held-out accuracy in one line."""
    if held_out is None:
        return "no kernels held out of the fit (under 20 rows, or a share of 0): its accuracy is unknown"
    return (f"held-out {int(held_out['n'])} of {held_out['rows']} kernels: within +-10% "
            f"{held_out['within10_pct']:.1f}%, within +-5% {held_out['within5_pct']:.1f}%, "
            f"RMSPE {held_out['rmspe_pct']:.2f}%")


def advice(quality: dict | None, overhead: dict | None = None) -> list[Advice]:
    """Every warning a model's quality record (`assess`, plus calibrate's "overhead" record) and its per-network
    `overhead` (the manifest's per_network_ms and per_kernel_ms) give; a model without a record gets one saying so."""
    found = []
    if quality is None:
        found.append(Advice("the predictor records no held-out accuracy", "it was fitted before fits recorded one",
                            "fit it again: jcw fit --table TABLE --out MODEL"))
        quality = {}
    table = quality.get("table")
    if table:
        found += table_advice(table, table.get("name", "the table"))
    if "held_out" in quality:
        found += _accuracy_advice(quality["held_out"], table)
    if quality.get("device_noise"):
        found += noise_advice(quality["device_noise"])
    if overhead is not None and not any(overhead.values()):
        found.append(Advice(
            "the per-network overhead was never fitted: whole networks are predicted as the sum of their layers",
            "jcw calibrate has not been run with this predictor",
            "export the full model and two or more pareto.csv rows (jcw export --candidate GENES) and run jcw "
            "calibrate --predictor MODEL --device NAME FILE FILE FILE"))
    if quality.get("overhead"):
        found += overhead_advice(quality["overhead"])
    return found


def _accuracy_advice(held_out: dict | None, table: dict | None) -> list[Advice]:
    if held_out is None:
        return [Advice("no kernels were held out of the fit, so its accuracy is unknown",
                       f"the table has under {MIN_HELD_OUT_ROWS} rows, or --holdout-share was 0",
                       "profile more kernels (jcw plan --candidates N) and fit with --holdout-share 0.2")]
    if held_out["within10_pct"] >= TARGET_WITHIN10:
        return []
    noisy = table is not None and noise_bound(table)
    cause = ("the table is noise-bound: its kernels' own measurements spread wider than +-10%" if noisy else
             f"too few kernels ({held_out['rows']}) for the regressor to learn the device" if held_out["rows"] < 200
             else "the regressor does not follow this device's latency over the plan's shapes and densities")
    fix = NOISE_FIX if noisy else ("measure more kernels where it errs (jcw profile --adaptive) or try another "
                                   "--kind (nnmeter-rf, gbm-raw)")
    return [Advice(f"only {held_out['within10_pct']:.1f}% of {int(held_out['n'])} held-out kernels were predicted "
                   f"within +-10% (asked: {TARGET_WITHIN10:.0f}%; RMSPE {held_out['rmspe_pct']:.1f}%)", cause, fix)]


def overhead_record(model: LatencyModel, gaps: np.ndarray) -> dict:
    """Calibrate's quality record: the overhead fitted and each network's gap when left out of its fit."""
    gaps = np.asarray(gaps, dtype=float)
    gaps = gaps[np.isfinite(gaps)]  # a network alone in its regime has no others to be predicted from
    within = float(100 * np.mean(np.abs(gaps) <= 0.10)) if len(gaps) else math.nan
    return {"networks": len(gaps), "within10_pct": within, "gaps": [float(g) for g in gaps],
            "per_network_ms": model.overhead.per_network_ms, "per_kernel_ms": model.overhead.per_kernel_ms}


def overhead_advice(record: dict) -> list[Advice]:
    """A warning when too few networks are predicted within +-10% when left out of the overhead's fit."""
    if not record["networks"] or record["within10_pct"] >= TARGET_WITHIN10:
        return []
    worst = max(record["gaps"], key=abs)
    within = round(record["networks"] * record["within10_pct"] / 100)
    return [Advice(f"only {within} of {record['networks']} networks were predicted within +-10% when each was left "
                   f"out of the per-network overhead's fit (worst {worst:+.1%})",
                   "the networks' end-to-end times were noisy, or their layers' predictions are off by more than a "
                   "constant per network and per layer",
                   f"measure with more --passes and {NOISE_FIX}; check jcw fit's held-out accuracy")]
