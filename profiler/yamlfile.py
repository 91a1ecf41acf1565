"""Reading the toolkit's YAML files (devices, plans) with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import yaml

from profiler.errors import UserError


def read_yaml(path: Path, what: str):
    """The parsed contents of `path`; a missing or malformed file is a UserError naming it."""
    if not path.is_file():
        raise UserError(f"{path}: no such {what}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
