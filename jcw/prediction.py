"""`jcw fit`, `jcw predict`, `jcw calibrate` and `jcw profile --adaptive` (measure where the latency model needs it)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from jcw.options import add_devices_arg

# scikit-learn, pandas and the models are imported inside the commands: `jcw` starts fast for every subcommand.
KINDS = ("physics", "flops-linear", "jcw-interp", "nnmeter-rf", "gbm-raw")  # predictor.models.MODELS' keys
STRATEGIES = ("adaptive", "random")  # predictor.adaptive.sample's strategies


def register(sub: argparse._SubParsersAction) -> None:
    """Add the fit and predict subcommands to the jcw parser."""
    p = sub.add_parser("fit", help="fit a latency model from measurement tables (CSV or Parquet)")
    p.add_argument("--table", action="append", required=True, help="measurement table of kernels (repeatable)")
    p.add_argument("--out", required=True, help="latency model file to write (the --predictor of other commands)")
    p.add_argument("--kind", default="physics", choices=KINDS, help="regressor")
    p.add_argument("--holdout-share", type=float, default=0.2, help="share of rows in [0, 1) held out to report "
                   "accuracy (0: none)")
    p.set_defaults(run=run_fit)

    p = sub.add_parser("predict", help="predict the latency of a model file (TFLite, ONNX) layer by layer, or of "
                       "every row of a table of kernels")
    p.add_argument("--predictor", required=True, help="latency model file written by `jcw fit`")
    p.add_argument("file", nargs="?", help="model file to predict: .tflite or .onnx (or use --model / --table)")
    p.add_argument("--table", help="table of kernels (CSV or Parquet) to add predicted_ms to (needs --out)")
    p.add_argument("--out", help="file to write: with a model, per-layer predictions (.csv or .json); with --table, "
                                 "the input rows plus predicted_ms")
    p.add_argument("--measure", metavar="DEVICE", help="also time FILE on this device, beside its prediction")
    add_devices_arg(p)
    p.add_argument("--passes", type=int, default=3, help="with --measure: interleaved passes, median taken")
    add_device_check_arg(p)
    p.set_defaults(run=run_predict)

    p = sub.add_parser("calibrate", help="fit a latency model's per-network overhead from end-to-end measurements of "
                                         "a few exported networks")
    p.add_argument("--predictor", required=True, help="latency model file written by `jcw fit`")
    p.add_argument("--device", required=True, help="a device in devices.yaml, the one the model was fitted on")
    add_devices_arg(p)
    p.add_argument("--passes", type=int, default=3, help="interleaved passes over all files, median taken")
    p.add_argument("--out", help="latency model file to write (default: overwrite --predictor)")
    add_device_check_arg(p)
    p.add_argument("files", nargs="+", help="exported networks (.tflite or .onnx, as the device runs)")
    p.set_defaults(run=run_calibrate)


def add_device_check_arg(parser: argparse.ArgumentParser) -> None:
    """The flag that lets a command use a latency model fitted on another device than the one it is given."""
    parser.add_argument("--allow-other-device", action="store_true",
                        help="use the latency model even if it was fitted on another device, runtime or block")


def run_fit(args: argparse.Namespace) -> int:
    """Report held-out accuracy from a random split and warn where the table or the fit is weak, then fit on every
    row and save, the accuracy and the table's noise recorded in the model file (predictor.quality)."""
    import pandas as pd

    from predictor import persist, table
    from predictor.latency import LatencyModel
    from predictor.quality import advice, assess, describe_held_out, held_out_accuracy
    from profiler.errors import UserError
    from profiler.noise import read_noise

    if not 0 <= args.holdout_share < 1:
        raise UserError(f"--holdout-share {args.holdout_share:g}: the share of rows held out must be in [0, 1), "
                        "e.g. 0.2 (0: none)")
    raw = [table.read_table(p) for p in args.table]
    df = pd.concat([table.normalise(r, str(p)) for r, p in zip(raw, args.table, strict=True)], ignore_index=True)
    held_out = held_out_accuracy(df, args.kind, args.holdout_share)
    print(f"{describe_held_out(held_out)} ({args.kind})")
    model = LatencyModel.fit(df, args.kind)
    noises = [n for n in map(read_noise, args.table) if n is not None]
    noise = min(noises, key=lambda n: n["within10_pct"]) if noises else None  # the least repeatable device's
    model.quality = assess(pd.concat(raw, ignore_index=True), held_out, noise, ", ".join(args.table))
    persist.save(model, args.out)
    print(f"fitted on {len(df)} rows of device {model.fitted_on or f'contexts {model.contexts}'}; wrote {args.out}")
    warn(advice(model.quality))
    return 0


