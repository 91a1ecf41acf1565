"""JCW's claim on CIFAR-10 on the emulated ARM phone (issue 19): joint channel and weight pruning against
channel-only, weight-only and uniform widths at equal measured latency, every pick fine-tuned and measured.

Every step goes through the toolkit's public API (pruner.JCW, the profiler, the predictor) and caches its result
in --cache, so the run resumes where it stopped:

1. base: `jcw train` of the built-in mobilenet_v2_cifar (the recipe below), unless --cache holds base.pt;
2. profile: the model's kernels (JCW.plan) profiled on arm-emu in both XNNPACK regimes, with its instruction clock
   (executed ARM instructions, ms at one per ns: deterministic, so the machine's load cannot move it);
3. predictor: fitted with 20% of the kernels held out; the per-network overhead fitted on probes of both regimes;
4. estimator: proxy and supernet estimates of 24 candidates (8 whose 1x1 convs are more than 2/3 zeros, 8
   channel-only, 8 mixed) against their top-1 after one fixed short fine-tune: Kendall tau each;
5. fronts: joint, channel-only, weight-only and uniform widths, one search budget, the better estimator;
6. picks: per method, the best candidate under 35%, 50% and 70% of the base model's measured latency, fine-tuned
   with the same recipe (masks fixed), exported to TFLite, measured twice on arm-emu and scored on the val split;
   where joint and channel-only are within a point, a second fine-tuning seed of both;
7. report: bench/results/jcw_cifar10.md, .csv, _estimator.csv and jcw_cifar10.png (top-1 vs measured latency).

    .venv/bin/python bench/jcw_cifar10.py --data ../shared/data/cifar10      (hours on 2 cores; resumable)

The held-out images the search scores candidates on are 5,000 of CIFAR-10's training split, never the val split
(the official test split), which only the final report reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from predictor import LatencyModel, save  # noqa: E402
from profiler.devices import get_device  # noqa: E402
from profiler.profile import profile_device  # noqa: E402
from profiler.store import ResultsStore  # noqa: E402
from pruner import JCW  # noqa: E402
from pruner.accuracy.estimate import calibrated_evaluation, first_images, proxy_data, recalibrate  # noqa: E402
from pruner.accuracy.supernet import SupernetEstimator  # noqa: E402
from pruner.data.loading import ImageFolder, default_cache_dir, image_transform  # noqa: E402
from pruner.model.checkpoint import load_checkpoint  # noqa: E402
from pruner.model.graph import KINDS  # noqa: E402
from pruner.search.latency import overhead_probes  # noqa: E402
from pruner.search.pareto import LATENCY, LOSS, best_under_budgets  # noqa: E402
from pruner.search.space import density_bounds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
DEVICE = "arm-emu"
METHODS = ("joint", "channel-only", "weight-only", "uniform")
BUDGETS = (0.35, 0.5, 0.7)  # of the base model's measured latency


@dataclass(frozen=True)
class Recipe:
    """Every setting of the run, recorded with its results."""

    width: float = 0.75
    train_epochs: int = 30  # base model: SGD, Nesterov momentum 0.9, lr 0.1 cosine, weight decay 5e-4, batch 128
    plan_candidates: int = 24
    overhead_probes: int = 8
    held_out: int = 5000  # training images kept out of training, where the search scores candidates
    val_images: int = 1000  # of the held-out images, per estimate
    bn_batches: int = 10
    supernet_steps: int = 600  # about 2.2 s a step here (four sub-networks, batches of 64)
    short_tune_steps: int = 150  # the estimator study's fixed short fine-tune (batches of 64)
    generations: int = 8
    population: int = 16
    tune_epochs: int = 1  # every pick: Adam lr 1e-3 cosine, masks fixed (sized so the run fits ~2 h on 2 cores)
    seed: int = 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextmanager
def phase(cache: Path, name: str):
    """Add the wall time of the block to `name` in cache/phases.json (summed over resumed runs)."""
    start = time.perf_counter()
    yield
    path = cache / "phases.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[name] = times.get(name, 0.0) + time.perf_counter() - start
    path.write_text(json.dumps(times, indent=1))


def cached(path: Path, make):
    """The JSON at `path`, or `make()`'s result written there first."""
    if not path.exists():
        value = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1))
    return json.loads(path.read_text())


