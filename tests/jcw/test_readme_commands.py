"""The README's "Your model, your data, your GPU" commands run as written: every `jcw ...` line of the section's
command block, on a small model of the user's file and a generated image folder, with the README's placeholders
substituted (the phone `pixel` is this machine's `local-sparse`, /data/imagenet a folder of PNGs, cuda the CPU,
GENES the search's pick, 3,224,224 the model's 3,32,32) and flags that keep it small appended."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from jcw.cli import main

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Your model, your data, your GPU"
SMALLER = {  # appended to a command: later flags win, so the README's own values are overridden only here
    "plan": ["--candidates", "2"],
    "search": ["--generations", "1", "--population", "6", "--val-size", "8", "--threads", "1"],
    "finetune": ["--val-size", "8", "--threads", "1"],
    "eval": ["--threads", "1"],
}
SUBSTITUTE = {"pixel": "local-sparse", "/data/imagenet": "data", "3,224,224": "3,32,32"}


def section_commands(readme: str) -> list[list[str]]:
    """The `jcw` command lines of the section's first command block, continuation lines joined, comments dropped."""
    section = readme.split(SECTION, 1)[1].split("\n### ", 1)[0]
    block = section.split("```\n", 2)[1]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.startswith("jcw ")]


def substituted(argv: list[str], genes: str | None) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        for old, new in SUBSTITUTE.items():
            arg = arg.replace(old, new)
        if argv[i - 1] == "--torch-device":
            arg = "cpu"
        if arg == "GENES":
            assert genes is not None, "GENES is used before the search that finds them"
            arg = genes
        out.append(arg)
    return out


def run_section(readme: str, work: Path, user_files: Callable[..., Path]) -> list[str]:
    """Run the section's commands in `work` (the user's files written there first, named as the README names them);
    returns the commands run."""
    user_files(work)
    (work / "weights.pt").rename(work / "net.pt")
    shutil.move(work / "images", work / "data")
    shutil.copy(ROOT / "devices.yaml", work / "devices.yaml")
    genes, ran = None, []
    for argv in section_commands(readme):
        command = argv[1]
        args = substituted(argv[1:], genes) + SMALLER.get(command, [])
        assert main(args) == 0, shlex.join(args)
        ran.append(command)
        if command == "search":
            out = Path(args[args.index("--out") + 1])
            picks = pd.read_csv(out / "budgets.csv")
            found = picks[picks.found] if "genes" in picks else picks.iloc[:0]
            pareto = pd.read_csv(out / "pareto.csv")
            genes = found.genes.iloc[0] if len(found) else pareto[pareto.method == "joint"].genes.iloc[0]
    return ran


def test_the_readmes_own_model_commands_run_as_written(tmp_path, monkeypatch, user_files):
    monkeypatch.chdir(tmp_path)
    ran = run_section((ROOT / "README.md").read_text(), tmp_path, user_files)
    assert {"plan", "profile", "fit", "search", "finetune", "export", "measure"} <= set(ran)