def warn(found: list) -> None:
    """Print each warning (profiler.advice.Advice) on its own line, to stderr."""
    for advice in found:
        print(advice, file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    """Predict a model file (or checkpoint) layer by layer, optionally measured beside; or a table of kernels."""
    from predictor import persist
    from profiler.errors import UserError

    checkpoint = getattr(args, "model", None)  # `--model` is the application's (jcw.commands.register)
    given = [flag for flag, value in (("FILE", args.file), ("--model", checkpoint), ("--table", args.table))
             if value]
    if len(given) != 1:
        raise UserError(f"pass one of FILE (.tflite or .onnx), --model MODEL or --table TABLE, not "
                        f"{' and '.join(given) if given else 'none'}")
    if args.table:
        return _predict_table(args)
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise UserError(f"--out {args.out}: predictions of a model are written as .csv or .json")
    if args.measure and not args.file:
        raise UserError("--measure times a model file; export the checkpoint first (jcw export) and pass the file")
    from profiler.devices import get_device  # not before: the --table path needs no device (nor jsonschema)

    device = get_device(args.measure, args.devices) if args.measure else None
    model = persist.load(args.predictor, device, args.allow_other_device)
    runtime = _runs_as(model, device, args.predictor)
    if checkpoint:  # exported as `jcw export --predictor` writes it, then read like any file
        layers = runtime.read_layers(args.export_model(args, runtime, model), f"{checkpoint} (exported)")
    else:
        layers = runtime.read_file(args.file)
    rows = [{"layer": name, **spec.to_row(), "predicted_ms": float(ms)}
            for (name, spec), ms in zip(layers.items(), model.predict(list(layers.values())), strict=True)]
    overhead = model.overhead(len(rows))
    total = sum(r["predicted_ms"] for r in rows) + overhead
    target = model.fitted_on or f"{runtime}, {runtime.block}"
    print(f"{'layer':<32} {'op':<6} {'input':>9} {'cin':>5} {'cout':>5} {'k':>2} {'s':>2} {'density':>8} "
          f"{'layout':<6} {'ms':>9}")
    for r in rows:
        print(f"{r['layer']:<32} {r['op']:<6} {r['h']:>4}x{r['w']:<4} {r['cin']:>5} {r['cout']:>5} {r['k']:>2} "
              f"{r['stride']:>2} {r['density']:>8.3f} {r['layout']:<6} {r['predicted_ms']:>9.4f}")
    print(f"{'per-network overhead':<84} {overhead:>9.4f}")
    print(f"predicted total on {target}: {total:.4f} ms ({len(rows)} layers)")
    result = {"model": checkpoint or args.file, "predictor": args.predictor, "runtime": runtime.name,
              "block": runtime.block,
              "predicted_ms": total, "overhead_ms": overhead, "layers": rows}
    if args.measure:
        from profiler.measure import measure_files

        (measured,) = measure_files(device, [args.file], passes=args.passes)
        if "error" in measured:
            raise UserError(f"{args.file}: measuring on '{device.name}' failed: {measured['error'].splitlines()[0]}")
        result["measured_ms"] = measured["latency_ms"]
        print(f"measured on '{device.name}': {measured['latency_ms']:.4f} ms; predicted {total:.4f} ms "
              f"({total / measured['latency_ms'] - 1:+.1%})")
    if args.out:
        _write_prediction(result, Path(args.out))
        print(f"wrote {args.out}")
    return 0


def _runs_as(model, device, path: str):
    """The runtime to read a model in (profiler.runtimes): the measuring device's, else the predictor's device's."""
    from profiler.errors import UserError
    from profiler.runtimes import get_runtime

    if device is not None:
        return device.runtime
    if model.fitted_on is None:
        raise UserError(f"predictor {path} does not record its device (its table names none, or several); "
                        "pass --measure DEVICE to read the model as that device runs it")
    return get_runtime(model.fitted_on.runtime, model.fitted_on.block)


def _write_prediction(result: dict, out: Path) -> None:
    """Per-layer predictions as CSV (one row per layer), or everything as JSON (with the total and overhead)."""
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(result, indent=1))
    else:
        pd.DataFrame(result["layers"]).to_csv(out, index=False)


