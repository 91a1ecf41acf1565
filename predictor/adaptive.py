"""Adaptive sampling: measure where the latency model is least sure or most wrong, until it is accurate enough.

A random held-out set and a random seed set are measured first. Each round fits the model on
everything measured except the held-out set and scores it there (share within +-10%). If that
share is below the target and the budget allows, the next configurations are taken from the
unmeasured pool: half next to measured points a bootstrap ensemble misses by over 10% out of bag
(nn-Meter refines around such points), the rest where the ensemble disagrees most. The held-out
set only scores: steering by its errors would pick its neighbours and overstate the accuracy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from predictor import metrics
from predictor.latency import LatencyModel
from predictor.models import MODELS
from predictor.table import CONTEXT, TARGET, normalise, specs_frame
from profiler.devices import Device
from profiler.errors import UserError
from profiler.kernel import FIELDS, KernelSpec
from profiler.profile import profile_device
from profiler.store import ResultsStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Measure = Callable[[list[KernelSpec]], pd.DataFrame]
"""Measures kernels; returns a table (KernelSpec fields, latency_ms, optional context) of those that succeeded."""

STRATEGIES = ("adaptive", "random")
TOLERANCE = 0.10


def frame_keys(df: pd.DataFrame) -> list[tuple]:
    """KernelSpec.key() of each row of a table of KernelSpec fields."""
    cols = [df[f].to_numpy() if f != "density" else df[f].to_numpy(np.float64).round(6) for f in FIELDS]
    return [tuple(v.item() if hasattr(v, "item") else v for v in row) for row in zip(*cols, strict=True)]


def replay(data: pd.DataFrame, source: str = "replay table") -> tuple[list[KernelSpec], Measure]:
    """A table of measurements as a device: its distinct kernels (the pool) and a measure function.

    Kernels measured more than once (e.g. the same shape in several layers) get their median latency.
    """
    df = normalise(data, source)
    df["key"] = frame_keys(df)
    rows = df.groupby("key", sort=False).agg({**{c: "first" for c in (*FIELDS, *CONTEXT)}, TARGET: "median"})
    by_key = dict(zip(rows.index, range(len(rows)), strict=True))
    pool = [KernelSpec.from_row(r) for r in rows[list(FIELDS)].to_dict("records")]

    def measure(specs: list[KernelSpec]) -> pd.DataFrame:
        """Look the kernels up in the table."""
        return rows.iloc[[by_key[s.key()] for s in specs]].reset_index(drop=True)

    return pool, measure


def device_measure(device: Device, store: ResultsStore, batch_size: int) -> Measure:
    """Measure kernels on a device through the profiler; rows go to (and already measured ones come from) `store`."""

    bar = tqdm(desc=f"profile {device.name}: adaptive round", unit="kernel", file=sys.stderr, leave=False)

    def measure(specs: list[KernelSpec]) -> pd.DataFrame:
        """Profile the kernels not yet in the store, then return the store's rows for all of them."""
        result = profile_device(device, specs, store, batch_size, progress=bar)
        for spec, error in result.failed:
            print(f"{device.name}: failed {spec.name()}: {error.strip()[-200:]}", file=sys.stderr)
        table = store.table
        wanted = {s.key() for s in specs}
        return table[[k in wanted for k in frame_keys(table)]].reset_index(drop=True)

    return measure


@dataclass
class AdaptiveResult:
    """The accuracy curve (one row per round), every measured row, and the model fitted on all of them."""

    curve: pd.DataFrame
    data: pd.DataFrame
    model: LatencyModel
    reason: str
    failed: int