def loaders(data: Path, recipe: Recipe):
    """(train loader without the held-out images, augmented; the held-out images; the val split), batches of 64."""
    shape = (3, 32, 32)
    train_set = ImageFolder(data / "train", image_transform(shape, augment="crop-flip"), train=True)
    plain = ImageFolder(data / "train", image_transform(shape), train_set.classes)
    val = ImageFolder(data / "val", image_transform(shape), train_set.classes)
    for folder in (train_set, plain, val):
        folder.cache(default_cache_dir())
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(recipe.seed)).tolist()
    held, rest = order[: recipe.held_out], order[recipe.held_out:]
    train = DataLoader(Subset(train_set, rest), 64, shuffle=True, generator=torch.Generator().manual_seed(1))
    return train, DataLoader(Subset(plain, held), 500), DataLoader(val, 500)


def base_model(cache: Path, data: Path, recipe: Recipe) -> Path:
    """The base checkpoint, trained with `jcw train` unless the cache holds it."""
    path = cache / "base.pt"
    if not path.exists():
        log(f"training the base model ({recipe.train_epochs} epochs; resumable)")
        subprocess.run([sys.executable, "-m", "jcw.cli", "train", "--arch", "mobilenet_v2_cifar", "--width",
                        str(recipe.width), "--data", f"imagefolder:{data}", "--input-size", "32", "--in-channels", "3",
                        "--epochs", str(recipe.train_epochs), "--optimizer", "sgd", "--lr", "0.1", "--weight-decay",
                        "5e-4", "--batch-size", "128", "--torch-device", "cpu", "--out", str(path)], check=True)
    return path


def predictor_of(cache: Path, base, recipe: Recipe) -> tuple[Path, dict]:
    """The arm-emu predictor of the base model's kernels with its overheads, and its held-out accuracy."""
    device = get_device(DEVICE, ROOT / "devices.yaml")
    path, accuracy_path = cache / "arm-emu.jcwm", cache / "predictor_accuracy.json"
    unpriced = JCW.from_checkpoint(base, device, torch_device="cpu")
    store = ResultsStore(cache / "arm-emu.csv")
    plan = unpriced.plan(recipe.plan_candidates, recipe.seed)
    log(f"profiling {len(plan)} kernels on {DEVICE} ({len(store.table)} already in {store.path})")
    result = profile_device(device, plan, store)
    if result.failed:
        raise SystemExit(f"{len(result.failed)} kernels failed on {DEVICE}, e.g. {result.failed[0]}")

    def held_out_accuracy() -> dict:
        test = store.table.sample(frac=0.2, random_state=recipe.seed)
        return LatencyModel.fit(store.table.drop(test.index)).evaluate(test) | {"rows": len(store.table)}

    accuracy = cached(accuracy_path, held_out_accuracy)
    if not path.exists():
        predictor = LatencyModel.fit(store.table)
        genes = overhead_probes(unpriced.space, unpriced.cluster, recipe.overhead_probes,
                                np.random.default_rng(recipe.seed + 1))
        fitting = JCW.from_checkpoint(base, device, predictor=predictor, torch_device="cpu")
        files = []
        for i, x in enumerate(genes):
            files.append(cache / "probes" / f"probe{i}.tflite")
            fitting.export(x, files[-1])
        files.append(cache / "probes" / "full.tflite")
        fitting.export(base.model, files[-1])
        runs = fitting.measure_all(files, passes=1)
        networks = [list(device.runtime.read_file(f).values()) for f in files]
        predictor.fit_overhead(networks, [r["latency_ms"] for r in runs])
        save(predictor, path)
    return path, accuracy


