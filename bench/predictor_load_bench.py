"""Predictor load benchmark: `jcw predict --predictor M --table T --out O` on a 200,000-row kernel table, run
interleaved on one machine as

- before: the toolkit at BEFORE (default 435ba76, the last commit before model file format 3) with M as format 2
  (manifest and training table: refitted at every load);
- format 2: this checkout's toolkit with that format-2 file (still refitted, with a note);
- format 3: this checkout's toolkit with M as format 3 (the fitted state: no refit, no code run at load);

beside what any `jcw predict --table` pays before its first row: Python importing pandas, and importing the modules the
command needs. Every command runs in a new process with its bytecode cached (PYTHONPYCACHEPREFIX in the temporary
directory, one untimed warm-up run each), as in an installed package, even where PYTHONDONTWRITEBYTECODE is set.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/predictor_load_bench.py [--before REV] [--rounds N]

The predictor is the physics model fitted on the phone table in data/ (6,424 rows); the kernels are its rows
resampled with narrower couts and other densities. Checks that every output holds the fitted model's predictions
bit for bit. Writes bench/results/predictor_load.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from predictor import persist
from predictor.latency import LatencyModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results"
ROWS = 200_000
BEFORE = "435ba76"
STEPS = """
import gc, json, sys, time
t = [time.perf_counter()]
import jcw.cli
from predictor import persist, table
t.append(time.perf_counter())
model = persist.load(sys.argv[1])
t.append(time.perf_counter())
out = table.read_table(sys.argv[2])
t.append(time.perf_counter())
out["predicted_ms"] = model.predict(out, source=sys.argv[2])
t.append(time.perf_counter())
table.write_table(out, sys.argv[3])
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
gc.freeze()  # as jcw.cli.run
"""
"""The steps of `jcw predict --table` (jcw.prediction._predict_table), each timed; prints their wall times."""
STEP_NAMES = ("imports", "persist.load", "read_table", "predict (normalise, distinct kernels, regressor)",
              "write_table")


def as_format_2(src: Path, dst: Path) -> None:
    """The model file without its state, as format 2 wrote it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        manifest = json.loads(zin.read("manifest.json"))
        manifest = {**{k: v for k, v in manifest.items() if k != "state"}, "format": 2}
        zout.writestr("manifest.json", json.dumps(manifest))
        zout.writestr("training.parquet", zin.read("training.parquet"))


def kernels(raw: pd.DataFrame) -> pd.DataFrame:
    """ROWS kernels resampled from the table's rows, with narrower couts and other densities (no latency)."""
    rng = np.random.default_rng(0)
    rows = raw.sample(ROWS, replace=True, random_state=0).reset_index(drop=True)
    rows["cout"] = np.maximum(4, (rows["cout"] * rng.uniform(0.5, 1.0, ROWS)).round().astype(int))
    rows["density"] = rng.choice([0.3, 0.5, 0.7, 1.0], ROWS)
    return rows.drop(columns="latency_ms")


