"""Profiling plans: YAML grids of kernels, expanded into KernelSpecs."""

from __future__ import annotations

import itertools
from pathlib import Path

from profiler.errors import UserError
from profiler.kernel import KernelSpec, SpecError
from profiler.yamlfile import read_yaml

DEFAULT_PLAN = Path(__file__).with_name("default_plan.yaml")
_GRID_FIELDS = ("op", "hw", "cin", "cout", "k", "stride", "density", "activation", "block")


def _values(value, where: str) -> list:
    """A scalar, a list, or a range {from, to, step} (inclusive)."""
    if isinstance(value, dict):
        try:
            start, stop, step = value["from"], value["to"], value.get("step", 1)
        except KeyError as err:
            raise UserError(f"{where}: a range needs 'from' and 'to' (missing {err})") from None
        if step <= 0:
            raise UserError(f"{where}: range step must be positive")
        count = int(round((stop - start) / step)) + 1
        return [round(start + i * step, 6) if isinstance(step, float) else start + i * step for i in range(count)]
    return list(value) if isinstance(value, list) else [value]


def expand(entry: dict, block: str, where: str) -> list[KernelSpec]:
    """All kernels of one plan entry (the cartesian product of its fields)."""
    unknown = set(entry) - set(_GRID_FIELDS)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {sorted(unknown)}; known: {', '.join(_GRID_FIELDS)}")
    missing = [f for f in ("op", "hw", "cin") if f not in entry]
    if missing:
        raise UserError(f"{where}: missing field(s) {missing}")
    grid = {f: _values(entry[f], f"{where}: field '{f}'") for f in _GRID_FIELDS if f in entry}
    grid.setdefault("block", [block])
    specs = []
    for combo in itertools.product(*grid.values()):
        fields = dict(zip(grid, combo, strict=True))
        hw = fields.pop("hw")
        h = w = 1 if fields["op"] == "fc" else hw
        if fields["op"] == "dwconv":
            fields.setdefault("cout", fields["cin"])
            fields["groups"] = fields["cin"]
        try:
            specs.append(KernelSpec(h=h, w=w, **fields))
        except (SpecError, TypeError) as err:
            raise UserError(f"{where}: impossible kernel {fields | {'hw': hw}}: {err}") from None
    return specs


def load_plan(path: str | Path | None, block: str = "1x4") -> list[KernelSpec]:
    """Read a plan file (the default plan if None); `block` applies where an entry names none."""
    path = Path(path) if path else DEFAULT_PLAN
    data = read_yaml(path, "plan file")
    if not isinstance(data, dict) or not isinstance(data.get("kernels"), list):
        raise UserError(f"{path}: expected a mapping with a list 'kernels:'")
    specs: dict[tuple, KernelSpec] = {}
    for i, entry in enumerate(data["kernels"]):
        if not isinstance(entry, dict):
            raise UserError(f"{path}: kernels[{i}]: expected a mapping of fields")
        for spec in expand(entry, block, f"{path}: kernels[{i}]"):
            specs.setdefault(spec.key(), spec)
    return list(specs.values())
