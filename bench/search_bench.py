"""Search benchmark (issue 6): one run of the JCW search on MobileNetV2 + MNIST with the local-sparse predictor.

    .venv/bin/python bench/search_bench.py                         (or: make bench)
    .venv/bin/python bench/search_bench.py --estimator supernet    (JCW's estimator; about 13 min)
    .venv/bin/python bench/search_bench.py --generations 20        (twice the budget; about 20 min)

Reuses the demo's first steps (trained model, profiled kernels, fitted predictor) cached in bench/cache/demo,
then times joint, channel-only and weight-only searches with one estimator (then runs JCW's one-stage joint
search too) and compares the fronts: hypervolume against one reference point, at equal predicted latency the
joint front's loss, and which front points prune weights at all. The supernet is trained once before the
searches (not retrained per generation), so every method is scored by the same network.
Writes bench/results/search[_supernet].md and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from jcw.demo import DemoConfig, Steps, prepare
from pruner.accuracy.estimate import mnist_proxy_data, proxy_estimator
from pruner.accuracy.supernet import SupernetEstimator, build_supernet
from pruner.search.engine import SearchConfig
from pruner.search.fronts import METHODS, WEIGHT_STAGE, run_fronts
from pruner.search.pareto import hypervolumes, plot_fronts

CACHE = Path(__file__).parent / "cache" / "demo"
OUT = Path(__file__).parent / "results"
CONFIG = SearchConfig(n_gen=10, pop_size=32, seed=0)
SUPERNET_STEPS = 300
ONE_STAGE = "joint, one stage"


def joint_gap(joint: pd.DataFrame, other: pd.DataFrame) -> np.ndarray:
    """Per point of `other`'s front: the joint front's lowest loss at most as slow, minus that point's loss
    (negative: joint better; inf where joint has nothing that fast)."""
    return np.array([joint[joint.latency_ms <= row.latency_ms].loss.min() - row.loss if
                     (joint.latency_ms <= row.latency_ms).any() else np.inf for row in other.itertuples()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", choices=["proxy", "supernet"], default="proxy")
    parser.add_argument("--supernet-steps", type=int, default=SUPERNET_STEPS)
    parser.add_argument("--generations", type=int, default=CONFIG.n_gen,
                        help="every method's budget in generations (results go to search_<N>gen.md when not "
                             f"{CONFIG.n_gen})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = DemoConfig()
    CACHE.mkdir(parents=True, exist_ok=True)
    p = prepare(CACHE, cfg, Steps(4))
    held_out = mnist_proxy_data(p.data, cfg.val_size, cfg.bn_batches)
    train_minutes = 0.0
    if args.estimator == "proxy":
        estimator = proxy_estimator(p.base.model, p.jcw.space, held_out, p.jcw.device.runtime.block)
        described = f"proxy estimator ({cfg.val_size} validation images, {cfg.bn_batches} BN batches)"
    else:
        start = time.perf_counter()
        estimator = SupernetEstimator(build_supernet(p.base.model, p.jcw.space, p.jcw.device.runtime.block), held_out,
                                      p.data["train"].loader(64, shuffle=True, seed=cfg.seed))
        estimator.train(args.supernet_steps)
        train_minutes = (time.perf_counter() - start) / 60
        described = (f"supernet estimator ({args.supernet_steps} sandwich steps before the search, "
                     f"{train_minutes:.1f} min; {cfg.val_size} validation images)")
    name = "search" if args.estimator == "proxy" else "search_supernet"
    if args.generations != CONFIG.n_gen:
        name += f"_{args.generations}gen"
    config = dataclasses.replace(CONFIG, n_gen=args.generations)
    run_dir = CACHE / f"{name}_bench"
    shutil.rmtree(run_dir, ignore_errors=True)  # time a whole search, not a resume
    start = time.perf_counter()
    fronts = run_fronts(p.jcw.space, p.jcw.latency, estimator, run_dir, config, repair=p.jcw.latency.repair)
    minutes = (time.perf_counter() - start) / 60
    one_stage = run_fronts(p.jcw.space, p.jcw.latency, estimator, run_dir / "one_stage", config, methods=("joint",),
                           repair=p.jcw.latency.repair, weight_stage=0)  # JCW's single joint NSGA-II, to compare
    f = {**fronts.fronts, ONE_STAGE: one_stage.fronts["joint"]}
    hv = hypervolumes(f)  # one reference point for all five
    evaluations = {m: len(np.unique(np.load(run_dir / m / "archive.npz")["X"], axis=0)) for m in METHODS}
    evaluations[ONE_STAGE] = len(np.unique(np.load(run_dir / "one_stage" / "joint" / "archive.npz")["X"], axis=0))
    evaluations["uniform"] = len(f["uniform"])  # one candidate per distinct multiplier
    rows = []
    for m, t in f.items():
        pruned = t["weight_pruned_layers"] > 0
        gap = joint_gap(f["joint"], t) if m != "joint" else np.array([np.nan])
        rows.append({"method": m, "evaluations": evaluations[m], "front size": len(t), "hypervolume": hv[m],
                     "points with weight pruning": int(pruned.sum()),
                     "their best top-1": t["top1"][pruned].max() if pruned.any() else None,
                     "joint no worse at equal latency (share of points)": np.mean(gap <= 1e-12) if m != "joint"
                     else None, "median loss gap (joint - method)": np.median(gap) if m != "joint" else None})
    table = pd.DataFrame(rows)
    verdict = "PASS" if hv["joint"] >= max(hv["channel-only"], hv["weight-only"]) else "FAIL"
    no_worse = {m: np.mean(joint_gap(f["joint"], f[m]) <= 1e-12) for m in ("channel-only", "weight-only")}
    OUT.mkdir(exist_ok=True)
    plot_fronts(f, OUT / f"{name}.png", y="top1")
    lines = [
        "# Search benchmark", "",
        f"MobileNetV2 x{cfg.width} on MNIST {cfg.input_size}x{cfg.input_size}, device `{cfg.device}` (predicted "
        f"latency), {described}. Every method has the same budget, {config.n_gen} generations of "
        f"{config.pop_size} evaluations; every NSGA-II runs with JCW's survival, starts from the uniform "
        "candidates and repairs alike (a density the device would run dense anyway is set back to dense). "
        f"`joint` is a widths-only NSGA-II, then the weight stage (pruner.search.sensitivity) with "
        f"{WEIGHT_STAGE:.0%} of the budget or more; `{ONE_STAGE}` is JCW's single NSGA-II over widths and "
        "densities. Top-1 is the estimate on the validation images, before any fine-tuning.", "",
        f"Search time, three methods plus the uniform sweep: **{minutes:.1f} min**"
        + (" (target with the proxy at the default budget: under 10)" if args.generations == CONFIG.n_gen else "")
        + f"; `{ONE_STAGE}` ran after, for comparison.", "",
        table.to_markdown(index=False, floatfmt=".4f"), "",
        f"Joint hypervolume at least that of channel-only and weight-only: **{verdict}**. At equal predicted "
        f"latency the joint front's loss is no worse at {no_worse['channel-only']:.0%} of channel-only's front "
        f"points and {no_worse['weight-only']:.0%} of weight-only's.", "",
        f"![fronts]({name}.png)", "",
        f"Command: `.venv/bin/python bench/search_bench.py --estimator {args.estimator}"
        + (f" --generations {args.generations}`" if args.generations != CONFIG.n_gen else "`"), "",
    ]
    (OUT / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