def short_tune(jcw: JCW, genes: np.ndarray, steps: int, seed: int) -> torch.nn.Module:
    """The estimator study's fixed short fine-tune: `steps` Adam steps (lr 1e-3, cosine) from the base weights."""
    torch.manual_seed(seed)
    batches = list(zip(range(steps), jcw.train_loader, strict=False))
    return jcw.finetune(genes, 1, lr=1e-3, loader=[b for _, b in batches])


def study_candidates(jcw: JCW, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """8 candidates over XNNPACK's gate (more than 2/3 zeros in the cluster's 1x1 convs), 8 channel-only, 8 mixed
    (random widths and densities, under the gate), each run through the search's repair."""
    space, latency = jcw.space, jcw.latency
    n_width = space.n_width
    picked: dict[str, np.ndarray] = {}
    while len([k for k in picked if k.startswith("sparse")]) < 8:
        x = space.sample(rng, 1)[0]
        x[n_width:] = rng.integers(space.lower[n_width:], np.minimum(space.lower[n_width:] + 3,
                                                                     space.upper[n_width:]) + 1)
        x = latency.repair(x[None])[0]
        if latency.cluster is not None and latency.cluster.sparse(space.kernel_specs(x, jcw.runtime.block)):
            picked[f"sparse{len(picked)}"] = x
    for i in range(8):
        x = space.sample(rng, 1)[0]
        x[n_width:] = space.upper[n_width:]
        picked[f"channel{i}"] = x
    for i in range(8):
        picked[f"mixed{i}"] = space.sample(rng, 1)[0]
    return picked


def estimator_study(cache: Path, jcw: JCW, recipe: Recipe) -> pd.DataFrame:
    """Proxy and supernet estimates of the study's candidates (on the first `val_images` held-out images) beside
    their top-1 after the short fine-tune (on the other held-out images)."""
    path = cache / "estimator_study.csv"
    if path.exists():
        return pd.read_csv(path)
    candidates = study_candidates(jcw, np.random.default_rng(recipe.seed + 7))
    held_out = proxy_data(jcw.train_loader, first_images(jcw.val_loader, recipe.val_images), recipe.bn_batches)
    batch = jcw.val_loader.batch_size
    scoring = [b for i, b in enumerate(jcw.val_loader) if i >= recipe.val_images // batch]  # the other held-out
    rows = []
    log("estimator study: the proxy's estimates")
    for name, x in candidates.items():
        start = time.perf_counter()
        proxy = calibrated_evaluation(jcw.apply(x), held_out)
        rows.append({"candidate": name, "genes": ",".join(map(str, x)), "proxy_loss": proxy.loss,
                     "proxy_top1": proxy.top1, "proxy_estimate_s": time.perf_counter() - start,
                     "latency_ms": float(jcw.latency(x[None])[0])})
    score = trained_supernet(cache, jcw, held_out, recipe)
    log("estimator study: the supernet's estimates, then the short fine-tunes (each cached)")
    for row, x in zip(rows, candidates.values(), strict=True):
        row |= cached(cache / "study" / f"{row['candidate']}.json",
                      partial(supernet_and_tuned, jcw, score, x, scoring, recipe))
        log(f"  {row['candidate']}: proxy {row['proxy_top1']:.3f}, supernet {row['supernet_top1']:.3f}, "
            f"tuned {row['tuned_top1']:.3f}")
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def supernet_and_tuned(jcw: JCW, score: SupernetEstimator, x: np.ndarray, scoring, recipe: Recipe) -> dict:
    """One study candidate's supernet estimate (timed) and its top-1 on `scoring` after the short fine-tune."""
    start = time.perf_counter()
    loss, top1 = score(x[None])[0]
    estimate_s = time.perf_counter() - start
    tuned = short_tune(jcw, x, recipe.short_tune_steps, recipe.seed)
    return {"supernet_loss": float(loss), "supernet_top1": float(top1), "supernet_estimate_s": estimate_s,
            "tuned_top1": jcw.evaluate(tuned, scoring).top1}


def trained_supernet(cache: Path, jcw: JCW, held_out, recipe: Recipe) -> SupernetEstimator:
    """The search's supernet estimator (JCW.supernet: channels and densities sampled per step from repaired
    candidates), trained once and cached."""
    path = cache / "supernet.pt"
    if path.exists():
        scores = jcw.supernet(held_out, 0, recipe.seed)
        scores.supernet.model.load_state_dict(torch.load(path, weights_only=True))
        return scores
    log(f"training the supernet: {recipe.supernet_steps} sandwich steps")
    start = time.perf_counter()
    scores = jcw.supernet(held_out, recipe.supernet_steps, recipe.seed)
    (cache / "supernet_time.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    torch.save(scores.supernet.model.state_dict(), path)
    return scores


def taus(study: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau of each estimator's top-1 against the top-1 after the short fine-tune."""
    return pd.DataFrame([{"estimator": name, "candidates": len(study),
                          "kendall_tau": float(kendalltau(study[f"{name}_top1"], study["tuned_top1"]).statistic)}
                         for name in ("proxy", "supernet")])


def picks_of(fronts, budgets_ms: list[float], methods=METHODS, label: str = "") -> pd.DataFrame:
    """Per method and budget the lowest-loss candidate within the budget (by predicted latency); `label` is added to
    the method's name."""
    rows = []
    for method in methods:
        table = best_under_budgets(fronts.fronts[method], budgets_ms)
        for fraction, row in zip(BUDGETS, table.itertuples(index=False), strict=True):
            rows.append({"method": method + label, "budget": fraction, "budget_ms": row.budget_ms, "found": row.found,
                         "note": row.note, "genes": getattr(row, "genes", ""),
                         "predicted_ms": getattr(row, LATENCY, float("nan")),
                         "estimated_loss": getattr(row, LOSS, float("nan"))})
    return pd.DataFrame(rows)


def tuned_weights(cache: Path, genes: str, seed: int) -> Path:
    """Where a pick's fine-tuned weights are kept (its file and records beside them, other suffixes)."""
    key = f"{sum(int(g) * 31 ** i for i, g in enumerate(genes.split(','))) % 10**12:012d}_s{seed}"
    return cache / "picks" / f"{key}.pt"


def tuned_pick(cache: Path, jcw: JCW, genes: str, seed: int, recipe: Recipe) -> dict:
    """A pick fine-tuned (masks fixed) with the recipe and exported; its top-1 on the val split before (prepared as
    the search prepares a candidate: BatchNorm recalibrated on training batches) and after fine-tuning."""
    path = tuned_weights(cache, genes, seed).with_suffix(".json")
    key = path.stem

    def make() -> dict:
        x = jcw.genes(genes)
        calibration = proxy_data(jcw.train_loader, [], recipe.bn_batches).calibration
        before = jcw.evaluate(recalibrate(jcw.apply(x), calibration))
        torch.manual_seed(seed)
        start = time.perf_counter()
        tuned = jcw.finetune(x, recipe.tune_epochs, lr=1e-3)
        seconds = time.perf_counter() - start
        model_file = cache / "picks" / f"{key}.tflite"
        model_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tuned.state_dict(), model_file.with_suffix(".pt"))  # for other precisions: jcw.apply(x), loaded
        jcw.export(tuned, model_file)
        return {"genes": genes, "seed": seed, "file": str(model_file), "tune_s": seconds,
                "top1_before": before.top1, "top1_after": jcw.evaluate(tuned).top1}

    return cached(path, make)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="CIFAR-10 as an image folder (train/, val/)")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache" / "cifar10")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to try the pipeline (minutes)")
    args = parser.parse_args()
    recipe = Recipe()
    if args.quick:
        recipe = Recipe(width=0.25, train_epochs=1, plan_candidates=2, overhead_probes=2, supernet_steps=10,
                        short_tune_steps=5, generations=1, population=6, tune_epochs=1, val_images=200)
    return run(args.data.resolve(), args.cache, recipe, " ".join(sys.argv))


def run(data: Path, cache: Path, recipe: Recipe, command: str) -> int:
    started = time.perf_counter()
    torch.set_num_threads(1)  # small convs on a shared 2-core machine: two OpenMP threads spin against other jobs
    cache.mkdir(parents=True, exist_ok=True)
    with phase(cache, "base model"):
        base = load_checkpoint(base_model(cache, data, recipe))
    with phase(cache, "profile, fit, overheads"):
        predictor_path, predictor_accuracy = predictor_of(cache, base, recipe)
    train, held_out_loader, val = loaders(data, recipe)
    device = get_device(DEVICE, ROOT / "devices.yaml")
    search_jcw = JCW.from_checkpoint(base, device, predictor=predictor_path, data=(train, held_out_loader),
                                     torch_device="cpu")
    cached(cache / "base_accuracy.json", lambda: vars(search_jcw.evaluate(base.model, val)))
    with phase(cache, "estimator study (supernet training included)"):
        study = estimator_study(cache, search_jcw, recipe)
    tau = taus(study)
    estimator = tau.sort_values("kendall_tau").iloc[-1]["estimator"]
    log(f"Kendall tau: {dict(zip(tau.estimator, tau.kendall_tau.round(3), strict=True))}; search with the {estimator}")
    base_ms = cached(cache / "base_measured.json", lambda: search_jcw.measure(
        search_jcw.export(base.model, cache / "base.tflite"), passes=2))
    budgets_ms = [round(f * base_ms["latency_ms"], 4) for f in BUDGETS]
    if estimator == "supernet":  # the study's, trained once
        held_out = proxy_data(train, first_images(held_out_loader, recipe.val_images), recipe.bn_batches)
        estimator = trained_supernet(cache, search_jcw, held_out, recipe)
    picks_path = cache / "picks.csv"
    if not picks_path.exists():
        with phase(cache, "search (4 methods)"):
            fronts = search_jcw.search(budgets_ms, cache / "search", recipe.generations, recipe.population,
                                       val_images=recipe.val_images, bn_batches=recipe.bn_batches,
                                       estimator=estimator, seed=recipe.seed)
        picks_of(fronts, budgets_ms).to_csv(picks_path, index=False)
    picks = pd.read_csv(picks_path, dtype={"genes": str}, keep_default_na=False, na_values=[""])
    final = JCW.from_checkpoint(base, device, predictor=predictor_path, data=(train, val), torch_device="cpu")
    with phase(cache, "picks: fine-tune, export, measure, score"):
        rows = tuned_rows(cache, final, picks, recipe)
    for method in ("channel-only", "joint"):
        with phase(cache, f"{method}, width floors lowered"):
            rows = pd.concat([rows, low_floor_rows(cache, base, device, predictor_path, (train, held_out_loader, val),
                                                   budgets_ms, recipe, method)], ignore_index=True)
    with phase(cache, "INT8: quantize, measure, score"):
        int8 = JCW.from_checkpoint(base, device, data=(train, val), torch_device="cpu", precision="int8")
        rows = pd.concat([rows, pd.DataFrame(int8_rows(cache, int8, base, rows, held_out_loader))], ignore_index=True)
    write_results(cache, rows, tau, study, base, base_ms, predictor_accuracy, recipe, command,
                  time.perf_counter() - started)
    return 0


LOW_FLOOR = 0.3
LOW = f" (width floors {LOW_FLOOR})"


def low_floor_rows(cache: Path, base, device, predictor_path: Path, data, budgets_ms: list[float],
                   recipe: Recipe, method: str) -> pd.DataFrame:
    """A check of the comparison's space: JCW's width floors (0.5-0.9; residual groups 0.9) stop channel-only short
    of the tightest budget. `method`'s search again with every width floor at LOW_FLOOR, same budget and estimator
    (the proxy's), its picks fine-tuned, measured and scored like the others."""
    train, held_out, val = data
    settings = {"density_bounds": density_bounds(device.runtime), "width_bounds": dict.fromkeys(KINDS, LOW_FLOOR)}
    suffix = "" if method == "channel-only" else f"_{method}"
    path = cache / f"picks_low_floors{suffix}.csv"
    if not path.exists():
        jcw = JCW(base.model, base.input_shape, device, predictor=predictor_path, data=(train, held_out),
                  origin=base.provenance(), settings=settings, torch_device="cpu")
        fronts = jcw.search(budgets_ms, cache / f"search_low_floors{suffix}", recipe.generations, recipe.population,
                            methods=[method], val_images=recipe.val_images, bn_batches=recipe.bn_batches,
                            seed=recipe.seed)
        picks_of(fronts, budgets_ms, [method], LOW).to_csv(path, index=False)
    picks = pd.read_csv(path, dtype={"genes": str}, keep_default_na=False, na_values=[""])
    final = JCW(base.model, base.input_shape, device, predictor=predictor_path, data=(train, val),
                origin=base.provenance(), settings=settings, torch_device="cpu")
    return pd.DataFrame([measured_pick(cache, final, pick, recipe.seed, recipe) if pick.found else
                         {"method": pick.method, "budget": pick.budget, "seed": recipe.seed, "found": False,
                          "note": pick.note} for pick in picks.itertuples(index=False)])


def tuned_rows(cache: Path, jcw: JCW, picks: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """Every found pick fine-tuned, measured twice and scored; a second seed where joint and channel-only are
    within a point at a budget."""
    rows = []
    for pick in picks.itertuples(index=False):
        if not pick.found:
            rows.append({"method": pick.method, "budget": pick.budget, "seed": recipe.seed, "found": False,
                         "note": pick.note})
            continue
        log(f"{pick.method} at {pick.budget:.0%}: fine-tuning, exporting, measuring")
        rows.append(measured_pick(cache, jcw, pick, recipe.seed, recipe))
    table = pd.DataFrame(rows)
    for budget in BUDGETS:
        at = table[(table.budget == budget) & table.found]
        joint, channel = (at[at.method == m]["top1_after"] for m in ("joint", "channel-only"))
        if len(joint) and len(channel) and abs(joint.iloc[0] - channel.iloc[0]) < 0.01:
            for method in ("joint", "channel-only"):
                pick = next(p for p in picks.itertuples(index=False) if p.method == method and p.budget == budget)
                rows.append(measured_pick(cache, jcw, pick, recipe.seed + 1, recipe))
    return pd.DataFrame(rows)


def measured_pick(cache: Path, jcw: JCW, pick, seed: int, recipe: Recipe) -> dict:
    tuned = tuned_pick(cache, jcw, pick.genes, seed, recipe)
    measured = cached(Path(tuned["file"]).with_suffix(".measured.json"),
                      lambda: jcw.measure_all([tuned["file"], tuned["file"]], passes=1))
    sidecar = json.loads(Path(f"{tuned['file']}.json").read_text())
    first, again = (m["latency_ms"] for m in measured)
    return {"method": pick.method, "budget": pick.budget, "seed": seed, "found": True,
            "measured_ms": first, "remeasured_ms": again, "predicted_ms": sidecar["predicted_ms"],
            "search_predicted_ms": pick.predicted_ms,
            "regime": "sparse" if (sidecar["xnnpack"] or {}).get("sparse") else "dense",
            "top1_before": tuned["top1_before"], "top1_after": tuned["top1_after"], "tune_s": tuned["tune_s"],
            "genes": pick.genes}


def int8_rows(cache: Path, jcw: JCW, base, rows: pd.DataFrame, calibration_loader) -> list[dict]:
    """The practitioner's alternative: INT8 (XNNPACK's dense QS8 kernels) of the base model and of each fine-tuned
    channel-only pick (INT8 runs dense, so channel pruning is what composes with it), quantized with ranges
    calibrated on 512 held-out training images, measured on arm-emu and scored on the val split as a TFLite file."""
    calibration = [torch.cat([images for images, _ in itertools.islice(calibration_loader, 2)])[:512].numpy()]
    out = [{"method": "int8 of base", "budget": 1.0, "seed": 0, "genes": "",
            **cached(cache / "int8" / "base.json", partial(int8_file, jcw, base.model, cache / "int8" / "base.tflite",
                                                           calibration))}]
    for row in rows[(rows.method == "channel-only") & rows.found.astype(bool)].itertuples(index=False):
        path = tuned_weights(cache, row.genes, row.seed).with_suffix(".int8.tflite")
        model = jcw.apply(row.genes)  # the pick as fine-tuned: its architecture from the genes, weights from the cache
        model.load_state_dict(torch.load(tuned_weights(cache, row.genes, row.seed), weights_only=True))
        result = cached(path.with_suffix(".json"), partial(int8_file, jcw, model, path, calibration))
        out.append({"method": "int8 of channel-only", "budget": row.budget, "seed": row.seed, "genes": row.genes,
                    **result})
    return [r | {"found": True, "regime": "int8",
                 "note": "top1_before: FP32 in PyTorch; top1_after: the INT8 file in LiteRT"} for r in out]


def int8_file(jcw: JCW, model: torch.nn.Module, path: Path, calibration: list[np.ndarray]) -> dict:
    """`model` exported INT8 to `path`, measured twice on arm-emu, scored in FP32 and as the INT8 file."""
    jcw.export(model, path, calibration=calibration)
    first, again = (m["latency_ms"] for m in jcw.measure_all([path, path], passes=1))
    return {"measured_ms": first, "remeasured_ms": again, "top1_before": jcw.evaluate(model).top1,
            "top1_after": tflite_top1(path, jcw.val_loader)}


def tflite_top1(path: Path, loader) -> float:
    """Top-1 of a .tflite file (float input and output, NHWC) on `loader`, one image per invoke, LiteRT on this
    machine under its default settings."""
    from ai_edge_litert.interpreter import Interpreter

    run = Interpreter(model_path=str(path), num_threads=1).get_signature_runner("serving_default")
    correct = total = 0
    for images, labels in loader:
        nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        logits = np.concatenate([run(input=nhwc[i:i + 1])["output"] for i in range(len(nhwc))])
        correct += int((logits.argmax(1) == labels.numpy()).sum())
        total += len(labels)
    return correct / total


def write_results(cache: Path, rows: pd.DataFrame, tau: pd.DataFrame, study: pd.DataFrame, base, base_ms: dict,
                  predictor_accuracy: dict, recipe: Recipe, command: str, seconds: float) -> None:
    """bench/results/jcw_cifar10.{csv,md,png} and jcw_cifar10_estimator.csv."""
    OUT.mkdir(parents=True, exist_ok=True)
    base_eval = json.loads((cache / "base_accuracy.json").read_text())
    columns = ["method", "budget", "seed", "measured_ms", "predicted_ms", "regime", "top1_before", "top1_after",
               "remeasured_ms", "search_predicted_ms", "genes", "note"]
    table = pd.concat([pd.DataFrame([{"method": "base", "budget": 1.0, "seed": recipe.seed,
                                      "measured_ms": base_ms["latency_ms"], "predicted_ms": base_ms["predicted_ms"],
                                      "regime": "dense", "top1_before": base_eval.get("top1"),
                                      "top1_after": base_eval.get("top1")}]),
                       rows.reindex(columns=columns)], ignore_index=True)
    table.to_csv(OUT / "jcw_cifar10.csv", index=False)
    tau.to_csv(OUT / "jcw_cifar10_estimator.csv", index=False)
    study.to_csv(OUT / "jcw_cifar10_estimator_candidates.csv", index=False)
    plot(table, OUT / "jcw_cifar10.png")
    (OUT / "jcw_cifar10.md").write_text(report(cache, table, tau, study, predictor_accuracy, recipe, command, seconds))


def plot(table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        rows = table[table.method == method].groupby("budget").agg({"measured_ms": "mean", "top1_after": "mean"})
        ax.plot(rows.measured_ms, 100 * rows.top1_after, marker="o", label=method)
    for method in ("channel-only", "joint"):
        low = table[table.method == method + LOW].groupby("budget").agg({"measured_ms": "mean", "top1_after": "mean"})
        if len(low):
            ax.plot(low.measured_ms, 100 * low.top1_after, marker="v", linestyle=":", label=method + LOW)
    int8 = table[table.method == "int8 of channel-only"].groupby("budget").agg({"measured_ms": "mean",
                                                                               "top1_after": "mean"})
    if len(int8):
        ax.plot(int8.measured_ms, 100 * int8.top1_after, marker="s", linestyle="--", label="channel-only + INT8")
    base = table[table.method == "base"].iloc[0]
    ax.scatter([base.measured_ms], [100 * base.top1_after], marker="*", s=120, color="black", label="base")
    for row in table[table.method == "int8 of base"].itertuples():
        ax.scatter([row.measured_ms], [100 * row.top1_after], marker="*", s=120, color="grey", label="base INT8")
    ax.set_xlabel(f"measured latency on {DEVICE} (instruction-clock ms)")
    ax.set_ylabel("top-1 on CIFAR-10 val after fine-tuning (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Per budget, every choice's best top-1 within it by measured latency, the best first."""
    base_ms = table[table.method == "base"].iloc[0].measured_ms
    done = table[table.method != "base"].dropna(subset=["measured_ms", "top1_after"])
    mean = done.groupby(["method", "budget"], as_index=False).agg(measured_ms=("measured_ms", "mean"),
                                                                  top1=("top1_after", "mean"))
    rows = []
    for budget in BUDGETS:
        within = mean[mean.measured_ms <= budget * base_ms]
        best = within.sort_values("top1", ascending=False).drop_duplicates("method")
        rows += [{"budget": budget, "budget_ms": budget * base_ms, "choice": r.method, "measured_ms": r.measured_ms,
                  "top1": r.top1} for r in best.itertuples()]
    return pd.DataFrame(rows)


def report(cache: Path, table: pd.DataFrame, tau: pd.DataFrame, study: pd.DataFrame, accuracy: dict,
           recipe: Recipe, command: str, seconds: float) -> str:
    digits = {"measured_ms": 3, "predicted_ms": 3, "remeasured_ms": 3, "search_predicted_ms": 3, "top1_before": 4,
              "top1_after": 4}
    shown = table.drop(columns=["genes"]).round(digits).astype(object).fillna("").to_markdown(index=False)
    phases = json.loads((cache / "phases.json").read_text()) if (cache / "phases.json").exists() else {}
    supernet = json.loads((cache / "supernet_time.json").read_text())["seconds"]
    times = pd.DataFrame([{"step": k, "minutes": v / 60} for k, v in phases.items()])
    return "\n".join([
        "# JCW on CIFAR-10, arm-emu (issue 19)", "",
        f"Command: `{command}`; wall time {seconds / 3600:.2f} h (this run; cached steps not repeated).", "",
        f"Recipe: {recipe}", "",
        f"Predictor: {accuracy}", "",
        "## Estimators (Kendall tau against top-1 after the short fine-tune)", "",
        tau.to_markdown(index=False, floatfmt=".3f"), "",
        f"Supernet training: {supernet / 60:.1f} min ({recipe.supernet_steps} sandwich steps). One estimate "
        f"(median over the study): proxy {study.proxy_estimate_s.median():.2f} s, supernet "
        f"{study.supernet_estimate_s.median():.2f} s.", "",
        "## Picks", "", shown, "",
        "## Which choice wins at each budget (measured on arm-emu, top-1 after fine-tuning, seeds averaged)", "",
        winners(table).to_markdown(index=False, floatfmt=".4g"), "",
        "INT8 rows run XNNPACK's dense QS8 kernels on arm-emu, timed by the same instruction clock; instruction "
        "counts are no phone's milliseconds, and INT8 against FP32 on a phone differs by more than the count "
        "(memory traffic, SIMD widths), so measure both on the phone before choosing.", "",
        "![top-1 vs measured latency](jcw_cifar10.png)", "",
        "## Where the time went (summed over resumed runs)", "",
        times.to_markdown(index=False, floatfmt=".1f") if len(times) else "(not recorded)", "",
    ])


if __name__ == "__main__":
    sys.exit(main())
