"""Physics features of kernels, computed column-wise from a frame of KernelSpec fields."""

from __future__ import annotations

import numpy as np
import pandas as pd

from predictor.table import CONTEXT
from profiler.runtimes import registered

DENSITY_KNOTS = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
"""Knots of the ramp basis in which a sparse kernel's cost grows with density (concave on phones)."""

FAMILY = ("op", "h", "w", "k", "stride", "block", "activation", "layout", *CONTEXT)
"""What fixes a kernel's code path: kernels of one family differ only in channels and density."""

REGIME = "dense"
"""Regime indicator: 1 for kernels that run dense (density 1.0, i.e. KernelSpec.is_sparse False, or
weights densified before they run: see run_density), 0 for sparse ones.

Runtimes may run the two on different code paths (TFLite built-in kernels: a sparse stride-1 1x1
conv is RESHAPE + sparse FULLY_CONNECTED, costing ~ rows x nonzero blocks, a dense one CONV_2D,
costing ~ MACs), so latency need not be monotone in density across 1.0: only within the sparse regime.
"""

PHYSICS_FAMILY = (*FAMILY, REGIME)
"""Family keys of the physics base: a family's sparse and dense kernels are refitted separately."""

COUNTS = ("in_elems", "patch_elems", "out_elems", "nnz_weights", "macs")
SPARSE_BASE = ("one", *COUNTS, *(f"macs_d{i}" for i in range(len(DENSITY_KNOTS) - 1)))
DENSE_BASE = ("one", *COUNTS)
BASE_FEATURES = (*(f"sparse_{c}" for c in SPARSE_BASE), *(f"dense_{c}" for c in DENSE_BASE))
"""Inputs of the roofline-like base, a block per regime (zero in the other regime's rows). Each is
>= 0 and non-decreasing in cin and cout, and the sparse block in density (its density ramps scale
MACs, so it can be ~ nonzero MACs, the sparse path's rows x nonzero weights)."""

TREE_FEATURES = (
    "h",
    "w",
    "k",
    "stride",
    "cin",
    "cout",
    "density",
    "log_macs",
    "log_nnz_macs",
    "log_in_elems",
    "log_out_elems",
    "log_out_pixels",
    REGIME,
    "op",
    "block",
    "activation",
    "layout",
)
"""Inputs of the booster besides the base itself (the last four are categorical; the regime is unconstrained)."""
CATEGORICAL = ("op", "block", "activation", "layout")
MONOTONE_INCREASING = ("cin", "cout", "density", "log_macs", "log_nnz_macs", "log_in_elems", "log_out_elems")
"""Booster inputs that only grow with channels or density; constraining them (and the base) to act
upwards keeps predictions monotone in cin and cout, and in density within the sparse regime (the
regime indicator is left free, so a dense kernel may be faster than a sparse one at density 0.9)."""


def borrow_regime(coef: np.ndarray, to_dense: bool) -> np.ndarray:
    """Base coefficients (BASE_FEATURES) with one regime's block copied from the other's, for a fit
    that had no rows of that regime: dense costs = sparse ones at density 1 (ramps folded into
    MACs); sparse costs = dense ones, flat in density."""
    out = coef.copy()
    sparse, dense = out[: len(SPARSE_BASE)], out[len(SPARSE_BASE) :]
    if to_dense:
        dense[:] = sparse[: len(DENSE_BASE)]
        dense[DENSE_BASE.index("macs")] += sparse[len(DENSE_BASE) :].sum()
    else:
        sparse[: len(DENSE_BASE)], sparse[len(DENSE_BASE) :] = dense, 0.0
    return out


