"""`jcw SUBCOMMAND --help` shows every flag's default, the same way on every subcommand."""

from __future__ import annotations

import argparse

import pytest

from jcw.cli import build_parser

SUBCOMMANDS = build_parser()._subparsers._group_actions[0].choices


def flag_help(parser: argparse.ArgumentParser, flag: str) -> str:
    """The help text `--help` prints for `flag` (checked to be in the printed help), on one line."""
    action = next(a for a in parser._actions if flag in a.option_strings)
    text = " ".join(parser._get_formatter()._expand_help(action).split())
    assert text in " ".join(parser.format_help().split())
    return text


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_flag_with_a_default_shows_it(name):
    parser = SUBCOMMANDS[name]
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default is None or default is False or default == [] or \
                default is argparse.SUPPRESS:
            continue
        shown = flag_help(parser, action.option_strings[-1])
        assert "default" in shown and (str(default) in shown or "default: " in shown), (name, shown)


@pytest.mark.parametrize(("name", "flag", "default"), [
    ("search", "--generations", "32"), ("search", "--population", "64"), ("search", "--estimator", "proxy"),
    ("search", "--val-size", "1000"), ("search", "--bn-batches", "10"), ("search", "--workers", "1"),
    ("search", "--resize", "auto"), ("finetune", "--epochs", "1"), ("finetune", "--val-size", "1000"),
    ("finetune", "--augment", "crop-flip"), ("train", "--epochs", "1"), ("train", "--width", "0.5"),
    ("eval", "--bn-batches", "10"), ("profile", "--noise-kernels", "12"), ("fit", "--holdout-share", "0.2"),
    ("calibrate", "--passes", "3"), ("measure", "--passes", "3"), ("demo", "--device", "local-sparse"),
])
def test_the_defaults_users_ask_about_are_printed(name, flag, default):
    assert f"(default: {default})" in flag_help(SUBCOMMANDS[name], flag)
