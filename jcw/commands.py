"""`jcw train | plan | search | finetune | export | measure | demo`, and `jcw predict --model`: the commands that read
a PyTorch model. Each parses its flags and calls the one facade, pruner.JCW, for the work.

Every artefact records where it came from: a search's run directory (`run.json` and `summary.json`), a fine-tuned
checkpoint's sidecar (`TUNED.pt.json`) and an exported model's (`FILE.tflite.json`) hold the model's provenance,
its data, its search space's settings, the device and the latency model, so each step works on any model and a
resumed search is refused when any of them changed.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from jcw.options import (
    add_channel_multiple_arg,
    add_data_arg,
    add_device_args,
    add_devices_arg,
    add_estimate_args,
    add_keep_arg,
    add_model_args,
    add_preprocess_args,
    add_torch_args,
    at_least,
    budgets,
    load_data_arg,
    load_model_arg,
    positive_float,
    torch_device_arg,
)
from jcw.prediction import add_device_check_arg

SEARCH_TRAIN_IMAGES = 10_000  # training images the search reads (BatchNorm calibration, supernet training)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model commands to the jcw parser, and --model to `jcw predict` (exported by the facade)."""
    for add in (_add_train, _add_plan, _add_search, _add_finetune, _add_export, _add_measure, _add_demo):
        add(sub)
    add_model_args(sub.choices["predict"], required=False)
    sub.choices["predict"].set_defaults(export_model=export_model)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a built-in reference model and save a checkpoint")
    p.add_argument("--arch", default="mobilenet_v2",
                   choices=["mobilenet_v2", "mobilenet_v2_cifar", "resnet18", "mobilenet_v1"], help="architecture")
    p.add_argument("--width", type=positive_float, default=0.5, help="width multiplier")
    add_data_arg(p)
    p.add_argument("--epochs", type=at_least(1), default=1, help="passes over the training images")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="optimizer")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: 2e-3 for adam, 0.05 for sgd)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    p.add_argument("--batch-size", type=at_least(1), default=64, help="training images per step")
    add_preprocess_args(p)
    p.add_argument("--limit", type=at_least(1), help="train on N training images only (MNIST: the first N; an "
                                                     "image folder: a seeded random subset)")
    p.add_argument("--input-size", type=at_least(1), default=28, help="images scaled to this many pixels a side")
    p.add_argument("--in-channels", type=int, choices=[1, 3], default=1,
                   help="input channels (MNIST's grey replicated; 3 lets XNNPACK run the model sparse on a phone)")
    add_torch_args(p)
    p.add_argument("--out", required=True, help="checkpoint file to write; OUT.state keeps the progress of an "
                                                "interrupted run, which the same command resumes")
    p.set_defaults(run=run_train)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="write the profiling plan a model's search needs (its layers' kernels)")
    add_model_args(p)
    add_device_args(p)
    add_keep_arg(p)
    add_channel_multiple_arg(p)
    p.add_argument("--candidates", type=at_least(1), default=24, help="random candidates whose kernels to include")
    p.add_argument("--out", required=True, help="plan file to write (YAML, for jcw profile --plan)")
    p.set_defaults(run=run_plan)


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the accuracy-latency front: joint, channel-only, weight-only, uniform")
    add_model_args(p)
    add_device_args(p)
    p.add_argument("--predictor", required=True, help="latency model file of the device (jcw fit)")
    add_device_check_arg(p)
    add_data_arg(p)
    add_preprocess_args(p)
    add_keep_arg(p)
    add_channel_multiple_arg(p)
    add_torch_args(p)
    p.add_argument("--workers", type=at_least(1), default=1, metavar="N",
                   help="processes scoring the accuracy estimates (the same seed gives the same fronts with any "
                        "number)")
    p.add_argument("--out", required=True, help="run directory to write (re-running resumes an interrupted search)")
    p.add_argument("--budgets", type=budgets, default=[], help="latency budgets in ms, comma-separated, e.g. 2,4,8")
    p.add_argument("--generations", type=at_least(1), default=32, help="NSGA-II generations per method")
    p.add_argument("--population", type=at_least(2), default=64,
                   help="candidates per generation (a search scores methods x generations x population)")
    p.add_argument("--survival", default="jcw", choices=["jcw", "nsga2"],
                   help="jcw: JCW's anchors spread over the latency range; nsga2: rank and crowding")
    p.add_argument("--weight-stage", type=float, default=None,
                   help="joint: share of the evaluations for adding sparse layers to the front of a widths-only "
                        "search (default: pruner.search.fronts.WEIGHT_STAGE); 0 runs one NSGA-II over widths and "
                        "densities, as JCW does")
    p.add_argument("--estimator", default="proxy", choices=["proxy", "supernet"],
                   help="proxy: the trained weights pruned to each candidate; supernet: JCW's weight-sharing "
                        "supernet, trained first")
    add_estimate_args(p)
    p.add_argument("--supernet-steps", type=int, default=300, help="supernet training steps before the search")
    p.add_argument("--retrain-steps", type=int, default=0,
                   help="supernet: sandwich steps on the current population after each generation (JCW)")
    p.set_defaults(run=run_search)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pruned candidate with its weight masks fixed")
    add_model_args(p)
    p.add_argument("--candidate", required=True, help="genes, comma-separated (the genes column of pareto.csv)")
    add_device_args(p)
    add_data_arg(p)
    add_preprocess_args(p)
    add_keep_arg(p)
    add_channel_multiple_arg(p)
    add_torch_args(p)
    add_estimate_args(p)
    p.add_argument("--epochs", type=at_least(1), default=1, help="passes over the training images")
    p.add_argument("--lr", type=float, help="learning rate (default: 2e-3 for adam, 0.05 for sgd)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="optimizer")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"], help="learning-rate schedule")
    p.add_argument("--patience", type=int, help="early stopping: epochs without a better validation loss")
    p.add_argument("--limit", type=at_least(1), help="train on N training images only (MNIST: the first N; an "
                                                     "image folder: a seeded random subset)")
    p.add_argument("--out", required=True, help="pruned checkpoint file to write, and OUT.json beside it")
    p.set_defaults(run=run_finetune)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a (pruned) model for a device: TFLite or ONNX")
    add_model_args(p)
    p.add_argument("--candidate", help="genes to apply to an unpruned model, comma-separated")
    add_device_args(p)
    add_keep_arg(p)
    add_channel_multiple_arg(p)
    p.add_argument("--predictor", help="latency model file (jcw fit): keep a sparse layer dense where dense is faster")
    add_device_check_arg(p)
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="what the file computes in (default: the device's runtime's, fp32 but on an -int8 or -fp16 "
                        "device): int8 quantizes it (int8 weights and activations, calibrated on --data), fp16 marks "
                        "it for XNNPACK's FP16 inference; both store every layer dense")
    p.add_argument("--data", help="int8: the dataset whose first training images calibrate the activation ranges "
                                  "(mnist, imagefolder:DIR or FILE.py:factory)")
    p.add_argument("--out", required=True, help="model file to write (.tflite or .onnx, by the device), and "
                                                "OUT.json beside it")
    p.add_argument("--require-sparse", action="store_true",
                   help="XNNPACK devices: fail if XNNPACK will run the exported model dense")
    p.set_defaults(run=run_export)