def _predict_table(args: argparse.Namespace) -> int:
    """Write the --table of kernels with a predicted_ms column, rows in input order."""
    from predictor import persist, table
    from profiler.errors import UserError

    if not args.out:
        raise UserError("--table needs --out TABLE, the table to write")
    model = persist.load(args.predictor)
    out = table.read_table(args.table)
    out["predicted_ms"] = model.predict(out, source=args.table)  # normalised (and checked) once, by predict
    table.write_table(out, args.out)
    print(f"predicted {len(out)} rows; wrote {args.out}")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    """Measure exported networks end to end, fit the per-network overhead to them and save the model; refused on too
    few networks or a fit that makes some network's latency negative."""
    from predictor import persist
    from predictor.latency import runs_sparse
    from predictor.network import check_positive
    from predictor.quality import overhead_advice, overhead_record
    from profiler.devices import get_device
    from profiler.errors import UserError
    from profiler.measure import measure_files

    device = get_device(args.device, args.devices)
    model = persist.load(args.predictor, device, args.allow_other_device)
    networks = [list(device.runtime.read_file(f).values()) for f in args.files]
    _check_networks(args.files, networks)  # before any time is spent
    results = measure_files(device, args.files, passes=args.passes)
    for r in results:
        if "error" in r:
            print(f"{r['file']}: failed, left out: {r['error'].splitlines()[0]}")
    ok = [i for i, r in enumerate(results) if "error" not in r]
    if not ok:
        raise UserError(f"no file could be measured on '{device.name}'; nothing to calibrate")
    files, nets = [args.files[i] for i in ok], [networks[i] for i in ok]
    measured = [results[i]["latency_ms"] for i in ok]
    for note in _check_networks(files, nets):
        print(f"note: {note}")
    before = [model.predict_network(n) for n in nets]
    overhead = model.fit_overhead(nets, measured)
    after = [model.predict_network(n) for n in nets]
    for regime in (False, True):
        fitted = model.sparse_overhead if regime else model.overhead
        group = [i for i, n in enumerate(nets) if runs_sparse(n) == regime]
        check_positive([files[i] for i in group], [after[i] for i in group], [measured[i] for i in group], fitted)
    gaps = model.overhead_held_out(nets, measured)
    print(f"{'file':<40} {'measured ms':>12} {'before':>10} {'after':>10} {'left out':>9}")
    for file, m, was, now, gap in zip(files, measured, before, after, gaps, strict=True):
        left_out = f"{gap:>+9.1%}" if math.isfinite(gap) else f"{'-':>9}"  # alone in its regime: nothing to fit
        print(f"{file:<40} {m:>12.4f} {was:>10.4f} {now:>10.4f} {left_out}")
    model.quality = {**(model.quality or {}), "overhead": overhead_record(model, gaps)}
    out = args.out or args.predictor
    persist.save(model, out)
    print(f"overhead {overhead.per_network_ms:.4f} ms per network + {overhead.per_kernel_ms:.4f} ms per layer, "
          f"from {len(ok)} networks ('left out': each network's gap when the overhead is fitted on the others); "
          f"wrote {out}")
    warn(overhead_advice(model.quality["overhead"]))
    return 0


