"""`jcw train | plan | export | measure | finetune | search | demo`, and `jcw predict --model CKPT`: the pruner's
commands."""

from __future__ import annotations

import argparse
import json
import math
import reprlib
from collections.abc import Callable
from pathlib import Path

from predictor.cli import add_device_check_arg, layers_of, read_layers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a reference model on MNIST and save a checkpoint")
    p.add_argument("--arch", default="mobilenet_v2", choices=["mobilenet_v2", "resnet18", "mobilenet_v1"])
    p.add_argument("--width", type=_positive_float, default=0.5, help="width multiplier (default 0.5)")
    p.add_argument("--epochs", type=_at_least(1), default=1)
    p.add_argument("--limit", type=_at_least(1), help="train on the first N training images only")
    p.add_argument("--input-size", type=_at_least(1), default=28, help="MNIST scaled to this many pixels a side")
    p.add_argument("--in-channels", type=int, choices=[1, 3], default=1,
                   help="input channels (MNIST's grey replicated; 3 lets XNNPACK run the model sparse on a phone)")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.set_defaults(run=run_train)

    p = sub.add_parser("plan", help="write the profiling plan a model's search needs (its layers' kernels)")
    p.add_argument("--model", required=True, help="unpruned checkpoint")
    _device_args(p)
    p.add_argument("--candidates", type=int, default=24, help="random candidates whose kernels to include")
    p.add_argument("--out", required=True, help="plan file to write (YAML, for jcw profile --plan)")
    p.set_defaults(run=run_plan)

    p = sub.add_parser("export", help="export a (pruned) checkpoint for a device: TFLite or ONNX")
    p.add_argument("--model", required=True, help="checkpoint (from jcw train or jcw finetune)")
    p.add_argument("--candidate", help="genes to apply to an unpruned checkpoint, comma-separated")
    _device_args(p)
    p.add_argument("--predictor", help="latency model (jcw fit): keep a sparse layer dense where dense is faster")
    add_device_check_arg(p)
    p.add_argument("--out", required=True, help="model file to write (.tflite or .onnx, by the device)")
    p.add_argument("--require-sparse", action="store_true",
                   help="XNNPACK devices: fail if XNNPACK will run the exported model dense")
    p.set_defaults(run=run_export)

    p = sub.add_parser("measure", help="time exported networks end to end on a device")
    _device_args(p)
    p.add_argument("--predictor", help="latency model (jcw fit) to print predicted beside measured latency")
    add_device_check_arg(p)
    p.add_argument("--passes", type=int, default=3,
                   help="interleaved passes over all files; a file's latency is the median of its passes (default 3)")
    p.add_argument("files", nargs="+", help="model files (.tflite or .onnx, as the device runs)")
    p.set_defaults(run=run_measure)

    p = sub.add_parser("finetune", help="fine-tune a pruned candidate with its weight masks fixed")
    p.add_argument("--model", required=True, help="unpruned checkpoint")
    p.add_argument("--candidate", required=True, help="genes, comma-separated (the genes column of pareto.csv)")
    _device_args(p)
    p.add_argument("--epochs", type=_at_least(1), default=1)
    p.add_argument("--lr", type=float, help="learning rate (default: 2e-3 for adam, 0.05 for sgd)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--patience", type=int, help="early stopping: epochs without a better validation loss")
    p.add_argument("--limit", type=_at_least(1), help="train on the first N training images only")
    p.add_argument("--out", required=True, help="pruned checkpoint to write")
    p.set_defaults(run=run_finetune)


    p = sub.add_parser("search", help="search the accuracy-latency front: joint, channel-only, weight-only, uniform")
    p.add_argument("--model", required=True, help="trained (unpruned) checkpoint")
    _device_args(p)
    p.add_argument("--predictor", required=True, help="latency model of the device (jcw fit)")
    add_device_check_arg(p)
    p.add_argument("--data", default="mnist", choices=["mnist"], help="dataset of the accuracy estimate")
    p.add_argument("--out", required=True, help="run directory (resumes an interrupted search)")
    p.add_argument("--budgets", type=_budgets, default=[], help="latency budgets in ms, comma-separated, e.g. 2,4,8")
    p.add_argument("--generations", type=_at_least(1), default=32)
    p.add_argument("--population", type=_at_least(2), default=64)
    p.add_argument("--survival", default="jcw", choices=["jcw", "nsga2"])
    p.add_argument("--weight-stage", type=float, default=None,
                   help="joint: share of the evaluations for adding sparse layers to the front of a widths-only "
                        "search (default: pruner.fronts.WEIGHT_STAGE); 0 runs one NSGA-II over widths and "
                        "densities, as JCW does")
    p.add_argument("--estimator", default="proxy", choices=["proxy", "supernet"])
    p.add_argument("--val-size", type=_at_least(1), default=1000, help="held-out validation images per estimate")
    p.add_argument("--supernet-steps", type=int, default=300, help="supernet training steps before the search")
    p.add_argument("--retrain-steps", type=int, default=0,
                   help="supernet: sandwich steps on the current population after each generation (JCW)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_search)

    p = sub.add_parser("demo", help="the whole pipeline on MobileNetV2 + MNIST with this machine as the device")
    p.add_argument("--out", default="runs/demo", help="run directory (cached steps; default runs/demo)")
    p.add_argument("--device", default="local-sparse", help="a device in devices.yaml (default local-sparse)")
    p.add_argument("--devices", default="devices.yaml", help="device inventory (default: ./devices.yaml)")
    p.set_defaults(run=run_demo)

    # `jcw predict --model CKPT` (predictor.cli) exports the checkpoint here: the predictor knows nothing of torch
    p = sub.choices["predict"]
    p.add_argument("--model", help="PyTorch checkpoint (jcw train or finetune), predicted as `jcw export "
                                   "--predictor` would write it for the predictor's device")
    p.set_defaults(export_checkpoint=export_checkpoint)


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="a device in devices.yaml")
    p.add_argument("--devices", default="devices.yaml", help="device inventory (default: ./devices.yaml)")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for an integer flag of at least `minimum`: a bad value is a usage error naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{reprlib.repr(text)} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