def _with_context(frame: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Give pool rows the measured rows' context (device, runtime, runtime version), which must be one."""
    contexts = measured[list(CONTEXT)].drop_duplicates()
    if len(contexts) != 1:
        raise UserError(f"adaptive sampling needs measurements of one device; got contexts {contexts.values.tolist()}")
    frame[list(CONTEXT)] = contexts.iloc[0].tolist()
    return frame


def _near_misses(missed: pd.DataFrame, errors: np.ndarray, cands: pd.DataFrame, n: int) -> list[int]:
    """Candidates (positions in cands) nearest to the rows missed by over 10%, worst miss first."""
    family = ["op", "h", "w", "k", "stride", "block", "activation"]
    axes = ["cin", "cout", "density"]
    picked: list[int] = []
    cand_family = cands[family].to_numpy()
    cand_axes = cands[axes].to_numpy(np.float64)
    span = np.maximum(cand_axes.max(axis=0) - cand_axes.min(axis=0), 1e-9) if len(cands) else np.ones(3)
    for i in np.argsort(-np.nan_to_num(np.abs(errors))):
        if len(picked) >= n or not abs(errors[i]) > TOLERANCE:
            break
        same = np.flatnonzero((cand_family == missed[family].to_numpy()[i]).all(axis=1))
        same = same[~np.isin(same, picked)]
        if len(same):
            dist = np.linalg.norm((cand_axes[same] - missed[axes].to_numpy(np.float64)[i]) / span, axis=1)
            picked.append(int(same[np.argmin(dist)]))
    return picked


def _ensemble(train: pd.DataFrame, cands: pd.DataFrame, kind: str, members: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A bootstrap ensemble's spread (std of log latency) per candidate, and out-of-bag error per train row (or NaN)."""
    spread, oob_sum, oob_n = [], np.zeros(len(train)), np.zeros(len(train))
    for _ in range(members):
        bag = rng.integers(0, len(train), len(train))
        model = MODELS[kind]().fit(train.iloc[bag].reset_index(drop=True))
        spread.append(np.log(model.predict(cands)))
        out = np.setdiff1d(np.arange(len(train)), bag)
        if len(out):
            oob_sum[out] += model.predict(train.iloc[out].reset_index(drop=True))
            oob_n[out] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        oob = metrics.relative_errors(train[TARGET].to_numpy(), oob_sum / oob_n)
    return np.std(spread, axis=0), oob


@threadpool_limits.wrap(limits=1)
def sample(
    pool: Sequence[KernelSpec],
    measure: Measure,
    target: float = 0.95,
    budget: int = 200,
    holdout: int | None = None,
    initial: int | None = None,
    step: int | None = None,
    strategy: str = "adaptive",
    kind: str = "physics",
    members: int = 4,
    seed: int = 0,
    monitor: pd.DataFrame | None = None,
    log: Callable[[str], None] = print,
) -> AdaptiveResult:
    """Measure kernels of `pool` until the held-out share within +-10% reaches `target` or `budget` is spent.

    `holdout`, `initial` and `step` default to a fifth, a fifth and a twentieth of the budget.
    `monitor` (a table with latency_ms, e.g. a whole replayed grid) is scored each round on its
    not yet measured rows, for benchmarks; it never steers sampling. Fits use one thread (faster
    than oversubscribed OpenMP on small tables).
    """
    pool = list({s.key(): s for s in pool}.values())
    budget, holdout, initial, step = _sizes(strategy, kind, len(pool), budget, holdout, initial, step)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    remaining = list(order[holdout + initial :])
    tried = holdout + initial
    failed = 0

    def take(idx: Sequence[int]) -> pd.DataFrame:
        nonlocal failed
        specs = [pool[i] for i in idx]
        got = measure(specs)
        failed += len(specs) - len(got)
        return normalise(got, "measurements") if len(got) else pd.DataFrame()

    test, train = take(order[:holdout]), take(order[holdout : holdout + initial])
    if len(test) < 5 or len(train) < 2:
        raise UserError(f"adaptive sampling: too few kernels measured ({failed} of {tried} failed)")
    pool_frame = _with_context(specs_frame(pool), pd.concat([test, train]))
    monitor = normalise(monitor, "monitor table") if monitor is not None else None
    rows, reason = [], ""
    while True:
        model = MODELS[kind]().fit(train)
        accuracy = metrics.within(test[TARGET].to_numpy(), model.predict(test), TOLERANCE)
        row = {"measurements": tried, "trained": len(train), "held_out": len(test), "within10": accuracy}
        if monitor is not None:
            done = set(frame_keys(train)) | set(frame_keys(test))
            unseen = monitor[[k not in done for k in frame_keys(monitor)]]
            row["monitor_within10"] = metrics.within(unseen[TARGET].to_numpy(), model.predict(unseen), TOLERANCE)
        rows.append(row)
        log(f"{tried} measured ({len(train)} to fit, {len(test)} held out): within +-10% on held-out {accuracy:.1%}")
        if accuracy >= target:
            reason = f"target {target:.0%} reached"
        elif tried >= budget:
            reason = f"budget of {budget} measurements spent"
        elif not remaining:
            reason = "every kernel of the pool measured"
        if reason:
            break
        n = min(step, budget - tried, len(remaining))
        picks = list(range(n)) if strategy == "random" else _next_picks(train, pool_frame.iloc[remaining], n, kind,
                                                                         members, rng)
        chosen, picked = [remaining[i] for i in picks], set(picks)
        remaining = [r for i, r in enumerate(remaining) if i not in picked]
        tried += len(chosen)
        new = take(chosen)
        if len(new):
            train = pd.concat([train, new], ignore_index=True)
    data = pd.concat([train, test], ignore_index=True)
    log(f"stopped: {reason}")
    return AdaptiveResult(pd.DataFrame(rows), data, LatencyModel.fit(data, kind), reason, failed)


def _sizes(strategy: str, kind: str, pool: int, budget: int, holdout: int | None, initial: int | None,
           step: int | None) -> tuple[int, int, int, int]:
    """The budget (at most the pool), held-out, initial and per-round counts with their defaults, checked."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown sampling strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if kind not in MODELS:
        raise UserError(f"unknown model kind '{kind}'; choose one of {', '.join(MODELS)}")
    budget = min(budget, pool)
    holdout = holdout if holdout is not None else max(5, budget // 5)
    initial = initial if initial is not None else max(5, budget // 5)
    step = step if step is not None else max(2, budget // 20)
    if holdout < 5 or initial < 2 or step < 1 or holdout + initial > budget:
        raise UserError(
            f"adaptive sampling: need holdout >= 5, initial >= 2, step >= 1 and holdout + initial <= budget "
            f"(= {budget}, the pool has {pool} kernels); got holdout {holdout}, initial {initial}, step {step}"
        )
    return budget, holdout, initial, step


def _next_picks(train: pd.DataFrame, candidates: pd.DataFrame, n: int, kind: str, members: int,
                rng: np.random.Generator) -> list[int]:
    """`n` candidates (positions) to measure next: half near misses of the bootstrap fits, the rest where the
    ensemble disagrees most."""
    cands = candidates.reset_index(drop=True)
    spread, oob = _ensemble(train, cands, kind, members, rng)
    picks = _near_misses(train, oob, cands, n // 2)
    spread[picks] = -np.inf
    return picks + [int(i) for i in np.argsort(-spread)[: n - len(picks)]]


def write_curve(curve: pd.DataFrame, target: float, stem: Path, title: str) -> tuple[Path, Path]:
    """Write the curve as `stem`.csv and a plot of it as `stem`.png; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, png = Path(f"{stem}.csv"), Path(f"{stem}.png")
    curve.to_csv(csv, index=False)
    plot_curve(curve, target, png, title)
    return csv, png


def plot_curve(curve: pd.DataFrame, target: float, png: Path, title: str) -> Figure:
    """Save a PNG of the curve (share within +-10% against measurements, the target dashed); returns the figure,
    so what was plotted can be read back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["measurements"], 100 * curve["within10"], marker="o", label="held-out")
    if "monitor_within10" in curve:
        ax.plot(curve["measurements"], 100 * curve["monitor_within10"], marker=".", label="all unmeasured")
    ax.axhline(100 * target, color="grey", linestyle="--", label=f"target {target:.0%}")
    ax.set(xlabel="measurements", ylabel="share within +-10% (%)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return fig
