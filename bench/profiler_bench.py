"""Profiler benchmark: latency vs cout and vs density for 1x1 and 3x3 kernels on the three local devices,
and the profiling overhead (wall time of `jcw profile` over the time spent in timed kernel invokes).

    .venv/bin/python bench/profiler_bench.py      (or: make bench)

Writes bench/results/profiler.md and bench/results/profiler.png.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

DEVICES = ["local", "local-sparse", "local-onnx"]
OUT = Path(__file__).parent / "results"
ONE_BY_ONE = dict(op="conv", h=56, k=1, cin=128)
THREE_BY_THREE = dict(op="conv", h=28, k=3, cin=64)


def select(table: pd.DataFrame, **fields) -> pd.DataFrame:
    mask = pd.Series(True, index=table.index)
    for key, value in fields.items():
        mask &= table[key] == value
    return table[mask]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tables, overhead = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in DEVICES:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jcw.cli", "profile", "--device", device, "--out", tmp],
                           check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            table = pd.read_csv(Path(tmp) / f"{device}.csv")
            measured = (table.model_ms * table.runs).sum() / 1e3
            tables[device], overhead[device] = table, (wall, measured, wall / measured)

    lines = ["# Profiler benchmark", "", f"`make bench` on {time.strftime('%Y-%m-%d')}, one run, default plan; "
             "latency in ms (median of the runner's samples minus the empty-harness baseline).", ""]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, (label, shape) in enumerate([("1x1 56x56, cin 128", ONE_BY_ONE), ("3x3 28x28, cin 64", THREE_BY_THREE)]):
        by_cout = pd.DataFrame({d: select(t, density=1.0, **shape).set_index("cout").latency_ms
                                for d, t in tables.items()})
        full_cout = by_cout.index.max()
        by_density = pd.DataFrame({d: select(t, cout=full_cout, **shape).set_index("density").latency_ms
                                   for d, t in tables.items()})
        for ax, frame, x in ((axes[row, 0], by_cout, "cout (density 1.0)"),
                             (axes[row, 1], by_density, f"density (cout {full_cout})")):
            frame.plot(ax=ax, marker="o", title=f"{label}: latency vs {x.split()[0]}")
            ax.set_xlabel(x)
            ax.set_ylabel("latency (ms)")
            ax.set_ylim(bottom=0)
        lines += [f"## {label}: latency vs cout (density 1.0)", "", by_cout.round(3).to_markdown(), "",
                  f"## {label}: latency vs density (cout {full_cout})", "", by_density.round(3).to_markdown(), ""]
        if row == 0:
            ratio = by_density.loc[1.0] / by_density.loc[0.1]
            lines += ["Speed-up of density 0.1 over 1.0: "
                      + ", ".join(f"{d} {r:.2f}x" for d, r in ratio.items()), ""]
    fig.tight_layout()
    fig.savefig(OUT / "profiler.png", dpi=90)
    lines += ["## Profiling overhead", "", "wall time of `jcw profile` (process start included) over the time "
              "spent in timed invokes of kernel models (median x runs, summed). Target: under 1.5.", "",
              "| device | wall s | timed s | overhead |", "|---|---|---|---|"]
    lines += [f"| {d} | {w:.2f} | {m:.2f} | {r:.2f} |" for d, (w, m, r) in overhead.items()]
    lines += ["", "![latency plots](profiler.png)", ""]
    (OUT / "profiler.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