def _positive_float(text: str) -> float:
    """An argparse type for a positive finite number (inf and nan would only fail deep inside a command)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{reprlib.repr(text)} is not a positive number")
    return value


def _budgets(text: str) -> list[float]:
    """Latency budgets in ms, comma-separated, each checked before the search loads anything."""
    try:
        return [_positive_float(item) for item in text.replace(" ", "").split(",") if item]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (budgets are milliseconds, comma-separated, e.g. 2,4.5)") from None


def run_search(args: argparse.Namespace) -> int:
    import torch

    from predictor.persist import load
    from profiler.devices import get_device
    from pruner.checkpoint import load_checkpoint
    from pruner.data import load_mnist_sized
    from pruner.estimate import mnist_proxy_data, proxy_estimator
    from pruner.fronts import run_fronts, weight_stage_for
    from pruner.latency import device_latency
    from pruner.search import SearchConfig
    from pruner.supernet import SupernetEstimator, build_supernet

    torch.set_num_threads(1)
    device = get_device(args.device, args.devices)
    ckpt = load_checkpoint(args.model)
    check_exportable(ckpt.model, ckpt.input_shape, device)
    space = ckpt.space(device.flavour)
    predictor = load(args.predictor, device, args.allow_other_device)
    latency = device_latency(space, ckpt.model, ckpt.input_shape, device.flavour, device.block, predictor)
    data = load_mnist_sized(ckpt.input_shape[-1], train_limit=10000, channels=ckpt.input_shape[1])
    proxy = mnist_proxy_data(data, args.val_size)
    retrain = None
    if args.estimator == "proxy":
        estimator = proxy_estimator(ckpt.model, space, proxy, device.block)
    else:
        estimator = SupernetEstimator(build_supernet(ckpt.model, space, device.block), proxy,
                                      data["train"].loader(64, shuffle=True, seed=args.seed))
        estimator.train(args.supernet_steps)
        if args.retrain_steps:
            def retrain(X):
                return estimator.retrain(X, args.retrain_steps)
    config = SearchConfig(n_gen=args.generations, pop_size=args.population, survival=args.survival, seed=args.seed)
    fronts = run_fronts(space, latency, estimator, args.out, config, args.budgets, on_generation=retrain,
                        repair=latency.densify,
                        weight_stage=weight_stage_for(device.flavour) if args.weight_stage is None
                        else args.weight_stage)
    for method, value in fronts.hypervolume.items():
        print(f"{method:>13}: front of {len(fronts.fronts[method]):>3}, hypervolume {value:.4f}")
    for row in fronts.budgets.itertuples(index=False):
        print(f"budget {row.budget_ms:g} ms: " + (f"{row.latency_ms:.3f} ms, estimated top-1 {row.top1:.2%}, "
                                                  f"genes {row.genes}" if row.found else row.note))
    print(f"wrote {args.out}/pareto.csv, pareto_layers.csv, fronts.png, budgets.csv, summary.json")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from jcw.demo import DemoConfig
    from jcw.demo import run_demo as demo

    report = demo(args.out, DemoConfig(device=args.device, devices_file=args.devices))
    print(f"report: {report}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import torch

    from pruner.checkpoint import Checkpoint, save_checkpoint
    from pruner.data import load_mnist_sized
    from pruner.models import build_model
    from pruner.train import evaluate, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_mnist_sized(args.input_size, args.limit, channels=args.in_channels)
    kwargs = {"num_classes": 10, "in_channels": args.in_channels, "width_mult": args.width}
    model = build_model(args.arch, **kwargs)
    train(model, data["train"].loader(64, shuffle=True), args.epochs, desc=f"train {args.arch}")
    ev = evaluate(model, data["val"].loader(500))
    shape = (1, args.in_channels, args.input_size, args.input_size)
    save_checkpoint(args.out, Checkpoint(model, args.arch, kwargs, shape))
    print(f"{args.arch} x{args.width}: validation top-1 {ev.top1:.2%}, loss {ev.loss:.3f}; wrote {args.out}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    import yaml

    from profiler.devices import get_device
    from pruner.checkpoint import load_checkpoint
    from pruner.latency import profiling_plan, sparse_cluster

    device = get_device(args.device, args.devices)
    ckpt = load_checkpoint(args.model)
    check_exportable(ckpt.model, ckpt.input_shape, device)
    cluster = sparse_cluster(ckpt.model, ckpt.input_shape, device.block) if device.flavour == "xnnpack" else None
    specs = profiling_plan(ckpt.space(device.flavour), device.block, args.candidates, cluster=cluster)
    entries = [{"op": s.op, "hw": s.h, "cin": s.cin, "cout": s.cout, "k": s.k, "stride": s.stride,
                "density": s.density, "activation": s.activation, "block": s.block, "layout": s.layout}
               for s in specs]
    Path(args.out).write_text(f"# kernels of {ckpt.arch} x{ckpt.kwargs} for device {device.name}\n"
                              + yaml.safe_dump({"kernels": entries}, sort_keys=False, default_flow_style=None))
    print(f"wrote {args.out}: {len(specs)} kernels")
    return 0


def check_exportable(model, input_shape: tuple[int, ...], device) -> None:
    """Dry-run the export of an unpruned model (torch nn.Module) for `device` (profiler.devices.Device), so that a
    model the exporter cannot lower is refused before any search time is spent; the exporter's error names the
    module, its type and the operator."""
    from pruner.export import ExportError, export

    try:
        export(model, input_shape, device.flavour, device.block)
    except ExportError as err:
        raise ExportError(f"the model cannot be exported for '{device.name}' ({device.flavour}), so nothing is "
                          f"searched: {err}") from None


def export_checkpoint(path: str, flavour: str, block: str, predictor) -> tuple[bytes, str]:
    """A checkpoint exported for a device of `flavour` as `jcw export --predictor` writes it: the model file's bytes
    and suffix (`jcw predict --model`)."""
    from pruner.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    exported = _export(ckpt.model, ckpt, flavour, block, predictor)
    return exported.model, exported.suffix


def _export(model, ckpt, flavour: str, block: str, predictor):
    """`model` (the checkpoint's, or a candidate of it) exported for `flavour`; with a `predictor` (a LatencyModel),
    on the built-in kernels, a sparse layer is stored dense where dense is predicted faster."""
    from pruner.export import export
    from pruner.latency import prefer_dense

    chooser = prefer_dense(predictor.predict) if predictor and flavour == "builtin" else None
    return export(model.eval(), ckpt.input_shape, flavour, ckpt.block or block, chooser)


def run_export(args: argparse.Namespace) -> int:
    from predictor import persist
    from profiler.devices import get_device
    from profiler.errors import UserError
    from pruner.apply import apply_candidate
    from pruner.checkpoint import load_checkpoint, parse_genes

    device = get_device(args.device, args.devices)
    ckpt = load_checkpoint(args.model)
    model = ckpt.model
    if args.candidate:
        if ckpt.genes is not None:
            raise UserError(f"{args.model} is already pruned; --candidate applies to an unpruned checkpoint")
        model = apply_candidate(model, ckpt.space(device.flavour), parse_genes(args.candidate), block=device.block)
    predictor = persist.load(args.predictor, device, args.allow_other_device) if args.predictor else None
    exported = _export(model, ckpt, device.flavour, device.block, predictor)
    out = Path(args.out)
    if out.suffix != exported.suffix:
        raise UserError(f"{out}: device '{device.name}' runs {exported.suffix} models; use that suffix")
    if args.require_sparse and not (exported.xnnpack or {}).get("sparse"):
        why = exported.xnnpack["reason"] if exported.xnnpack else f"its runtime ({device.flavour}) is not XNNPACK"
        raise UserError(f"--require-sparse: XNNPACK will run {out.name} dense on '{device.name}': {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(exported.model)
    predicted = None
    if predictor:  # priced as `jcw predict` prices the file: read back as the device runs it
        specs = layers_of(exported.model, exported.suffix, device.flavour, device.block, str(out))
        predicted = predictor.predict_network(list(specs.values()))
    sidecar = {
        "device": device.name, "flavour": exported.flavour, "input_shape": list(ckpt.input_shape),
        "predicted_ms": predicted,
        "xnnpack": exported.xnnpack,
        "layers": [{"name": layer.name, "storage": layer.storage, "pruned_density": layer.pruned_density,
                    **layer.spec.to_row()} for layer in exported.layers],
    }
    Path(f"{out}.json").write_text(json.dumps(sidecar, indent=1))
    kept_dense = [layer.name for layer in exported.layers if layer.pruned_density < 1 and layer.storage == "dense"]
    sparse = sum(layer.storage == "sparse" for layer in exported.layers)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {exported.flavour}): {sparse} sparse layers"
          + (f"; kept dense where dense is faster: {', '.join(kept_dense)}" if kept_dense else ""))
    if exported.xnnpack is not None:
        mode = "sparse" if exported.xnnpack["sparse"] else "dense"
        print(f"XNNPACK will run it {mode}: {exported.xnnpack['reason']}")
    if sidecar["predicted_ms"] is not None:
        print(f"predicted latency on {device.name}: {sidecar['predicted_ms']:.3f} ms")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from predictor import persist
    from profiler.devices import get_device
    from profiler.measure import measure_files

    device = get_device(args.device, args.devices)
    predictor = persist.load(args.predictor, device, args.allow_other_device) if args.predictor else None
    # each file priced as `jcw predict` prices it, read back as the device runs it (before any time is spent)
    predictions = [predictor.predict_network(list(read_layers(f, device.flavour, device.block).values()))
                   if predictor else None for f in args.files]
    status = 0
    print(f"{'file':<40} {'measured ms':>12} {'predicted ms':>13} {'error':>7}")
    for result, predicted in zip(measure_files(device, args.files, passes=args.passes), predictions, strict=True):
        if "error" in result:
            print(f"{result['file']:<40} failed: {result['error'].splitlines()[0]}")
            status = 1
            continue
        gap = f"{predicted / result['latency_ms'] - 1:+.1%}" if predicted else ""
        shown = f"{predicted:.3f}" if predicted else "-"
        print(f"{result['file']:<40} {result['latency_ms']:>12.3f} {shown:>13} {gap:>7}")
    return status


def run_finetune(args: argparse.Namespace) -> int:
    import torch

    from profiler.devices import get_device
    from profiler.errors import UserError
    from pruner.apply import apply_candidate
    from pruner.checkpoint import Checkpoint, load_checkpoint, parse_genes, save_checkpoint
    from pruner.data import load_mnist_sized
    from pruner.train import evaluate, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    device = get_device(args.device, args.devices)
    ckpt = load_checkpoint(args.model)
    if ckpt.genes is not None:
        raise UserError(f"{args.model} is already pruned; fine-tune from the unpruned checkpoint")
    genes = parse_genes(args.candidate)
    data = load_mnist_sized(ckpt.input_shape[-1], args.limit, channels=ckpt.input_shape[1])
    pruned = apply_candidate(ckpt.model, ckpt.space(device.flavour), genes, block=device.block, norm="l2")
    val = data["val"].loader(500)
    before = evaluate(pruned, val)
    train(pruned, data["train"].loader(64, shuffle=True), args.epochs, lr=args.lr,
          optimizer=args.optimizer, schedule=args.schedule, val_loader=val, patience=args.patience, desc="finetune")
    after = evaluate(pruned, val)
    save_checkpoint(args.out, Checkpoint(pruned, ckpt.arch, ckpt.kwargs, ckpt.input_shape, tuple(genes), device.block))
    print(f"validation top-1 {before.top1:.2%} -> {after.top1:.2%} (loss {before.loss:.3f} -> {after.loss:.3f});"
          f" wrote {args.out}")
    return 0