def out_hw(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Output height and width with padding k // 2 (KernelSpec.out_hw, vectorised)."""
    k, s = df["k"].to_numpy(), df["stride"].to_numpy()
    pad = 2 * (k // 2) - k
    return (df["h"].to_numpy() + pad) // s + 1, (df["w"].to_numpy() + pad) // s + 1


def run_density(df: pd.DataFrame) -> np.ndarray:
    """The density each kernel runs at: 1.0 where its weights are dense by the time it runs, as each row's runtime
    says (profiler.runtimes: Runtime.run_density). Depthwise convs are never pruned; rows of a table that names no
    runtime, or one this toolkit does not know, run at their density."""
    runs_at = np.where(df["op"].to_numpy() == "dwconv", 1.0, df["density"].to_numpy()).astype(np.float64)
    names = df["runtime"].to_numpy()
    for name, runtime in registered().items():
        rows = names == name
        if rows.any():
            runs_at[rows] = runtime().run_density(df[rows])
    return runs_at


def physics(df: pd.DataFrame) -> pd.DataFrame:
    """Counts that set a kernel's cost: MACs, elements read and written, weights, density and regime.

    `density` is the kernel's own (1.0 for depthwise convs), `run_density` the one it runs at.
    """
    oh, ow = out_hw(df)
    k2 = df["k"].to_numpy() ** 2
    cin, cout = df["cin"].to_numpy(), df["cout"].to_numpy()
    density = np.where(df["op"].to_numpy() == "dwconv", 1.0, df["density"].to_numpy())
    runs_at = run_density(df)
    out_pixels = (oh * ow).astype(np.float64)
    macs = out_pixels * cout * (cin // df["groups"].to_numpy()) * k2
    return pd.DataFrame(
        {
            "out_pixels": out_pixels,
            "in_elems": (df["h"].to_numpy() * df["w"].to_numpy() * cin).astype(np.float64),
            "patch_elems": out_pixels * cin * k2,
            "out_elems": out_pixels * cout,
            "weights": (macs / out_pixels),
            "macs": macs,
            "density": density,
            "run_density": runs_at,
            REGIME: (runs_at >= 1.0).astype(np.float64),
        },
        index=df.index,
    )


def density_ramps(density: np.ndarray) -> np.ndarray:
    """Piecewise-linear ramps of density, one per knot interval; each rises 0 -> 1 across its interval."""
    lo, hi = np.array(DENSITY_KNOTS[:-1]), np.array(DENSITY_KNOTS[1:])
    return np.clip((density[:, None] - lo) / (hi - lo), 0.0, 1.0)


def base_matrix(p: pd.DataFrame) -> np.ndarray:
    """The base model's design matrix (columns BASE_FEATURES) from physics(); counts in millions."""
    macs, density = p["macs"].to_numpy(), p["run_density"].to_numpy()
    counts = np.column_stack(
        [
            p["in_elems"].to_numpy(),
            p["patch_elems"].to_numpy(),
            p["out_elems"].to_numpy(),
            p["weights"].to_numpy() * density,
            macs,
        ]
    )
    one = np.ones((len(p), 1))
    sparse = np.column_stack([one, counts / 1e6, density_ramps(density) * macs[:, None] / 1e6])
    dense = np.column_stack([one, counts / 1e6])
    is_dense = p[REGIME].to_numpy()[:, None]
    return np.column_stack([sparse * (1.0 - is_dense), dense * is_dense])


def tree_frame(df: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
    """The booster's features (TREE_FEATURES) from a kernel frame and its physics()."""
    out = pd.DataFrame(
        {
            "h": df["h"].to_numpy(),
            "w": df["w"].to_numpy(),
            "k": df["k"].to_numpy(),
            "stride": df["stride"].to_numpy(),
            "cin": df["cin"].to_numpy(),
            "cout": df["cout"].to_numpy(),
            "density": p["run_density"].to_numpy(),
            "log_macs": np.log1p(p["macs"].to_numpy()),
            "log_nnz_macs": np.log1p(p["macs"].to_numpy() * p["run_density"].to_numpy()),
            "log_in_elems": np.log1p(p["in_elems"].to_numpy()),
            "log_out_elems": np.log1p(p["out_elems"].to_numpy()),
            "log_out_pixels": np.log1p(p["out_pixels"].to_numpy()),
            REGIME: p[REGIME].to_numpy(),
        },
        index=df.index,
    )
    for c in CATEGORICAL:
        out[c] = df[c].astype(str).to_numpy()
    return out[list(TREE_FEATURES)]


def families(df: pd.DataFrame, by: tuple[str, ...] = FAMILY) -> tuple[np.ndarray, list[tuple]]:
    """Each row's family number and the distinct keys (tuples of the columns `by`) those numbers index."""
    cols = df[list(by)]
    codes = cols.groupby(list(by), sort=False).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]
    return codes, list(cols.iloc[first].itertuples(index=False, name=None))
