"""`jcw fit`, `jcw predict`, and `jcw profile --adaptive` (measure where the latency model needs it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

# scikit-learn, pandas and the models are imported inside the commands: `jcw` starts fast for every subcommand.
KINDS = ("physics", "flops-linear", "jcw-interp", "nnmeter-rf", "gbm-raw")  # predictor.models.MODELS' keys
STRATEGIES = ("adaptive", "random")  # predictor.adaptive.sample's strategies


def register(sub: argparse._SubParsersAction) -> None:
    """Add the fit and predict subcommands to the jcw parser."""
    p = sub.add_parser("fit", help="fit a latency model from measurement tables (CSV or Parquet)")
    p.add_argument("--data", action="append", required=True, help="measurement table (repeatable)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--kind", default="physics", choices=KINDS, help="regressor (default: physics)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of rows in (0, 1) held out to report accuracy "
                   "(default 0.2; 0: none)")
    p.set_defaults(run=run_fit)

    p = sub.add_parser("predict", help="predict latency_ms for every row of a table of kernels")
    p.add_argument("--model", required=True, help="model file written by `jcw fit`")
    p.add_argument("--configs", required=True, help="table of kernels (CSV or Parquet)")
    p.add_argument("--out", required=True, help="table to write: the input rows plus predicted_ms")
    p.set_defaults(run=run_predict)


def run_fit(args: argparse.Namespace) -> int:
    """Report held-out accuracy from a random split, then fit on every row and save."""
    from sklearn.model_selection import train_test_split

    from predictor import persist, table
    from predictor.latency import LatencyModel
    from profiler.errors import UserError

    if not 0 <= args.holdout < 1:
        raise UserError(f"--holdout {args.holdout:g}: the share of rows held out must be in (0, 1), e.g. 0.2 (0: none)")
    df = table.load(args.data)
    if args.holdout > 0 and len(df) >= 20:
        train, test = train_test_split(df, test_size=args.holdout, random_state=0)
        s = LatencyModel.fit(train, args.kind).evaluate(test)
        print(
            f"held-out {int(s['n'])} of {len(df)} rows ({args.kind}): within +-10% {s['within10_pct']:.1f}%, "
            f"within +-5% {s['within5_pct']:.1f}%, RMSPE {s['rmspe_pct']:.2f}%"
        )
    else:
        print(f"{len(df)} rows: too few (or --holdout 0) to hold any out; no accuracy reported")
    model = LatencyModel.fit(df, args.kind)
    persist.save(model, args.out)
    print(f"fitted on {len(df)} rows, contexts {model.contexts}; wrote {args.out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Write the configs table with a predicted_ms column, rows in input order."""
    from predictor import persist, table

    model = persist.load(args.model)
    raw = table.read_table(args.configs)
    out = raw.copy()
    out["predicted_ms"] = model.predict(table.normalise(raw, args.configs, need_latency=False))
    table.write_table(out, args.out)
    print(f"predicted {len(out)} rows; wrote {args.out}")
    return 0


def add_adaptive_args(parser: argparse.ArgumentParser) -> None:
    """Give `jcw profile` the adaptive flags; with --adaptive it runs run_adaptive, else the plain profile."""
    g = parser.add_argument_group("adaptive sampling (measure only where the latency model needs it)")
    g.add_argument("--adaptive", action="store_true", help="sample the plan's kernels adaptively (one device)")
    g.add_argument("--target", type=float, default=0.95, help="stop at this held-out share within +-10%% (0.95)")
    g.add_argument("--budget", type=int, default=200, help="most kernels to measure (default 200)")
    g.add_argument("--holdout", type=int, help="random kernels held out to score the model (default budget/5)")
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
    from profiler.devices import get_device
    from profiler.errors import UserError
    from profiler.plan import load_plan
    from profiler.profile import BATCH_SIZE
    from profiler.store import ResultsStore

    if len(set(args.device)) != 1:
        raise UserError("--adaptive samples one device at a time; pass a single --device")
    device = get_device(args.device[0], args.devices)
    out = Path(args.out)
    store = ResultsStore(out / f"{device.name}.csv")
    measure = adaptive.device_measure(device, store, args.batch_size or BATCH_SIZE)
    result = adaptive.sample(
        load_plan(args.plan, device.block), measure, args.target, args.budget, args.holdout, args.initial,
        args.step, args.strategy, seed=args.seed,
    )
    csv, png = adaptive.write_curve(result.curve, args.target, out / f"{device.name}.adaptive", device.name)
    persist.save(result.model, out / f"{device.name}.jcwm")
    print(result.curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"{device.name}: {result.reason}; {int(result.curve['measurements'].iloc[-1])} kernels used "
        f"({result.failed} failed); rows in {store.path}, curve in {csv} and {png}, model in {out / device.name}.jcwm"
    )
    return 1 if result.failed else 0