def _add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="time exported networks end to end on a device")
    add_device_args(p)
    p.add_argument("--predictor", help="latency model file (jcw fit) to print predicted beside measured latency")
    add_device_check_arg(p)
    p.add_argument("--passes", type=int, default=3,
                   help="interleaved passes over all files; a file's latency is the median of its passes")
    p.add_argument("--out", help="results file to write: .csv (one row per file) or .json")
    p.add_argument("files", nargs="+", help="model files (.tflite or .onnx, as the device runs)")
    p.set_defaults(run=run_measure)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on MobileNetV2 + MNIST with this machine as the device")
    p.add_argument("--out", default="runs/demo", help="run directory (cached steps)")
    p.add_argument("--device", default="local-sparse", help="a device in devices.yaml")
    add_devices_arg(p)
    add_torch_args(p)
    p.set_defaults(run=run_demo)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from pruner.accuracy.hardware import is_main_process
    from pruner.accuracy.train import evaluate, train
    from pruner.model.checkpoint import Checkpoint, save_checkpoint
    from pruner.model.reference import build_model

    device = torch_device_arg(args)
    torch.manual_seed(0)
    shape = (1, args.in_channels, args.input_size, args.input_size)
    data = load_data_arg(args, shape, batch_size=args.batch_size, train_limit=args.limit)
    kwargs = {"num_classes": data.num_classes, "in_channels": args.in_channels, "width_mult": args.width}
    model = build_model(args.arch, **kwargs)
    state = Path(f"{args.out}.state")
    history = train(model, data.train, args.epochs, lr=args.lr, optimizer=args.optimizer,
                    weight_decay=args.weight_decay, val_loader=data.val, desc=f"train {args.arch}", device=device,
                    resume=state)
    ev = evaluate(model, data.val, device)
    if is_main_process():
        for record in history:
            print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}, "
                  f"validation top-1 {record['val_top1']:.2%}")
        save_checkpoint(args.out, Checkpoint(model.cpu(), args.arch, kwargs, shape))
        state.unlink(missing_ok=True)
        print(f"{args.arch} x{args.width}: validation top-1 {ev.top1:.2%}, loss {ev.loss:.3f}; wrote {args.out}")
    return 0


