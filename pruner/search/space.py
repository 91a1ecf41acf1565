"""The search space: a candidate is an integer vector of grid indices, one per channel group and per prunable layer.

Genes come first for the channel groups (a width ratio each), then for the weight-prunable layers (a
density each), both in the model's execution order. Per-kind lower bounds follow JCW's ResNet-18 config.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.runtimes import Runtime, get_runtime
from pruner.model.graph import KINDS, ModelGraph

GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))
WIDTH_BOUNDS = {"first": 0.8, "strided": 0.6, "residual": 0.9, "last": 0.5, "general": 0.5}
DENSITY_BOUNDS = {"first": 0.8, "strided": 0.8, "residual": 0.3, "last": 0.5, "general": 0.3}
NO_BOUNDS = dict.fromkeys(KINDS, 0.0)


def density_bounds(runtime: Runtime | str | None) -> dict[str, float]:
    """The density floors on a runtime (or its name): JCW's, with the runtime's own where it sets them
    (Runtime.density_floors)."""
    return DENSITY_BOUNDS | (dict(get_runtime(runtime).density_floors) if runtime is not None else {})


class SpaceError(UserError, ValueError):
    """A search-space setting or a candidate vector that does not fit the space."""


def round_channels(channels: int, ratio: float, multiple: int = 4) -> int:
    """JCW's rounding, ceil(c / m * ratio) * m, at least m and at most c (so ratio 1.0 keeps c)."""
    return min(channels, max(multiple, math.ceil(round(channels / multiple * ratio, 9)) * multiple))


def strictest(kinds: Sequence[str], bounds: Mapping[str, float]) -> tuple[str, float]:
    """The kind with the highest lower bound among `kinds` (ties: first in KINDS order), and that bound."""
    kind = max((k for k in KINDS if k in kinds), key=lambda k: (bounds[k], -KINDS.index(k)))
    return kind, bounds[kind]


@dataclass(frozen=True)
class Candidate:
    """A decoded candidate: a width ratio per channel group and a density per weight-prunable layer."""

    widths: tuple[float, ...]
    densities: tuple[float, ...]