def export(rev: str, dst: Path) -> Path:
    """The toolkit's files at git revision `rev`, written under `dst`."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    dst.mkdir()
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def timed(args: list[str], code: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `args` with the toolkit in `code`."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=code,
                   env={**env, "PYTHONPATH": str(code)})
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def cell(times: list[tuple[float, float]]) -> str:
    """Median wall time (its range) and median CPU time."""
    wall, cpu = [t[0] for t in times], [t[1] for t in times]
    return f"{statistics.median(wall):.2f} s ({min(wall):.2f}-{max(wall):.2f}); CPU {statistics.median(cpu):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"git revision timed as before (default {BEFORE})")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args()
    raw = pd.read_csv(ROOT / "data" / "resnet18_phone_layers_0-9.csv")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = LatencyModel.fit(raw)
        persist.save(model, tmp / "format3.jcwm")
        as_format_2(tmp / "format3.jcwm", tmp / "format2.jcwm")
        table = kernels(raw)
        table.to_csv(tmp / "kernels.csv", index=False)
        expected = model.predict(table)
        old = export(args.before, tmp / "before")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")

        def predict(model_file: str, out: str) -> list[str]:
            return [sys.executable, "-m", "jcw.cli", "predict", "--predictor", str(tmp / model_file), "--table",
                    str(tmp / "kernels.csv"), "--out", str(tmp / out)]

        def load(model_file: str) -> list[str]:
            return [sys.executable, "-c", f"from predictor import persist; persist.load({str(tmp / model_file)!r})"]

        commands = {  # name: (arguments, the toolkit's directory)
            "before": (predict("format2.jcwm", "before.csv"), old),
            "format 2": (predict("format2.jcwm", "format2.csv"), ROOT),
            "format 3": (predict("format3.jcwm", "format3.csv"), ROOT),
            "load 2": (load("format2.jcwm"), ROOT),
            "load 3": (load("format3.jcwm"), ROOT),
            "import pandas": ([sys.executable, "-c", "import pandas"], ROOT),
            "imports": ([sys.executable, "-c", "import jcw.cli; from predictor import persist, table"], ROOT),
        }
        steps_args = [sys.executable, "-c", STEPS, str(tmp / "format3.jcwm"), str(tmp / "kernels.csv"),
                      str(tmp / "steps.csv")]
        for arguments, code in commands.values():  # warm-up: bytecode written, files in the page cache
            timed(arguments, code, env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        steps, loadavg = [], [os.getloadavg()[0]]
        for _ in range(args.rounds):  # interleaved: every command in every round
            for name, (arguments, code) in commands.items():
                times[name].append(timed(arguments, code, env))
            run = subprocess.run(steps_args, check=True, capture_output=True, text=True, cwd=ROOT,
                                 env={**env, "PYTHONPATH": str(ROOT)})
            steps.append(json.loads(run.stdout))
            loadavg.append(os.getloadavg()[0])
        exact = {name: bool(np.array_equal(pd.read_csv(tmp / f"{name}.csv")["predicted_ms"].to_numpy(), expected))
                 for name in ("before", "format2", "format3")}
    distinct = len(table.drop_duplicates())
    fmt = statistics.median(t[0] for t in times["format 3"])
    step_cells = ", ".join(f"{name} {statistics.median(s[i] for s in steps):.3f} s"
                           for i, name in enumerate(STEP_NAMES))
    threads = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ)
    lines = [
        "# Predictor load", "",
        f"`{threads}.venv/bin/python bench/predictor_load_bench.py --before {args.before} --rounds {args.rounds}` on "
        f"{time.strftime('%Y-%m-%d')}: median wall time (min-max) and median CPU time (user + system) of {args.rounds} "
        "interleaved rounds, each command a new process with its bytecode cached, on this shared "
        f"{os.cpu_count()}-core machine (1-minute load average {min(loadavg):.1f}-{max(loadavg):.1f} in the rounds: "
        "other jobs share it, so wall times are noisy and above CPU times). The model: the physics predictor fitted on "
        f"data/resnet18_phone_layers_0-9.csv (6,424 rows); the table: {ROWS:,} kernels ({distinct:,} distinct rows).",
        "",
        "| | wall (min-max); CPU |", "|---|---|",
        f"| `jcw predict --table`, before ({args.before}, format 2 file: refit at load) | {cell(times['before'])} |",
        f"| `jcw predict --table`, format 2 file (refit at load) | {cell(times['format 2'])} |",
        f"| `jcw predict --table`, format 3 file (state) | {cell(times['format 3'])} |",
        f"| `persist.load` in a fresh Python, format 2 | {cell(times['load 2'])} |",
        f"| `persist.load` in a fresh Python, format 3 | {cell(times['load 3'])} |",
        f"| floor: `python -c \"import pandas\"` | {cell(times['import pandas'])} |",
        f"| floor: the imports `jcw predict --table` needs | {cell(times['imports'])} |", "",
        f"Where a format-3 `jcw predict --table` spends its time (median wall time of each step, timed inside the "
        f"process; the rest of the command's time is the interpreter starting and exiting): {step_cells}.", "",
        f"200,000 predictions through the CLI in under 1 s (median wall): {fmt < 1.0}. Every output holds the fitted "
        f"model's predictions bit for bit: {all(exact.values())} ({', '.join(f'{k} {v}' for k, v in exact.items())}).",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "predictor_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