def facade(args: argparse.Namespace, device, ckpt, data=None, torch_device="cpu", predictor: bool = True):
    """The pruner.JCW of a command's device (profiler.devices.Device), checkpoint (--model), --predictor (when the
    command has one and `predictor`), --keep, --channel-multiple, --precision and torch device."""
    from pruner import JCW

    path = getattr(args, "predictor", None) if predictor else None
    return JCW.from_checkpoint(ckpt, device, predictor=path, data=data, keep=getattr(args, "keep", ()),
                               torch_device=str(torch_device),
                               allow_other_device=getattr(args, "allow_other_device", False),
                               multiple=getattr(args, "channel_multiple", None),
                               precision=getattr(args, "precision", None))


def unpruned(ckpt, why: str = "prune the unpruned model instead"):
    """`ckpt` (a pruner.model.checkpoint.Checkpoint), refused if it is already pruned."""
    from profiler.errors import UserError

    if ckpt.genes is not None:
        raise UserError(f"{ckpt.path} is already pruned; {why}")
    return ckpt


def run_plan(args: argparse.Namespace) -> int:
    import yaml

    from profiler.devices import get_device

    device = get_device(args.device, args.devices)
    jcw = facade(args, device, load_model_arg(args), predictor=False)
    specs = jcw.plan(args.candidates)
    entries = [{"op": s.op, "hw": s.h, "cin": s.cin, "cout": s.cout, "k": s.k, "stride": s.stride,
                "groups": s.groups, "density": s.density, "activation": s.activation, "block": s.block,
                "layout": s.layout}
               for s in specs]
    origin = json.dumps(jcw.origin["model"])
    Path(args.out).write_text(f"# kernels of {origin} for device {jcw.device.name}\n"
                              + yaml.safe_dump({"kernels": entries}, sort_keys=False, default_flow_style=None))
    print(f"wrote {args.out}: {len(specs)} kernels")
    return 0


