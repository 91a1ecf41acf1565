"""`make demo`: the whole JCW story on the embedded default (MobileNetV2, MNIST, this machine as the device).

Every step caches its result in the run directory, so a second run is quick and a failed one resumes:
train -> profile the model's kernels -> fit the predictor -> fit the per-network overhead -> search (joint,
channel-only, weight-only, uniform) -> fine-tune the best candidate under each budget -> export -> measure
-> report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from jcw.report import busy_note, write_report
from predictor import LatencyModel, load, save
from profiler.devices import Device, get_device
from profiler.measure import measure_files
from profiler.profile import profile_device
from profiler.store import ResultsStore
from pruner.accuracy.estimate import mnist_proxy_data, proxy_estimator
from pruner.accuracy.hardware import resolve_device, set_threads
from pruner.accuracy.train import Evaluation, evaluate, recalibrate_bn, train
from pruner.data.mnist import load_mnist_sized
from pruner.deploy.export import export
from pruner.model.apply import apply_candidate
from pruner.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pruner.model.reference import build_model
from pruner.search.engine import SearchConfig
from pruner.search.fronts import run_fronts
from pruner.search.latency import CandidateLatency, device_latency, model_cluster, overhead_probes, profiling_plan
from pruner.search.space import SearchSpace


@dataclass(frozen=True)
class DemoConfig:
    device: str = "local-sparse"
    devices_file: str | None = None  # None: ./devices.yaml, else the user's config directory's
    torch_device: str = "auto"  # where torch trains and scores (pruner.accuracy.hardware.resolve_device)
    threads: int | None = 1  # torch threads: the demo's small convs run fastest on one (None: torch's own choice)
    width: float = 0.5
    input_size: int = 56  # MNIST scaled 2x: layers large enough that their latency is well above timer noise
    train_images: int = 16000
    train_epochs: int = 1
    plan_candidates: int = 12
    overhead_candidates: int = 6
    generations: int = 10
    population: int = 24
    val_size: int = 256
    bn_batches: int = 4
    budget_fractions: tuple[float, ...] = (0.45, 0.65, 0.85)  # of the way from the smallest to the full model
    finetune_images: int = 3000
    finetune_epochs: int = 1
    measure_passes: int = 3  # a network's latency: the median of its interleaved passes
    seed: int = 0


class Steps:
    """Numbered, timed step messages."""

    def __init__(self, total: int):
        self.total, self.index, self.start = total, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {message} (t = {time.perf_counter() - self.start:.0f} s)", flush=True)


def _train_model(path: Path, cfg: DemoConfig, data, device: torch.device) -> Checkpoint:
    if path.exists():
        return load_checkpoint(path)
    kwargs = {"num_classes": 10, "in_channels": 3, "width_mult": cfg.width}  # 3: XNNPACK can run it sparse
    torch.manual_seed(cfg.seed)
    model = build_model("mobilenet_v2", **kwargs)
    train(model, data["train"].loader(64, shuffle=True, seed=cfg.seed), cfg.train_epochs, desc="train MobileNetV2",
          device=device)
    shape = (1, 3, cfg.input_size, cfg.input_size)
    return load_checkpoint(save_checkpoint(path, Checkpoint(model.cpu().eval(), "mobilenet_v2", kwargs, shape)))


def _export_and_measure(device: Device, models: dict[str, torch.nn.Module], shape, predictor, out: Path,
                        passes: int) -> dict:
    """Export each model for the device and time all of them, interleaved, in `passes` batches."""
    chooser = device.runtime.storage_chooser(predictor.predict)
    files, layers = [], {}
    out.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        exported = export(model.cpu().eval(), shape, device.runtime, chooser)
        path = out / f"{name}{exported.suffix}"
        path.write_bytes(exported.model)
        files.append(path)
        layers[name] = exported.layers
    measured = measure_files(device, files, passes=passes)
    return {name: {"file": str(f), "bytes": f.stat().st_size, "layers": layers[name], **m}
            for (name, f), m in zip(zip(models, files, strict=True), measured, strict=True)}


@dataclass
class Prepared:
    """What the search needs, from the cached first steps of the demo."""

    device: Device
    torch_device: torch.device
    data: dict
    base: Checkpoint
    space: SearchSpace
    predictor: LatencyModel
    latency: CandidateLatency
    held_out: dict


def prepare(out: Path, cfg: DemoConfig, step: Steps) -> Prepared:
    """Steps 1-4: the trained model, its kernels profiled on the device, the predictor and network overhead."""
    device = get_device(cfg.device, cfg.devices_file)
    set_threads(cfg.threads)
    torch_device = resolve_device(cfg.torch_device)
    data = load_mnist_sized(cfg.input_size, cfg.train_images, channels=3)  # MNIST's grey replicated

    step(f"training MobileNetV2 x{cfg.width} on {cfg.train_images} MNIST images at {cfg.input_size}x{cfg.input_size}"
         " (cached in model.pt)")
    base = _train_model(out / "model.pt", cfg, data, torch_device)
    space = base.space(device.runtime)
    cluster = model_cluster(base.model, base.input_shape, device.runtime)

    step(f"profiling the model's kernels on '{device.name}' (resumes {out / 'results'})")
    store = ResultsStore(out / "results" / f"{device.name}.csv")
    profile_device(device, profiling_plan(space, device.runtime, cfg.plan_candidates, cfg.seed, cluster), store)

    step("fitting the latency predictor (20% of the kernels held out to report its accuracy)")
    predictor_path, held_out_path = out / "predictor.zip", out / "predictor_accuracy.json"
    if not held_out_path.exists():
        held_out_path.write_text(json.dumps(_held_out_accuracy(store.table, cfg.seed)))
    held_out = json.loads(held_out_path.read_text())

    step("fitting the per-network overhead from end-to-end measurements")
    if predictor_path.exists():
        predictor = load(predictor_path)
    else:
        predictor = LatencyModel.fit(store.table)
        rng = np.random.default_rng(cfg.seed + 1)
        genes = overhead_probes(space, cluster, cfg.overhead_candidates, rng)  # both regimes on XNNPACK
        probes = {"full": base.model, **{f"probe{i}": apply_candidate(base.model, space, x, device.runtime.block)
                                        for i, x in enumerate(genes)}}
        runs = _export_and_measure(device, probes, base.input_shape, predictor, out / "probes", cfg.measure_passes)
        ok = [r for r in runs.values() if "latency_ms" in r]
        predictor.fit_overhead([[layer.spec for layer in r["layers"]] for r in ok], [r["latency_ms"] for r in ok])
        save(predictor, predictor_path)
    latency = device_latency(space, base.model, base.input_shape, device.runtime, predictor)
    return Prepared(device, torch_device, data, base, space, predictor, latency, held_out)


def run_demo(out: str | Path = "runs/demo", cfg: DemoConfig = DemoConfig()) -> Path:
    """Run (or resume) the demo in `out`; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    step = Steps(10)
    p = prepare(out, cfg, step)
    device, data, base, space, predictor, latency = p.device, p.data, p.base, p.space, p.predictor, p.latency
    torch_device = p.torch_device
    full_path = out / "model.accuracy.json"
    if not full_path.exists():
        full_path.write_text(json.dumps(asdict(evaluate(base.model, data["test"].loader(1000), torch_device))))
    full_eval = Evaluation(**json.loads(full_path.read_text()))

    step(f"searching: joint, channel-only, weight-only ({cfg.generations} generations of {cfg.population}) "
         "and uniform widths")
    estimator = proxy_estimator(base.model, space, mnist_proxy_data(data, cfg.val_size, cfg.bn_batches),
                                device.runtime.block, device=torch_device)
    smallest, largest = latency(np.vstack([space.lower, space.upper]))
    budgets = [round(smallest + f * (largest - smallest), 4) for f in cfg.budget_fractions]
    config = SearchConfig(n_gen=cfg.generations, pop_size=cfg.population, seed=cfg.seed)
    fronts = run_fronts(space, latency, estimator, out / "search", config, budgets, repair=latency.repair,
                        weight_stage=device.runtime.weight_stage)

    step("fine-tuning the best candidate under each budget, masks fixed")
    tuned, seen = {}, set()
    for row in fronts.budgets.itertuples(index=False):
        if not row.found or row.genes in seen:  # a tight front can give two budgets one candidate
            continue
        seen.add(row.genes)
        name = f"under_{row.budget_ms:g}ms"
        path = out / "finetuned" / f"{name}.pt"
        genes = np.array([int(g) for g in row.genes.split(",")])
        if path.exists() and load_checkpoint(path).genes != tuple(genes):  # another search picked another one
            for stale in path.parent.glob(f"{name}.*"):
                stale.unlink()
        if not path.exists():
            pruned = apply_candidate(base.model, space, genes, device.runtime.block, norm="l2")
            torch.manual_seed(cfg.seed)
            train(pruned, data["train"].loader(64, shuffle=True, seed=cfg.seed + 2, limit=cfg.finetune_images),
                  cfg.finetune_epochs, lr=1e-3, desc=f"finetune {name}", device=torch_device)
            save_checkpoint(path, Checkpoint(pruned.cpu(), base.arch, base.kwargs, base.input_shape, tuple(genes),
                                             device.runtime.block))
        tuned[name] = (row, load_checkpoint(path))

    step("evaluating before and after fine-tuning on the MNIST test split")
    results = {}
    for name, (row, ckpt) in tuned.items():
        genes = np.array(ckpt.genes)
        cached = out / "finetuned" / f"{name}.accuracy.json"
        if not cached.exists():
            pruned = apply_candidate(base.model, space, genes, device.runtime.block)
            recalibrate_bn(pruned, data["train"].loader(64, shuffle=True, seed=cfg.seed), cfg.bn_batches,
                           torch_device)
            accuracy = {"before": evaluate(pruned, data["test"].loader(1000), torch_device),
                        "after": evaluate(ckpt.model, data["test"].loader(1000), torch_device)}
            cached.write_text(json.dumps({k: asdict(v) for k, v in accuracy.items()}))
        accuracy = {k: Evaluation(**v) for k, v in json.loads(cached.read_text()).items()}
        results[name] = {"row": row, "ckpt": ckpt, **accuracy, "table": space.table(genes)}

    step(f"exporting for {device.runtime.name} and measuring end to end on '{device.name}'")
    runs = _export_and_measure(device, {"full": base.model, **{n: r["ckpt"].model for n, r in results.items()}},
                               base.input_shape, predictor, out / "exported", cfg.measure_passes)
    for run in runs.values():
        run["predicted_ms"] = predictor.predict_network([layer.spec for layer in run["layers"]])

    step("writing the report")
    if note := busy_note(runs):
        print(note.replace("**", ""), flush=True)
    report = write_report(out, device, cfg, full_eval, p.held_out, predictor.overhead, fronts, results, runs)
    step(f"done: {report}")
    return report


def _held_out_accuracy(table, seed: int) -> dict:
    """The predictor's accuracy on 20% of this device's kernels held out of its fit."""
    test = table.sample(frac=0.2, random_state=seed)
    return LatencyModel.fit(table.drop(test.index)).evaluate(test) | {"rows": len(table)}
