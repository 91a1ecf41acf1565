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
from predictor import LatencyModel, save
from predictor.quality import held_out_accuracy
from profiler.devices import get_device
from profiler.profile import profile_device
from profiler.store import ResultsStore
from pruner import JCW
from pruner.accuracy.hardware import resolve_device, set_threads
from pruner.accuracy.train import Evaluation, recalibrate_bn, train
from pruner.data.mnist import load_mnist_sized
from pruner.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pruner.model.reference import build_model
from pruner.search.latency import overhead_probes


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


def _export_and_measure(jcw: JCW, models: dict[str, torch.nn.Module], out: Path, passes: int) -> dict:
    """Export each model for the device (JCW.exported) and time all of them, interleaved, in `passes` batches."""
    files, layers = [], {}
    out.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        exported = jcw.exported(model)
        path = out / f"{name}{exported.suffix}"
        path.write_bytes(exported.model)
        files.append(path)
        layers[name] = exported.layers
    measured = jcw.measure_all(files, passes=passes)
    return {name: {"file": str(f), "bytes": f.stat().st_size, "layers": layers[name], **m}
            for (name, f), m in zip(zip(models, files, strict=True), measured, strict=True)}


@dataclass
class Prepared:
    """What the search needs, from the cached first steps of the demo: the facade over the trained model with its
    device, predictor and data."""

    jcw: JCW
    data: dict
    base: Checkpoint
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
    unpriced = JCW.from_checkpoint(base, device, torch_device=str(torch_device))

    step(f"profiling the model's kernels on '{device.name}' (resumes {out / 'results'})")
    store = ResultsStore(out / "results" / f"{device.name}.csv")
    profile_device(device, unpriced.plan(cfg.plan_candidates, cfg.seed), store)

    step("fitting the latency predictor (20% of the kernels held out to report its accuracy)")
    predictor_path, held_out_path = out / "predictor.zip", out / "predictor_accuracy.json"
    if not held_out_path.exists():
        held_out_path.write_text(json.dumps(held_out_accuracy(store.table, seed=cfg.seed)))
    held_out = json.loads(held_out_path.read_text())

    step("fitting the per-network overhead from end-to-end measurements")
    if not predictor_path.exists():
        predictor = LatencyModel.fit(store.table)
        rng = np.random.default_rng(cfg.seed + 1)
        genes = overhead_probes(unpriced.space, unpriced.cluster, cfg.overhead_candidates, rng)  # both regimes
        probes = {"full": base.model, **{f"probe{i}": unpriced.apply(x) for i, x in enumerate(genes)}}
        fitting = JCW.from_checkpoint(base, device, predictor=predictor, torch_device=str(torch_device))
        runs = _export_and_measure(fitting, probes, out / "probes", cfg.measure_passes)
        ok = [r for r in runs.values() if "latency_ms" in r]
        predictor.fit_overhead([[layer.spec for layer in r["layers"]] for r in ok], [r["latency_ms"] for r in ok])
        save(predictor, predictor_path)
    loaders = (data["train"].loader(64, shuffle=True, seed=cfg.seed), data["val"].loader(500))
    jcw = JCW.from_checkpoint(base, device, predictor=predictor_path, data=loaders, torch_device=str(torch_device))
    return Prepared(jcw, data, base, held_out)


def run_demo(out: str | Path = "runs/demo", cfg: DemoConfig = DemoConfig()) -> Path:
    """Run (or resume) the demo in `out`; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    step = Steps(10)
    p = prepare(out, cfg, step)
    jcw, data, base = p.jcw, p.data, p.base
    device, space, latency = jcw.device, jcw.space, jcw.latency
    test = data["test"].loader(1000)
    full_path = out / "model.accuracy.json"
    if not full_path.exists():
        full_path.write_text(json.dumps(asdict(jcw.evaluate(base.model, test))))
    full_eval = Evaluation(**json.loads(full_path.read_text()))

    step(f"searching: joint, channel-only, weight-only ({cfg.generations} generations of {cfg.population}) "
         "and uniform widths")
    smallest, largest = latency(np.vstack([space.lower, space.upper]))
    budgets = [round(smallest + f * (largest - smallest), 4) for f in cfg.budget_fractions]
    fronts = jcw.search(budgets, out / "search", cfg.generations, cfg.population, val_images=cfg.val_size,
                        bn_batches=cfg.bn_batches, seed=cfg.seed)

    step("fine-tuning the best candidate under each budget, masks fixed")
    tuned, seen = {}, set()
    for row in fronts.budgets.itertuples(index=False):
        if not row.found or row.genes in seen:  # a tight front can give two budgets one candidate
            continue
        seen.add(row.genes)
        name = f"under_{row.budget_ms:g}ms"
        path = out / "finetuned" / f"{name}.pt"
        genes = jcw.genes(row.genes)
        if path.exists() and load_checkpoint(path).genes != tuple(genes):  # another search picked another one
            for stale in path.parent.glob(f"{name}.*"):
                stale.unlink()
        if not path.exists():
            torch.manual_seed(cfg.seed)
            loader = data["train"].loader(64, shuffle=True, seed=cfg.seed + 2, limit=cfg.finetune_images)
            pruned = jcw.finetune(genes, cfg.finetune_epochs, lr=1e-3, loader=loader)
            save_checkpoint(path, Checkpoint(pruned.cpu(), base.arch, base.kwargs, base.input_shape, tuple(genes),
                                             jcw.runtime.block))
        tuned[name] = (row, load_checkpoint(path))

    step("evaluating before and after fine-tuning on the MNIST test split")
    results = {}
    for name, (row, ckpt) in tuned.items():
        genes = np.array(ckpt.genes)
        cached = out / "finetuned" / f"{name}.accuracy.json"
        if not cached.exists():
            pruned = jcw.apply(genes)
            recalibrate_bn(pruned, data["train"].loader(64, shuffle=True, seed=cfg.seed), cfg.bn_batches,
                           jcw.torch_device)
            accuracy = {"before": jcw.evaluate(pruned, test), "after": jcw.evaluate(ckpt.model, test)}
            cached.write_text(json.dumps({k: asdict(v) for k, v in accuracy.items()}))
        accuracy = {k: Evaluation(**v) for k, v in json.loads(cached.read_text()).items()}
        results[name] = {"row": row, "ckpt": ckpt, **accuracy, "table": space.table(genes)}

    step(f"exporting for {device.runtime.name} and measuring end to end on '{device.name}'")
    runs = _export_and_measure(jcw, {"full": base.model, **{n: r["ckpt"].model for n, r in results.items()}},
                               out / "exported", cfg.measure_passes)

    step("writing the report")
    if note := busy_note(runs):
        print(note.replace("**", ""), flush=True)
    report = write_report(out, device, cfg, full_eval, p.held_out, jcw.predictor.overhead, fronts, results, runs)
    step(f"done: {report}")
    return report
