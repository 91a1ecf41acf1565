"""How far a device's measurements can be trusted: rows of a results table clamped to the floor, rows whose samples
spread too wide for +-10%, and kernels that do not repeat when measured again at the end of a profile.

A table whose kernels do not repeat cannot teach a predictor to +-10%, whatever the regressor: these checks say so,
with the likely cause and the fix (profiler.advice), before a user trusts a fit or a front. numpy and pandas are
imported where used: `jcw profile --help` reads this module's defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from profiler.advice import NOISE_FIX, Advice

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MIN_KERNEL_MS = 1e-4
"""A kernel's time is its model's minus the empty harness's; where the harness measured slower, it is clamped here."""
TOLERANCE = 0.10  # the accuracy a predictor is held to, and so the repeatability a table needs
NOISY_SPREAD = 2 * TOLERANCE
"""A row is noisy when its samples' interquartile range exceeds this share of its kernel's time: half its samples
then fall outside +-10% of the median."""
NOISE_BOUND_SHARE = 0.2  # a table with more noisy rows than this cannot put 80% of its kernels within +-10%
REPEATABLE_SHARE = 0.8  # re-measured kernels within +-10%: below this share the device's noise is reported
REMEASURE = 12  # kernels measured again at the end of a profile


def clamped(table: pd.DataFrame) -> np.ndarray:
    """Rows whose kernel time was clamped to MIN_KERNEL_MS: the kernel ran no slower than its empty harness."""
    import pandas as pd

    return (pd.to_numeric(table["latency_ms"], errors="coerce") <= MIN_KERNEL_MS * (1 + 1e-9)).to_numpy()


def noisy(table: pd.DataFrame) -> np.ndarray:
    """Unclamped rows whose interquartile range is over NOISY_SPREAD of their kernel's time."""
    import pandas as pd

    spread = pd.to_numeric(table["iqr_ms"], errors="coerce") / pd.to_numeric(table["latency_ms"], errors="coerce")
    return (spread > NOISY_SPREAD).to_numpy() & ~clamped(table)


def table_summary(table: pd.DataFrame) -> dict:
    """Rows, clamped rows, noisy rows (None without an iqr_ms column) and the median cv of a results table, as JSON
    values."""
    import pandas as pd

    cv = pd.to_numeric(table["cv"], errors="coerce") if "cv" in table else pd.Series(dtype=float)
    return {"rows": len(table), "clamped": int(clamped(table).sum()),
            "noisy": int(noisy(table).sum()) if "iqr_ms" in table else None,
            "median_cv": float(cv.median()) if cv.notna().any() else None}


def noise_bound(summary: dict) -> bool:
    """Whether more than NOISE_BOUND_SHARE of a table's unclamped rows (`table_summary`) are noisy."""
    unclamped = summary["rows"] - summary["clamped"]
    return bool(unclamped and summary["noisy"] is not None and summary["noisy"] > NOISE_BOUND_SHARE * unclamped)


def table_advice(summary: dict, name: str = "the table") -> list[Advice]:
    """Warnings about a table (`table_summary`): clamped rows, and a spread that makes it noise-bound."""
    rows, advice = summary["rows"], []
    if summary["clamped"]:
        advice.append(Advice(
            f"{summary['clamped']} of {rows} rows of {name} ({summary['clamped'] / rows:.0%}) were clamped to "
            f"{MIN_KERNEL_MS:g} ms",
            "the kernel's model ran no slower than the empty harness subtracted from it: the kernel is below what "
            "the device's timer resolves, or the harness was timed during a burst of load",
            f"delete those rows and profile them again with {NOISE_FIX}"))
    unclamped = rows - summary["clamped"]
    if noise_bound(summary):
        cv = f", median cv {summary['median_cv']:.2f}" if summary.get("median_cv") is not None else ""
        advice.append(Advice(
            f"{summary['noisy']} of {unclamped} rows of {name} ({summary['noisy'] / unclamped:.0%}) spread over "
            f"{NOISY_SPREAD:.0%} of their kernel's time between repeats (interquartile range{cv}): the table is "
            "noise-bound, no predictor fitted on it can be held to +-10%",
            "the device was busy or its clock unsteady while profiling (a shared machine, frequency scaling, "
            "heat), or its samples were too short",
            NOISE_FIX))
    return advice


def repeatability(first_ms: Sequence[float], again_ms: Sequence[float]) -> dict:
    """How well kernels measured twice agree: the count, the share within +-10% (percent) and the median and worst
    relative change (percent)."""
    import numpy as np

    first, again = np.asarray(first_ms, dtype=float), np.asarray(again_ms, dtype=float)
    if not len(first):
        return {"kernels": 0, "within10_pct": math.nan, "median_change_pct": math.nan, "worst_change_pct": math.nan}
    change = np.abs(again / first - 1)
    return {"kernels": len(first), "within10_pct": float(100 * np.mean(change <= TOLERANCE)),
            "median_change_pct": float(100 * np.median(change)), "worst_change_pct": float(100 * change.max())}


def noise_advice(noise: dict) -> list[Advice]:
    """A warning when too few re-measured kernels (`repeatability`) repeat within +-10%."""
    if not noise.get("kernels") or noise["within10_pct"] >= 100 * REPEATABLE_SHARE:
        return []
    within = round(noise["kernels"] * noise["within10_pct"] / 100)
    return [Advice(
        f"only {within} of {noise['kernels']} kernels ({noise['within10_pct']:.0f}%) measured again at the end of "
        f"the profile of '{noise.get('device', '?')}' came within +-10% of their first measurement (median change "
        f"{noise['median_change_pct']:.1f}%, worst {noise['worst_change_pct']:.1f}%)",
        "the device's speed drifted during the profile (other work on it, frequency scaling, heat)",
        NOISE_FIX)]


def noise_path(table: str | Path) -> Path:
    """Where a table's device-noise record is kept: DEVICE.noise.json beside DEVICE.csv."""
    table = Path(table)
    return table.with_name(f"{table.stem}.noise.json")


def read_noise(table: str | Path) -> dict | None:
    """The device-noise record beside `table`, None when there is none (or it cannot be read)."""
    try:
        record = json.loads(noise_path(table).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "within10_pct" in record else None


def describe(noise: dict) -> str:
    """A re-measure's outcome in one line."""
    return (f"{round(noise['kernels'] * noise['within10_pct'] / 100)} of {noise['kernels']} kernels measured again "
            f"came within +-10% of their first measurement ({noise['within10_pct']:.0f}%, median change "
            f"{noise['median_change_pct']:.1f}%)")
