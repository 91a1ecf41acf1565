"""Profiling plans: YAML grids of kernels, counted and bounded before they are expanded into KernelSpecs."""

from __future__ import annotations

import itertools
import math
import reprlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import UserError
from profiler.kernel import KernelSpec, SpecError
from profiler.yamlfile import clip, read_yaml

DEFAULT_PLAN = Path(__file__).with_name("default_plan.yaml")
_GRID_FIELDS = ("op", "hw", "cin", "cout", "k", "stride", "groups", "density", "activation", "block", "layout")
MAX_KERNELS = 20_000
"""Plans with more kernels are refused unless the caller raises the limit (`jcw profile --max-kernels N`)."""
SECONDS_PER_KERNEL = 0.15
"""Rough time to profile one kernel, for the estimate in the refusal: this 2-core machine's local devices at the
default warmup, repeats and rounds (one million kernels ~ 40 hours); phones and boards are slower."""
_MAGNITUDE = 10**15  # bounds a range's arithmetic; no kernel size or density comes near it
_FINEST_STEP = 1e-6  # KernelSpec.key rounds densities to 6 decimals: finer steps only repeat kernels


@dataclass(frozen=True)
class _Range:
    """An inclusive range {from, to, step}, counted without being expanded."""

    start: int | float
    step: int | float
    count: int

    def __iter__(self) -> Iterator[int | float]:
        for i in range(self.count):
            value = self.start + i * self.step
            yield round(value, 6) if isinstance(value, float) else value


def _number(value, key: str, where: str) -> int | float:
    """A range bound or step: an int or float of bounded magnitude (YAML reads `1e12`, without a dot, as text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= _MAGNITUDE:
        raise UserError(f"{where}: range '{key}' must be a number (at most 1e15), got {reprlib.repr(value)}")
    return value


def _range(value: dict, where: str) -> _Range:
    """The checked range of a mapping {from, to, step} (step 1 by default)."""
    missing = [key for key in ("from", "to") if key not in value]
    unknown = sorted(map(str, set(value) - {"from", "to", "step"}))
    if missing or unknown:
        raise UserError(f"{where}: a range is {{from, to, step}}; missing {missing}, unknown {unknown}")
    start, stop = _number(value["from"], "from", where), _number(value["to"], "to", where)
    step = _number(value.get("step", 1), "step", where)
    if step < _FINEST_STEP:
        raise UserError(f"{where}: range step must be at least {_FINEST_STEP:g}, got {step!r}")
    if stop < start:
        raise UserError(f"{where}: range 'to' ({stop!r}) is below 'from' ({start!r})")
    return _Range(start, step, math.floor((stop - start) / step + 1e-9) + 1)


def _values(value, where: str) -> list | _Range:
    """A scalar, a list, or a range {from, to, step} (inclusive)."""
    if isinstance(value, dict):
        return _range(value, where)
    return list(value) if isinstance(value, list) else [value]


def _count(values: list | _Range) -> int:
    """How many values a field takes (a range's count may exceed what len() can return)."""
    return values.count if isinstance(values, _Range) else len(values)


def _grid(entry, block: str, where: str) -> dict[str, list | _Range]:
    """The checked fields of one plan entry, each as its values (ranges not expanded)."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping of fields")
    unknown = set(entry) - set(_GRID_FIELDS)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {reprlib.repr(sorted(map(str, unknown)))}; "
                        f"known: {', '.join(_GRID_FIELDS)}")
    missing = [f for f in ("op", "hw", "cin") if f not in entry]
    if missing:
        raise UserError(f"{where}: missing field(s) {missing}")
    grid = {f: _values(entry[f], f"{where}: field '{f}'") for f in _GRID_FIELDS if f in entry}
    grid.setdefault("block", [block])
    return grid


def _check_densities(grid: dict[str, list | _Range], where: str) -> None:
    """Densities are fractions of weights kept: 0 would measure a layer with no weights at all."""
    for density in grid.get("density", []):
        if isinstance(density, bool) or not isinstance(density, int | float) or not 0 < density <= 1:
            raise UserError(f"{where}: field 'density' = {reprlib.repr(density)}: must be a number in (0, 1]")


def _kernels(grid: dict[str, list | _Range], where: str) -> Iterator[KernelSpec]:
    """The kernels of a grid (the cartesian product of its fields), one at a time."""
    _check_densities(grid, where)
    for combo in itertools.product(*grid.values()):
        fields = dict(zip(grid, combo, strict=True))
        hw = fields.pop("hw")
        h = w = 1 if fields["op"] == "fc" else hw
        if fields["op"] == "dwconv":  # groups = channels; a plain conv's default 1, or grouped when given
            fields.setdefault("cout", fields["cin"])
            fields["groups"] = fields["cin"]
        try:
            yield KernelSpec(h=h, w=w, **fields)
        except (SpecError, TypeError) as err:
            kernel = reprlib.repr(fields | {"hw": hw})
            raise UserError(f"{where}: impossible kernel {kernel}: {clip(str(err))}") from None


def expand(entry: dict, block: str, where: str) -> Iterator[KernelSpec]:
    """The kernels of one plan entry (the cartesian product of its fields), one at a time."""
    return _kernels(_grid(entry, block, where), where)


def _check_size(path: Path, count: int, max_kernels: int) -> None:
    """Refuse an empty plan, or one over `max_kernels`, before expanding it; the refusal estimates the time."""
    if count == 0:
        raise UserError(f"{path}: the plan has no kernels (an empty 'kernels:' list or a field with no values)")
    if count > max_kernels:
        hours = count * SECONDS_PER_KERNEL / 3600
        raise UserError(f"{path}: the plan has {count:,} kernels, about {hours:,.0f} h to profile, over the limit "
                        f"of {max_kernels:,}: narrow its ranges, or pass --max-kernels {count} to run it anyway")


def load_plan(path: str | Path | None, block: str = "1x4", max_kernels: int = MAX_KERNELS) -> list[KernelSpec]:
    """Read a plan file (the default plan if None); `block` applies where an entry names none.

    The kernels are counted first: a plan of more than `max_kernels` (or of none) is refused unexpanded.
    """
    path = Path(path) if path else DEFAULT_PLAN
    data = read_yaml(path, "plan file")
    if not isinstance(data, dict) or not isinstance(data.get("kernels"), list):
        raise UserError(f"{path}: expected a mapping with a list 'kernels:'")
    entries = {f"{path}: kernels[{i}]": entry for i, entry in enumerate(data["kernels"])}
    grids = {where: _grid(entry, block, where) for where, entry in entries.items()}
    _check_size(path, sum(math.prod(map(_count, grid.values())) for grid in grids.values()), max_kernels)
    specs: dict[tuple, KernelSpec] = {}
    for where, grid in grids.items():
        for spec in _kernels(grid, where):
            specs.setdefault(spec.key(), spec)
    return list(specs.values())
