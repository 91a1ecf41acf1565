"""Modern-ops benchmark (issue 14): predicted vs measured end to end for candidates of a MobileNetV3-small-style
network (squeeze-and-excite with hardsigmoid, hardswish, 5x5 depthwise; defined in tests/modern_nets.py) on
local-sparse (TFLite's built-in kernels, this machine).

1. profile the kernels `profiling_plan` lists for the network at 224x224 (cached in bench/cache/modern/, resumed);
2. fit the default latency predictor on them;
3. export 6 calibration and 10 evaluation candidates (fresh seeds), each sparse layer stored dense where the
   predictor says dense is faster, and time all 16 end to end (median of interleaved passes);
4. fit the per-network overhead on the calibration candidates only (squeeze-and-excite's mean and multiply, the
   hardsigmoid gates and the adds are in it), then predict each evaluation candidate.

    .venv/bin/python bench/modern_bench.py      (about 5 min the first time)

Writes bench/results/modern.md and modern.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from predictor.latency import LatencyModel  # noqa: E402
from profiler.devices import get_device  # noqa: E402
from profiler.measure import measure_files  # noqa: E402
from profiler.profile import profile_device  # noqa: E402
from profiler.store import ResultsStore  # noqa: E402
from pruner.deploy.export import export  # noqa: E402
from pruner.model.apply import apply_candidate, make_permanent  # noqa: E402
from pruner.model.graph import analyze  # noqa: E402
from pruner.search.latency import profiling_plan  # noqa: E402
from pruner.search.space import SearchSpace  # noqa: E402
from tests.modern_nets import MobileNetV3Small, randomise_bn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT, CACHE = ROOT / "bench" / "results", ROOT / "bench" / "cache" / "modern"
DEVICE, SHAPE = "local-sparse", (1, 3, 224, 224)
N_CALIBRATION, N_EVALUATION, PASSES, TOLERANCE = 6, 10, 3, 0.10


def main() -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    device = get_device(DEVICE, ROOT / "devices.yaml")
    torch.manual_seed(0)
    model = MobileNetV3Small().eval()
    randomise_bn(model, torch.Generator().manual_seed(1))
    space = SearchSpace(analyze(model, SHAPE))
    store = ResultsStore(CACHE / f"{DEVICE}.csv")
    plan = profiling_plan(space, device.runtime, seed=0)
    profile_device(device, plan, store)
    predictor = LatencyModel.fit(store.table)
    profiled_min = (time.perf_counter() - started) / 60

    choose = device.runtime.storage_chooser(predictor.predict)
    genes = np.vstack([space.sample(np.random.default_rng(1), N_CALIBRATION),
                       space.sample(np.random.default_rng(2), N_EVALUATION)])
    files, specs = [], []
    CACHE.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(genes):
        candidate = make_permanent(apply_candidate(model, space, x, block=device.runtime.block)).eval()
        exported = export(candidate, SHAPE, device.runtime, choose)
        files.append(CACHE / f"c{i:02d}.tflite")
        files[-1].write_bytes(exported.model)
        specs.append([layer.spec for layer in exported.layers])
    measured = np.array([r["latency_ms"] for r in measure_files(device, files, passes=PASSES)])
    predictor.fit_overhead(specs[:N_CALIBRATION], measured[:N_CALIBRATION])
    table = pd.DataFrame({
        "candidate": [f.stem for f in files[N_CALIBRATION:]],
        "sparse_layers": [sum(s.is_sparse for s in layer_specs) for layer_specs in specs[N_CALIBRATION:]],
        "measured_ms": measured[N_CALIBRATION:],
        "predicted_ms": [predictor.predict_network(s) for s in specs[N_CALIBRATION:]],
    })
    table["error"] = table.predicted_ms / table.measured_ms - 1
    write_report(table, predictor, len(plan), profiled_min, (time.perf_counter() - started) / 60)


def write_report(table: pd.DataFrame, predictor: LatencyModel, kernels: int, profiled_min: float,
                 total_min: float) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(table.measured_ms, table.predicted_ms)
    lim = [0, 1.1 * max(table.measured_ms.max(), table.predicted_ms.max())]
    ax.plot(lim, lim, "k--", linewidth=0.8)
    ax.fill_between(lim, [v * (1 - TOLERANCE) for v in lim], [v * (1 + TOLERANCE) for v in lim], alpha=0.1)
    ax.set(xlabel="measured on local-sparse (ms)", ylabel="predicted (ms)", xlim=lim, ylim=lim,
           title="MobileNetV3-small-style candidates, 224 px")
    fig.tight_layout()
    fig.savefig(OUT / "modern.png", dpi=100)
    within = float((table.error.abs() <= TOLERANCE).mean())
    shown = table.assign(error=table.error.map("{:+.1%}".format))
    lines = [
        "# Modern-ops benchmark (local-sparse)", "",
        "`.venv/bin/python bench/modern_bench.py`: a MobileNetV3-small-style network (squeeze-and-excite with "
        "hardsigmoid, hardswish, 5x5 depthwise convs; `tests/modern_nets.py`) at 224x224 on `local-sparse`. "
        f"{kernels} kernels profiled in {profiled_min:.1f} min (resumed from bench/cache/modern/ on re-runs), "
        "the default predictor fitted on them, "
        f"the per-network overhead fitted on {N_CALIBRATION} calibration candidates "
        f"({predictor.overhead.per_network_ms:.3f} ms + {predictor.overhead.per_kernel_ms:.4f} ms per kernel: the "
        "squeeze-and-excite means, multiplies and gates, the adds, the invoke), then "
        f"{len(table)} fresh candidates predicted and measured (median of {PASSES} interleaved passes). "
        f"{total_min:.1f} min in all.", "",
        f"**{within:.0%}** of the {len(table)} candidates within +-{TOLERANCE:.0%} of measured (median |error| "
        f"{table.error.abs().median():.1%}, worst {table.error.abs().max():.1%}).", "",
        "![predicted vs measured](modern.png)", "",
        shown.to_markdown(index=False, floatfmt=".3f"), "",
    ]
    (OUT / "modern.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
