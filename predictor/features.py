"""Physics features of kernels, computed column-wise from a frame of KernelSpec fields."""

from __future__ import annotations

import numpy as np
import pandas as pd

from predictor.table import CONTEXT

DENSITY_KNOTS = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
"""Knots of the ramp basis in which a sparse kernel's cost grows with density (concave on phones)."""

FAMILY = ("op", "h", "w", "k", "stride", "block", "activation", *CONTEXT)
"""What fixes a kernel's code path: kernels of one family differ only in channels and density."""

BASE_FEATURES = (
    "one",
    "in_elems",
    "patch_elems",
    "out_elems",
    "nnz_weights",
    "macs",
    *(f"macs_d{i}" for i in range(len(DENSITY_KNOTS) - 1)),
)
"""Inputs of the roofline-like base: each is >= 0 and non-decreasing in cin, cout and density."""

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
    "op",
    "block",
    "activation",
)
"""Inputs of the booster besides the base itself (the last three are categorical)."""
CATEGORICAL = ("op", "block", "activation")
MONOTONE_INCREASING = ("cin", "cout", "density", "log_macs", "log_nnz_macs", "log_in_elems", "log_out_elems")
"""Booster inputs that only grow with channels or density; constraining them (and the base) to act
upwards keeps predictions monotone in cin, cout and density."""


def out_hw(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Output height and width with padding k // 2 (KernelSpec.out_hw, vectorised)."""
    k, s = df["k"].to_numpy(), df["stride"].to_numpy()
    pad = 2 * (k // 2) - k
    return (df["h"].to_numpy() + pad) // s + 1, (df["w"].to_numpy() + pad) // s + 1


def physics(df: pd.DataFrame) -> pd.DataFrame:
    """Counts that set a kernel's cost: MACs (dense and nonzero), elements read and written, weights."""
    oh, ow = out_hw(df)
    k2 = df["k"].to_numpy() ** 2
    cin, cout = df["cin"].to_numpy(), df["cout"].to_numpy()
    density = np.where(df["op"].to_numpy() == "dwconv", 1.0, df["density"].to_numpy())
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
        },
        index=df.index,
    )


def density_ramps(density: np.ndarray) -> np.ndarray:
    """Piecewise-linear ramps of density, one per knot interval; each rises 0 -> 1 across its interval."""
    lo, hi = np.array(DENSITY_KNOTS[:-1]), np.array(DENSITY_KNOTS[1:])
    return np.clip((density[:, None] - lo) / (hi - lo), 0.0, 1.0)


def base_matrix(p: pd.DataFrame) -> np.ndarray:
    """The base model's design matrix (columns BASE_FEATURES) from physics(); counts in millions."""
    macs = p["macs"].to_numpy()
    counts = np.column_stack(
        [
            p["in_elems"].to_numpy(),
            p["patch_elems"].to_numpy(),
            p["out_elems"].to_numpy(),
            p["weights"].to_numpy() * p["density"].to_numpy(),
            macs,
            density_ramps(p["density"].to_numpy()) * macs[:, None],
        ]
    )
    return np.column_stack([np.ones(len(p)), counts / 1e6])


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
            "density": p["density"].to_numpy(),
            "log_macs": np.log1p(p["macs"].to_numpy()),
            "log_nnz_macs": np.log1p(p["macs"].to_numpy() * p["density"].to_numpy()),
            "log_in_elems": np.log1p(p["in_elems"].to_numpy()),
            "log_out_elems": np.log1p(p["out_elems"].to_numpy()),
            "log_out_pixels": np.log1p(p["out_pixels"].to_numpy()),
        },
        index=df.index,
    )
    for c in CATEGORICAL:
        out[c] = df[c].astype(str).to_numpy()
    return out[list(TREE_FEATURES)]


def families(df: pd.DataFrame) -> tuple[np.ndarray, list[tuple]]:
    """Each row's family number and the distinct FAMILY keys (tuples) those numbers index."""
    cols = df[list(FAMILY)]
    codes = cols.groupby(list(FAMILY), sort=False).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]
    return codes, list(cols.iloc[first].itertuples(index=False, name=None))
