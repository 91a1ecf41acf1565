"""Search benchmark (issue 6): one run of the JCW search on MobileNetV2 + MNIST with the local-sparse predictor.

    .venv/bin/python bench/search_bench.py      (or: make bench)

Reuses the demo's first steps (trained model, profiled kernels, fitted predictor) cached in bench/cache/demo,
then times joint, channel-only and weight-only searches with the proxy estimator, and compares the fronts:
hypervolume against one reference point, at equal predicted latency the joint front's loss, and which front
points prune weights at all.
Writes bench/results/search.md and bench/results/search.png.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pruner.demo import DemoConfig, Steps, prepare
from pruner.estimate import mnist_proxy_data, proxy_estimator
from pruner.fronts import run_fronts
from pruner.search import SearchConfig

CACHE = Path(__file__).parent / "cache" / "demo"
OUT = Path(__file__).parent / "results"
CONFIG = SearchConfig(n_gen=10, pop_size=32, seed=0)


def joint_gap(joint: pd.DataFrame, other: pd.DataFrame) -> np.ndarray:
    """Per point of `other`'s front: the joint front's lowest loss at most as slow, minus that point's loss
    (negative: joint better; inf where joint has nothing that fast)."""
    return np.array([joint[joint.latency_ms <= row.latency_ms].loss.min() - row.loss if
                     (joint.latency_ms <= row.latency_ms).any() else np.inf for row in other.itertuples()])


def main() -> None:
    torch.set_num_threads(1)
    cfg = DemoConfig()
    CACHE.mkdir(parents=True, exist_ok=True)
    p = prepare(CACHE, cfg, Steps(4))
    estimator = proxy_estimator(p.base.model, p.space, mnist_proxy_data(p.data, cfg.val_size, cfg.bn_batches),
                                p.device.block)
    run_dir = CACHE / "search_bench"
    shutil.rmtree(run_dir, ignore_errors=True)  # time a whole search, not a resume
    start = time.perf_counter()
    fronts = run_fronts(p.space, p.latency, estimator, run_dir, CONFIG, repair=p.latency.densify)
    minutes = (time.perf_counter() - start) / 60
    f, hv = fronts.fronts, fronts.hypervolume
    rows = []
    for m, t in f.items():
        pruned = t["weight_pruned_layers"] > 0
        gap = joint_gap(f["joint"], t) if m != "joint" else np.array([np.nan])
        rows.append({"method": m, "front size": len(t), "hypervolume": hv[m],
                     "points with weight pruning": int(pruned.sum()),
                     "their best top-1": t["top1"][pruned].max() if pruned.any() else None,
                     "joint no worse at equal latency (share of points)": np.mean(gap <= 1e-12) if m != "joint"
                     else None, "median loss gap (joint - method)": np.median(gap) if m != "joint" else None})
    table = pd.DataFrame(rows)
    verdict = "PASS" if hv["joint"] >= max(hv["channel-only"], hv["weight-only"]) else "FAIL"
    OUT.mkdir(exist_ok=True)
    shutil.copy(run_dir / "fronts.png", OUT / "search.png")
    lines = [
        "# Search benchmark", "",
        f"MobileNetV2 x{cfg.width} on MNIST {cfg.input_size}x{cfg.input_size}, device `{cfg.device}` (predicted "
        f"latency), proxy estimator ({cfg.val_size} validation images, {cfg.bn_batches} BN batches); NSGA-II with "
        f"JCW survival, {CONFIG.n_gen} generations of {CONFIG.pop_size}, every method seeded with the uniform "
        "candidates and repaired alike (a density the device would run dense anyway is set back to dense). "
        "Top-1 is the proxy estimate on the validation images, before any fine-tuning.", "",
        f"Search time, three methods plus the uniform sweep: **{minutes:.1f} min** (target: under 10).", "",
        table.to_markdown(index=False, floatfmt=".4f"), "",
        f"Joint hypervolume at least that of channel-only and weight-only: **{verdict}**.", "",
        "![fronts](search.png)", "",
        "Command: `.venv/bin/python bench/search_bench.py`", "",
    ]
    (OUT / "search.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
