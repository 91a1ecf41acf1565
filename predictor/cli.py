"""`jcw fit` and `jcw predict`: fit a latency model from measurement tables, and apply it to a table."""

from __future__ import annotations

import argparse

from sklearn.model_selection import train_test_split

from predictor import persist, table
from predictor.latency import LatencyModel
from predictor.models import MODELS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the fit and predict subcommands to the jcw parser."""
    p = sub.add_parser("fit", help="fit a latency model from measurement tables (CSV or Parquet)")
    p.add_argument("--data", action="append", required=True, help="measurement table (repeatable)")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--kind", default="physics", choices=list(MODELS), help="regressor (default: physics)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of rows held out to report accuracy")
    p.set_defaults(run=run_fit)

    p = sub.add_parser("predict", help="predict latency_ms for every row of a table of kernels")
    p.add_argument("--model", required=True, help="model file written by `jcw fit`")
    p.add_argument("--configs", required=True, help="table of kernels (CSV or Parquet)")
    p.add_argument("--out", required=True, help="table to write: the input rows plus predicted_ms")
    p.add_argument("--refit", action="store_true", help="refit a model saved under other library versions")
    p.set_defaults(run=run_predict)


def run_fit(args: argparse.Namespace) -> int:
    """Report held-out accuracy from a random split, then fit on every row and save."""
    df = table.load(args.data)
    if 0 < args.holdout < 1 and len(df) >= 20:
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
    model = persist.load(args.model, refit=args.refit)
    raw = table.read_table(args.configs)
    out = raw.copy()
    out["predicted_ms"] = model.predict(table.normalise(raw, args.configs, need_latency=False))
    table.write_table(out, args.out)
    print(f"predicted {len(out)} rows; wrote {args.out}")
    return 0