def run_search(args: argparse.Namespace) -> int:
    import dataclasses

    from jcw.prediction import warn
    from jcw.run_report import write_run_report
    from predictor.quality import advice
    from profiler.devices import get_device

    torch_device = torch_device_arg(args)
    device = get_device(args.device, args.devices)
    ckpt = unpruned(load_model_arg(args))
    data = load_data_arg(args, ckpt.input_shape, seed=args.seed, train_limit=SEARCH_TRAIN_IMAGES)
    jcw = facade(args, device, ckpt, data, torch_device)
    warn(advice(jcw.predictor.quality, dataclasses.asdict(jcw.predictor.overhead)))  # before any time is spent
    fronts = jcw.search(args.budgets, args.out, args.generations, args.population, val_images=args.val_size,
                        bn_batches=args.bn_batches, estimator=args.estimator, supernet_steps=args.supernet_steps,
                        retrain_steps=args.retrain_steps, survival=args.survival, weight_stage=args.weight_stage,
                        workers=args.workers, threads=args.threads, seed=args.seed)
    for method, value in fronts.hypervolume.items():
        print(f"{method:>13}: front of {len(fronts.fronts[method]):>3}, hypervolume {value:.4g}")
    for row in fronts.budgets.itertuples(index=False):
        print(f"budget {row.budget_ms:g} ms: " + (f"{row.latency_ms:.3f} ms, estimated top-1 {row.top1:.2%}, "
                                                  f"genes {row.genes}" if row.found else row.note))
    report, found = write_run_report(Path(args.out))
    print(f"wrote {args.out}/pareto.csv, pareto_layers.csv, fronts.png, budgets.csv, summary.json, run.json and "
          f"{report.name} ({len(found)} warning{'s' if len(found) != 1 else ''}: see its Warnings)")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a candidate; its accuracy before is the search's estimate of it (the same data, seed, calibration
    and images), after on those images and on the whole validation split."""
    import torch

    from profiler.devices import get_device
    from pruner.accuracy.hardware import is_main_process
    from pruner.model.checkpoint import Checkpoint, parse_genes, save_checkpoint
    from pruner.search.space import space_settings

    torch_device = torch_device_arg(args)
    torch.manual_seed(0)
    device = get_device(args.device, args.devices)
    ckpt = unpruned(load_model_arg(args))
    genes = parse_genes(args.candidate)
    searched = load_data_arg(args, ckpt.input_shape, seed=args.seed, train_limit=SEARCH_TRAIN_IMAGES)  # as searched
    jcw = facade(args, device, ckpt, searched, torch_device, predictor=False)
    genes = jcw.genes(genes)
    before = jcw.estimate(genes, args.val_size, args.bn_batches, args.seed)
    held_out = jcw.proxy_data(args.val_size, args.bn_batches, args.seed).held_out
    training = load_data_arg(args, ckpt.input_shape, seed=args.seed, train_limit=args.limit)
    pruned = jcw.apply(genes, norm="l2")
    jcw.finetune(pruned, args.epochs, lr=args.lr, optimizer=args.optimizer, schedule=args.schedule,
                 patience=args.patience, loader=training.train)
    after, after_all = jcw.evaluate(pruned, held_out), jcw.evaluate(pruned)
    if not is_main_process():  # under torchrun every process holds the same weights; one writes them
        return 0
    out = save_checkpoint(args.out, Checkpoint(pruned.cpu(), ckpt.arch, ckpt.kwargs, ckpt.input_shape,
                                               tuple(int(g) for g in genes), jcw.runtime.block, ckpt.source,
                                               space_settings(jcw.space)))
    images, every = sum(len(y) for _, y in held_out), len(getattr(jcw.val_loader, "dataset", ()))
    how = (f"the search's estimate: l1 block masks, BatchNorm recalibrated on {args.bn_batches} training batches "
           f"(seed {args.seed}), the first {images} validation images")
    record = {**jcw.provenance(), "predictor": None, "genes": [int(g) for g in genes],
              "validation": {"before": {"loss": before.loss, "top1": before.top1, "images": images, "as": how},
                             "after": {"loss": after.loss, "top1": after.top1, "images": images},
                             "after_all": {"loss": after_all.loss, "top1": after_all.top1, "images": every or None}}}
    Path(f"{out}.json").write_text(json.dumps(record, indent=1))
    print(f"before fine-tuning: top-1 {before.top1:.2%}, loss {before.loss:.3f} ({how})")
    split = f"all {every} validation images" if every else "the whole validation split"
    print(f"after fine-tuning: top-1 {after.top1:.2%}, loss {after.loss:.3f} on those {images} images; "
          f"{after_all.top1:.2%}, loss {after_all.loss:.3f} on {split}")
    print(f"wrote {out} and {out}.json")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from profiler.devices import get_device
    from profiler.errors import UserError
    from pruner.data.loading import load_data

    device = get_device(args.device, args.devices)
    ckpt = load_model_arg(args)
    if args.candidate:
        unpruned(ckpt, "--candidate applies to an unpruned model")
    elif args.channel_multiple:
        raise UserError("--channel-multiple applies with --candidate (a pruned model keeps the channels it has)")
    data = load_data(args.data, ckpt.input_shape, augment="none") if args.data else None
    jcw = facade(args, device, ckpt, data)
    model_or_genes = args.candidate or jcw.model
    out = jcw.export(model_or_genes, args.out, args.require_sparse, genes=ckpt.genes)
    record = json.loads(Path(f"{out}.json").read_text())
    kept_dense = [layer["name"] for layer in record["layers"]
                  if layer["pruned_density"] < 1 and layer["storage"] == "dense"]
    sparse = sum(layer["storage"] == "sparse" for layer in record["layers"])
    calibrated = f", calibrated on {record['calibration_images']} images" if record["calibration_images"] else ""
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {record['runtime']}, {record['precision']}"
          f"{calibrated}): {sparse} sparse layers"
          + (f"; pruned layers stored dense (zeros kept): {', '.join(kept_dense)}" if kept_dense else ""))
    if record["xnnpack"] is not None:
        mode = "sparse" if record["xnnpack"]["sparse"] else "dense"
        print(f"XNNPACK will run it {mode}: {record['xnnpack']['reason']}")
    if record["predicted_ms"] is not None:
        print(f"predicted latency on {jcw.device.name}: {record['predicted_ms']:.3f} ms")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    """Time files end to end, predicted beside measured; exit status 1 when some file could not be measured."""
    from predictor import persist
    from profiler.devices import get_device
    from profiler.errors import UserError
    from profiler.measure import measure_files

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"--out {out}: measurements are written as .csv or .json")
    device = get_device(args.device, args.devices)
    predictor = persist.load(args.predictor, device, args.allow_other_device) if args.predictor else None
    # each file priced as `jcw predict` prices it, read back as the device runs it (before any time is spent)
    predictions = [predictor.predict_network(list(device.runtime.read_file(f).values()))
                   if predictor else None for f in args.files]
    rows = []
    print(f"{'file':<40} {'measured ms':>12} {'predicted ms':>13} {'gap':>7}")
    for result, predicted in zip(measure_files(device, args.files, passes=args.passes), predictions, strict=True):
        measured = result.get("latency_ms")
        rows.append({"file": result["file"], "latency_ms": measured, "predicted_ms": predicted,
                     "gap": predicted / measured - 1 if predicted and measured else None,
                     "failure": (result["error"].splitlines() or ["failed"])[0] if "error" in result else None})
        if "error" in result:
            print(f"{result['file']:<40} failed: {rows[-1]['failure']}")
            continue
        record_measurement(Path(result["file"]), device.name, result)
        gap = f"{rows[-1]['gap']:+.1%}" if predicted else ""
        shown = f"{predicted:.3f}" if predicted else "-"
        print(f"{result['file']:<40} {measured:>12.3f} {shown:>13} {gap:>7}")
    if out is not None:
        about = {"device": device.name, "predictor": None if predictor is None else {
            "path": str(Path(args.predictor).resolve()),
            "fitted_on": None if predictor.fitted_on is None else vars(predictor.fitted_on)},
            "columns": {"gap": "predicted_ms / latency_ms - 1", "failure": "why the file could not be measured"}}
        write_measurements(out, rows, about)
        print(f"wrote {out} (gap: predicted / measured - 1; failure: why a file could not be measured)")
    return 1 if any(row["failure"] for row in rows) else 0


def record_measurement(path: Path, device: str, result: dict) -> None:
    """Add the end-to-end measurement to the file's export sidecar (FILE.json, from jcw export), if it has one, so a
    run's report finds it: {"device", "latency_ms", "passes", "timestamp"} under "measured"."""
    from datetime import datetime, timezone

    sidecar = Path(f"{path}.json")
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or "layers" not in record:  # not an export sidecar
        return
    record["measured"] = {"device": device, "latency_ms": result["latency_ms"], "passes": result.get("passes"),
                          "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    sidecar.write_text(json.dumps(record, indent=1))


def write_measurements(out: Path, rows: list[dict], about: dict) -> None:
    """Measured (and predicted) latencies: CSV, one row per file; or JSON, the rows with the device and predictor."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({**about, "results": rows}, indent=1))
        return
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_demo(args: argparse.Namespace) -> int:
    from jcw.demo import DemoConfig
    from jcw.demo import run_demo as demo

    config = DemoConfig(device=args.device, devices_file=args.devices, torch_device=args.torch_device,
                        threads=args.threads or DemoConfig.threads)
    print(f"report: {demo(args.out, config)}")
    return 0


def export_model(args: argparse.Namespace, runtime, predictor) -> bytes:
    """The --model of `jcw predict` exported for `runtime` (the measuring device's, or the predictor's) as
    `jcw export --predictor` writes it, in the block a pruned checkpoint's masks were made in: the file's bytes."""
    import dataclasses

    from pruner.deploy.export import export
    from pruner.model.checkpoint import load_model

    ckpt = load_model(args.model, args.weights, args.input_shape)
    runtime = dataclasses.replace(runtime, block=ckpt.block or runtime.block)
    return export(ckpt.model.eval(), ckpt.input_shape, runtime, runtime.storage_chooser(predictor.predict)).model
