"""`jcw SUBCOMMAND ...`: the profiler's commands (jcw.profiling), the predictor's (jcw.prediction), the model
commands (jcw.commands), `jcw eval` (jcw.evaluation) and `jcw report` (jcw.run_report).

Exit status: 0 success, 1 some files of a batch failed (measure), 2 a usage error (argparse), 3 bad input (a
`UserError`: a file, model, dataset or setting the user can fix), 4 a device that failed (`DeviceError`), 130
after Ctrl-C and 143 after SIGTERM (128 + signal).
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys

from jcw import commands, evaluation, prediction, profiling, run_report
from jcw.options import HelpFormatter
from profiler.errors import UserError
from profiler.transports import DeviceError

BAD_INPUT, DEVICE_FAILED = 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jcw", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="show the toolkit's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    profiling.register(sub)
    prediction.register(sub)
    prediction.add_adaptive_args(sub.choices["profile"])  # `profile --adaptive` samples where the predictor needs
    commands.register(sub)
    evaluation.register(sub)
    run_report.register(sub)
    for subcommand in sub.choices.values():  # every flag's help shows its default
        subcommand.formatter_class = HelpFormatter
    return parser


class _Version(argparse.Action):
    """--version, looked up only when asked: importing importlib.metadata would cost every command ~40 ms."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"jcw {_version()}")
        parser.exit()


def _version() -> str:
    """The installed toolkit's version (pyproject.toml's), or "unknown" when run from a checkout not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jcw-toolkit")
    except PackageNotFoundError:
        return "unknown"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every command stops the same way."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand and return its exit status (see the module's docstring)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt as stop:
        print("jcw: interrupted; finished rows are saved, re-run to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
    except UserError as err:
        print(f"jcw {args.command}: error: {_capped(str(err))}", file=sys.stderr)
        return DEVICE_FAILED if isinstance(err, DeviceError) else BAD_INPUT
    finally:
        signal.signal(signal.SIGTERM, previous)


def _capped(message: str, limit: int = 500) -> str:
    """`message` cut to `limit` characters, saying how many were cut, so no error line runs to megabytes."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message) - limit} more characters)"


def run() -> None:
    """The `jcw` command: run main and exit with its status."""
    status = main()
    # The process ends here and frees everything at once: keep the interpreter's last collections from scanning every
    # object for cycles first (~0.1 s once pandas is loaded, a tenth of a `jcw predict --table`).
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