def _check_networks(files: list[str], networks: list[list]) -> list[str]:
    """predictor.network.check_calibration for each regime the networks run in (XNNPACK fits the sparse ones an
    overhead of their own): refuses too few; returns notes on networks all of one size."""
    from predictor.latency import runs_sparse
    from predictor.network import check_calibration

    sparse = [runs_sparse(n) for n in networks]
    notes = []
    for regime in sorted(set(sparse)):
        group = [i for i, s in enumerate(sparse) if s == regime]
        name = ("sparse" if regime else "dense") if any(sparse) else ""
        notes.append(check_calibration([files[i] for i in group], [len(networks[i]) for i in group], name))
    return [n for n in notes if n]


def add_adaptive_args(parser: argparse.ArgumentParser) -> None:
    """Give `jcw profile` the adaptive flags; with --adaptive it runs run_adaptive, else the plain profile."""
    g = parser.add_argument_group("adaptive sampling (measure only where the latency model needs it)")
    g.add_argument("--adaptive", action="store_true", help="sample the plan's kernels adaptively (one device)")
    g.add_argument("--target", type=float, default=0.95, help="stop at this held-out share within +-10%%")
    g.add_argument("--budget", type=int, default=200, help="most kernels to measure")
    g.add_argument("--holdout-kernels", type=int, metavar="N",
                   help="random kernels held out to score the model (default budget/5)")
    g.add_argument("--initial", type=int, help="random kernels measured first (default budget/5)")
    g.add_argument("--step", type=int, help="kernels measured per round (default budget/20)")
    g.add_argument("--strategy", default="adaptive", choices=STRATEGIES, help="how rounds pick kernels")
    g.add_argument("--seed", type=int, default=0, help="random seed of the held-out, initial and bootstrap draws")
    parser.set_defaults(run=partial(_profile_or_adaptive, parser.get_default("run")))


def _profile_or_adaptive(plain: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run adaptive sampling with --adaptive, the plain profile otherwise."""
    return run_adaptive(args) if args.adaptive else plain(args)


def run_adaptive(args: argparse.Namespace) -> int:
    """Sample the plan on one device; write its rows, the curve (CSV, PNG) and the model next to its table."""
    from predictor import adaptive, persist
    from predictor.quality import advice, assess, describe_held_out, held_out_accuracy
    from profiler.devices import get_device
    from profiler.errors import UserError
    from profiler.kernel import KernelSpec
    from profiler.noise import describe, noise_path
    from profiler.plan import load_plan
    from profiler.profile import BATCH_SIZE, remeasure
    from profiler.store import ResultsStore

    if len(set(args.device)) != 1:
        raise UserError("--adaptive samples one device at a time; pass a single --device")
    device = get_device(args.device[0], args.devices)
    out = Path(args.out)
    store = ResultsStore(out / f"{device.name}.csv")
    measure = adaptive.device_measure(device, store, args.batch_size or BATCH_SIZE)
    result = adaptive.sample(
        load_plan(args.plan, device.runtime.block, args.max_kernels), measure, args.target, args.budget,
        args.holdout_kernels, args.initial, args.step, args.strategy, seed=args.seed,
    )
    csv, png = adaptive.write_curve(result.curve, args.target, out / f"{device.name}.adaptive", device.name)
    noise = remeasure(device, [KernelSpec.from_row(row) for row in result.data.to_dict("records")], store,
                      args.noise_kernels, args.seed)
    held_out = held_out_accuracy(result.data, result.model.kind)
    result.model.quality = assess(store.table, held_out, noise, str(store.path))
    persist.save(result.model, out / f"{device.name}.jcwm")
    print(result.curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"{device.name}: {result.reason}; {int(result.curve['measurements'].iloc[-1])} kernels used "
        f"({result.failed} failed); rows in {store.path}, curve in {csv} and {png}, model in {out / device.name}.jcwm"
    )
    if noise is not None:
        print(f"{device.name}: device noise: {describe(noise)}; wrote {noise_path(store.path)}")
    print(f"{describe_held_out(held_out)} (a random 20% of every kernel measured, held out of a second fit)")
    warn(advice(result.model.quality))
    return 1 if result.failed else 0