@dataclass(frozen=True)
class SearchSpace:
    """Width and density grids with per-kind lower bounds over an analysed model (see pruner.model.graph.analyze).

    Bounds given for some kinds override JCW's defaults for those kinds only. `keep` holds fnmatch globs over
    layer names ("features.1.*", "classifier.*"): a matching layer is left alone, its input and output channel
    groups fixed at full width and its density fixed dense (lower bound = upper bound for those genes).
    """

    graph: ModelGraph
    width_grid: tuple[float, ...] = GRID
    density_grid: tuple[float, ...] = GRID
    width_bounds: Mapping[str, float] = field(default_factory=lambda: dict(WIDTH_BOUNDS))
    density_bounds: Mapping[str, float] = field(default_factory=lambda: dict(DENSITY_BOUNDS))
    multiple: int = 4
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("width_grid", "density_grid"):
            grid = tuple(float(v) for v in getattr(self, name))
            if not grid or list(grid) != sorted(set(grid)) or grid[0] <= 0 or grid[-1] != 1.0:
                raise SpaceError(f"{name} {grid}: must be strictly increasing in (0, 1] and end at 1.0")
            object.__setattr__(self, name, grid)
        for name, defaults in (("width_bounds", WIDTH_BOUNDS), ("density_bounds", DENSITY_BOUNDS)):
            given = dict(getattr(self, name))
            if not set(given) <= set(KINDS) or not all(0.0 <= v <= 1.0 for v in given.values()):
                raise SpaceError(f"{name} {given}: values in [0, 1] for kinds among {', '.join(KINDS)}")
            object.__setattr__(self, name, defaults | given)  # kinds not given keep JCW's default
        if not isinstance(self.multiple, int) or self.multiple < 1:
            raise SpaceError(f"channel multiple {self.multiple!r}: must be a positive integer")
        keep = (self.keep,) if isinstance(self.keep, str) else tuple(self.keep)
        names = [layer.name for layer in self.graph.layers]
        for glob in keep:
            if not isinstance(glob, str) or not fnmatch.filter(names, glob):
                raise SpaceError(f"keep {glob!r}: matches no layer (layers are named like {', '.join(names[:3])})")
        object.__setattr__(self, "keep", keep)

    @cached_property
    def kept_genes(self) -> np.ndarray:
        """Indices of the genes `keep` fixes: the width genes of the groups a kept layer reads or writes, and the
        density genes of kept layers."""
        kept = {layer.name for layer in self.graph.layers if any(fnmatch.fnmatchcase(layer.name, g) for g in self.keep)}
        groups = {g for layer in self.graph.layers if layer.name in kept for g, _ in layer.out_groups + layer.in_groups}
        layers = [self.n_width + i for i, layer in enumerate(self.graph.prunable) if layer.name in kept]
        return np.array(sorted(groups) + layers, dtype=int)

    @cached_property
    def group_kinds(self) -> tuple[str, ...]:
        """Each channel group's kind: the strictest of its layers' kinds under the width bounds."""
        return tuple(strictest(g.kinds, self.width_bounds)[0] for g in self.graph.groups)

    @cached_property
    def layer_kinds(self) -> tuple[str, ...]:
        """Each weight-prunable layer's kind: its strictest kind under the density bounds."""
        return tuple(strictest(layer.kinds, self.density_bounds)[0] for layer in self.graph.prunable)

    @property
    def n_var(self) -> int:
        """Number of genes: the width genes, then the density genes."""
        return self.n_width + len(self.graph.prunable)

    @property
    def n_width(self) -> int:
        """Number of width genes (one per channel group); the density genes start at this index."""
        return len(self.graph.groups)

    def weight_pruned_layers(self, X: np.ndarray) -> np.ndarray:
        """Per row of X: how many layers it stores below full density."""
        X = np.atleast_2d(X)
        return (X[:, self.n_width:] < self.upper[self.n_width:]).sum(axis=1)

    @cached_property
    def lower(self) -> np.ndarray:
        """Smallest allowed grid index per gene (the first grid value at or above the kind's bound)."""

        def first_at_least(grid: tuple[float, ...], bound: float) -> int:
            return next(i for i, v in enumerate(grid) if v >= bound - 1e-9)

        widths = [first_at_least(self.width_grid, self.width_bounds[k]) for k in self.group_kinds]
        densities = [first_at_least(self.density_grid, self.density_bounds[k]) for k in self.layer_kinds]
        lower = np.array(widths + densities, dtype=int)
        lower[self.kept_genes] = self.upper[self.kept_genes]
        return lower

    @cached_property
    def upper(self) -> np.ndarray:
        """Largest grid index per gene (ratio 1.0: the full width, dense)."""
        n_w = self.n_width
        return np.array([len(self.width_grid) - 1] * n_w + [len(self.density_grid) - 1] * (self.n_var - n_w))

    def full(self) -> np.ndarray:
        """The unpruned model as a candidate."""
        return self.upper.copy()

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` candidates drawn uniformly within the bounds, shape (n, n_var)."""
        return rng.integers(self.lower, self.upper + 1, size=(n, self.n_var))

    def check(self, x: Sequence[int] | np.ndarray) -> np.ndarray:
        """`x` as an int vector, or SpaceError naming the first gene that is not an integer within its bounds.

        Integer arrays (the search's own) are checked at once; anything else (floats, Python ints too large for
        int64, strings) gene by gene, before a conversion could overflow or turn inf into garbage.
        """
        arr = np.asarray(x)
        if arr.shape != (self.n_var,):
            raise SpaceError(f"a candidate is {self.n_var} integers; got shape {arr.shape}")
        if arr.dtype.kind in "iu":
            bad = np.flatnonzero((arr < self.lower) | (arr > self.upper))
            genes = [(int(bad[0]), arr[bad[0]].item())] if bad.size else []
        else:  # the given values, not numpy's conversion of them ([9, "x"] becomes ["9", "x"])
            genes = list(enumerate(x.tolist() if isinstance(x, np.ndarray) else x))
        for i, value in genes:
            self._check_gene(i, value)
        return arr.astype(int)

    def _check_gene(self, i: int, value: object) -> None:
        """SpaceError naming gene `i` unless `value` is an integer (an integral float too) within its bounds."""
        try:
            shown = f"gene {i} ({self.gene_names[i]}) = {reprlib.repr(value)}"
        except ValueError:  # an int beyond Python's 4300-digit printing limit
            shown = f"gene {i} ({self.gene_names[i]}) = an integer of {int(value).bit_length()} bits"
        if not (isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())):
            raise SpaceError(f"{shown} is not an integer")
        if not self.lower[i] <= value <= self.upper[i]:
            raise SpaceError(f"{shown} is outside [{self.lower[i]}, {self.upper[i]}]")

    @cached_property
    def gene_names(self) -> tuple[str, ...]:
        """A readable name per gene: 'width:<root layer>' or 'density:<layer>'."""
        return tuple(f"width:{g.layers[0]}" for g in self.graph.groups) + tuple(
            f"density:{layer.name}" for layer in self.graph.prunable
        )

    def decode(self, x: Sequence[int] | np.ndarray) -> Candidate:
        """Grid indices to width ratios and densities."""
        x = self.check(x)
        n_w = self.n_width
        return Candidate(tuple(self.width_grid[i] for i in x[:n_w]), tuple(self.density_grid[i] for i in x[n_w:]))

    def encode(self, candidate: Candidate) -> np.ndarray:
        """Width ratios and densities (each on its grid) back to grid indices."""

        def index(grid: tuple[float, ...], values: tuple[float, ...], what: str) -> list[int]:
            out = []
            for v in values:
                hits = [i for i, g in enumerate(grid) if abs(g - v) < 1e-9]
                if not hits:
                    raise SpaceError(f"{what} {v} is not on the grid {grid}")
                out.append(hits[0])
            return out

        if (len(candidate.widths), len(candidate.densities)) != (len(self.graph.groups), len(self.graph.prunable)):
            raise SpaceError("candidate has the wrong number of widths or densities for this space")
        widths = index(self.width_grid, candidate.widths, "width")
        return self.check(widths + index(self.density_grid, candidate.densities, "density"))

    def channels(self, x: Sequence[int] | np.ndarray) -> tuple[int, ...]:
        """Channels kept per group."""
        widths = self.decode(x).widths
        return tuple(
            round_channels(g.channels, r, self.multiple) for g, r in zip(self.graph.groups, widths, strict=True)
        )

    def densities(self, x: Sequence[int] | np.ndarray) -> dict[str, float]:
        """Density per weight-prunable layer, by layer name."""
        return dict(zip((layer.name for layer in self.graph.prunable), self.decode(x).densities, strict=True))

    def kernel_specs(self, x: Sequence[int] | np.ndarray, block: str) -> dict[str, KernelSpec]:
        """The candidate's KernelSpec per conv and linear layer, with the target device's sparsity block."""
        return self.graph.kernel_specs(self.channels(x), self.densities(x), block)

    def table(self, x: Sequence[int] | np.ndarray) -> pd.DataFrame:
        """The candidate as a readable table: one row per conv and linear layer."""
        channels = self.graph.layer_channels(self.channels(x))
        densities = self.densities(x)
        rows = []
        for layer in self.graph.layers:
            cin, cout = channels[layer.name]
            kind = strictest(layer.kinds, self.density_bounds)[0]
            rows.append(
                {
                    "layer": layer.name,
                    "op": layer.op,
                    "kind": kind,
                    "cin": cin,
                    "cout": cout,
                    "full_cout": layer.cout,
                    "density": densities.get(layer.name, 1.0),
                }
            )
        return pd.DataFrame(rows)


def space_settings(space: SearchSpace) -> dict:
    """Everything but the graph, as plain JSON values: `SearchSpace(graph, **settings)` rebuilds the space (the
    graph is re-derived from the model), so a checkpoint or a resumed search keeps custom grids, bounds and keeps."""
    return {
        "width_grid": list(space.width_grid), "density_grid": list(space.density_grid),
        "width_bounds": dict(space.width_bounds), "density_bounds": dict(space.density_bounds),
        "multiple": space.multiple, "keep": list(space.keep),
    }  # fmt: skip
