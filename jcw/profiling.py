"""`jcw profile`: measure a plan of kernels on one or more devices."""

from __future__ import annotations

import argparse

from jcw.options import add_devices_arg
from profiler.noise import REMEASURE
from profiler.plan import MAX_KERNELS, SECONDS_PER_KERNEL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure kernels on a device and append them to its table")
    p.add_argument("--device", action="append", required=True, help="a device in devices.yaml (repeatable)")
    add_devices_arg(p)
    p.add_argument("--plan", help="YAML plan of kernels (default: the built-in default plan)")
    p.add_argument("--out", default="results", help="directory of the results tables, one DEVICE.csv per device")
    p.add_argument("--batch-size", type=int, help="kernels per round trip to the device (default 96)")
    p.add_argument("--max-kernels", type=int, default=MAX_KERNELS, metavar="N",
                   help=f"refuse plans of more kernels (~{SECONDS_PER_KERNEL} s each)")
    p.add_argument("--noise-kernels", type=int, default=REMEASURE, metavar="N",
                   help="kernels measured again at the end, to report how well the device repeats its measurements "
                        "(DEVICE.noise.json beside the table; 0: none)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from profiler.profile import profile_cli

    return profile_cli(args)
