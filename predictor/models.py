"""Latency regressors: the physics-shaped default and the baselines it is compared against.

Every regressor has fit(frame) and predict(frame) -> ms, on frames from predictor.table.normalise. Those that can
also give their fitted state as plain JSON values and numeric arrays (`state()`, rebuilt by `from_state`, with which
they predict exactly as fitted), so a saved model loads without a refit (predictor.persist); tree ensembles predict
through predictor.trees. The JCW interpolation has no such state: it is rebuilt from its table. scikit-learn and
scipy are imported by what fits (or interpolates), so loading a saved model and predicting imports neither.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from predictor import features as F
from predictor.table import TARGET
from predictor.trees import TreeEnsemble

State = tuple[dict, dict[str, np.ndarray]]
"""A fitted regressor as JSON values and numeric arrays (names are the .npz entries)."""


def _plain(value):
    """A numpy scalar as the Python value JSON writes (a family key's fields)."""
    return value.item() if isinstance(value, np.generic) else value


def _trees_state(trees: TreeEnsemble, arrays: dict[str, np.ndarray]) -> dict:
    """Put a TreeEnsemble's arrays into `arrays` (as "trees/NAME"); return its JSON part."""
    arrays.update({f"trees/{name}": value for name, value in trees.arrays.items()})
    return {"average": trees.average, "float32": trees.float32}


def _trees_from(meta: dict, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
    prefix = "trees/"
    return TreeEnsemble({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, meta["average"],
                        meta["float32"])


def _relative_nnls(x: np.ndarray, y: np.ndarray, prior: np.ndarray | None = None, strength: float = 0.0):
    """Non-negative c minimising sum((x c / y - 1)^2) + strength * |c - prior|^2 (relative least squares)."""
    from sklearn.linear_model import LinearRegression

    a, b = x / y[:, None], np.ones(len(y))
    if prior is not None:
        a = np.vstack([a, np.sqrt(strength) * np.eye(x.shape[1])])
        b = np.concatenate([b, np.sqrt(strength) * prior])
    return LinearRegression(positive=True, fit_intercept=False).fit(a, b).coef_


def _physics_families(df: pd.DataFrame, p: pd.DataFrame) -> tuple[np.ndarray, list[tuple]]:
    """Families of the physics base: features.FAMILY plus the regime, from a frame and its physics()."""
    return F.families(df.assign(**{F.REGIME: p[F.REGIME].to_numpy()}), F.PHYSICS_FAMILY)


class PhysicsModel:
    """Default: a roofline-like base refitted per kernel family, refined by a monotone booster.

    The base is latency = sum of non-negative costs per element read, written, per MAC and per
    density ramp (so it extrapolates to unmeasured shapes and rises with cin, cout, density), with
    separate costs for sparse and dense kernels (features.REGIME: runtimes may lower them to
    different code paths, a dense kernel being faster than a fairly dense sparse one). It is fitted
    globally, then per family and regime shrunk towards the global fit, so a few measurements of a
    new layer correct its scale. A gradient-boosted model then learns log latency from the physics
    features and the base; `offset` of log(base) is fixed, so the booster's target still rises
    with channels and density and its monotone constraints (which keep the whole prediction
    monotone in channels, and in density among sparse kernels) cost little accuracy. Families with
    few rows are up-weighted (weight n^-1/2) so the booster spends splits on them.
    """

    name = "physics+gbm"

    def __init__(self, calibration_strength: float = 1.0, offset: float = 0.8, random_state: int = 0):
        self.calibration_strength = calibration_strength
        self.offset = offset
        self.random_state = random_state

    def fit(self, df: pd.DataFrame) -> PhysicsModel:
        """Fit the global base, its per-family refits, then the booster."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        p = F.physics(df)
        x, y = F.base_matrix(p), df[TARGET].to_numpy()
        self.coef_ = _relative_nnls(x, y)
        dense = p[F.REGIME].to_numpy() == 1.0
        if dense.all() or not dense.any():  # one regime unseen: price it as the other one
            self.coef_ = F.borrow_regime(self.coef_, to_dense=not dense.any())
        codes, keys = _physics_families(df, p)
        # One scale per family (both regimes): the prior of its per-regime refits, and the whole
        # correction for a regime it has no rows of (e.g. dense kernels of a layer sampled sparse).
        fam_codes, fam_keys = F.families(df)
        ratio, strength = x @ self.coef_ / y, self.calibration_strength
        scale = (np.bincount(fam_codes, ratio) + strength) / (np.bincount(fam_codes, ratio**2) + strength)
        self.scales_ = dict(zip(fam_keys, scale, strict=True))
        self.families_ = {}
        for code, key in enumerate(keys):
            idx = np.flatnonzero(codes == code)
            # In units of each term's typical share of latency, one prior strength suits every term.
            share = np.median(x[idx] / y[idx, None], axis=0)
            share[share == 0] = 1.0
            prior = self.coef_ * self.scales_[key[:-1]] * share
            self.families_[key] = _relative_nnls(x[idx] / share, y[idx], prior, self.calibration_strength) / share
        tf = F.tree_frame(df, p)
        self.categories_ = {c: sorted(tf[c].unique()) for c in F.CATEGORICAL}
        log_base = np.log(self._base(x, codes, keys))
        tf = self._encode(tf, log_base)
        booster = HistGradientBoostingRegressor(
            max_iter=100,
            learning_rate=0.2,
            min_samples_leaf=5,
            categorical_features=[tf.columns.get_loc(c) for c in F.CATEGORICAL],
            monotonic_cst=[int(c in F.MONOTONE_INCREASING or c == "log_base") for c in tf.columns],
            random_state=self.random_state,
        )
        weight = np.bincount(codes)[codes] ** -0.5
        booster.fit(tf, np.log(y) - self.offset * log_base, sample_weight=weight)
        self.trees_ = TreeEnsemble.from_hist_boosting(booster)
        return self

    def state(self) -> State:
        """The fitted base (global, per-family scales and coefficients), categories and booster trees."""
        arrays = {"coef": self.coef_, "scales": np.array(list(self.scales_.values()), np.float64),
                  "family_coefs": np.array(list(self.families_.values()), np.float64).reshape(-1, len(self.coef_))}
        meta = {"calibration_strength": self.calibration_strength, "offset": self.offset,
                "random_state": self.random_state,
                "scale_keys": [[_plain(v) for v in key] for key in self.scales_],
                "family_keys": [[_plain(v) for v in key] for key in self.families_],
                "categories": {c: [_plain(v) for v in values] for c, values in self.categories_.items()},
                "trees": _trees_state(self.trees_, arrays)}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> PhysicsModel:
        model = cls(meta["calibration_strength"], meta["offset"], meta["random_state"])
        model.coef_ = arrays["coef"]
        model.scales_ = dict(zip(map(tuple, meta["scale_keys"]), arrays["scales"].tolist(), strict=True))
        model.families_ = dict(zip(map(tuple, meta["family_keys"]), arrays["family_coefs"], strict=True))
        model.categories_ = {c: list(meta["categories"][c]) for c in F.CATEGORICAL}
        model.trees_ = _trees_from(meta["trees"], arrays)
        return model

    def _base(self, x: np.ndarray, codes: np.ndarray, keys: list[tuple]) -> np.ndarray:
        """Base latency with each row's family and regime coefficients; for an unmeasured regime the
        global ones times its family's scale, for an unmeasured family the global ones."""
        coefs = np.vstack([self.families_.get(k, self.coef_ * self.scales_.get(k[:-1], 1.0)) for k in keys])
        return np.einsum("ij,ij->i", x, coefs[codes])

    def _encode(self, tf: pd.DataFrame, log_base: np.ndarray) -> pd.DataFrame:
        """Booster inputs: categoricals as the codes seen in fit (unseen -> missing), plus log(base)."""
        for c in F.CATEGORICAL:
            codes = pd.Index(self.categories_[c]).get_indexer(tf[c]).astype(np.float64)  # -1: unseen
            tf[c] = np.where(codes < 0, np.nan, codes)
        tf["log_base"] = log_base
        return tf

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted latency in ms, one per row of df."""
        p = F.physics(df)
        codes, keys = _physics_families(df, p)
        log_base = np.log(self._base(F.base_matrix(p), codes, keys))
        return np.exp(self.trees_.predict(self._encode(F.tree_frame(df, p), log_base)) + self.offset * log_base)


def _nnz_macs(df: pd.DataFrame) -> np.ndarray:
    p = F.physics(df)
    return (p["macs"] * p["density"]).to_numpy()


class FlopsLinear:
    """Baseline: latency = a + b * nonzero MACs (the FLOPs proxy), fitted for relative error."""

    name = "linear-in-FLOPs"

    def fit(self, df: pd.DataFrame) -> FlopsLinear:
        """Least squares weighted by 1/latency^2, i.e. on relative errors."""
        from sklearn.linear_model import LinearRegression

        y = df[TARGET].to_numpy()
        fitted = LinearRegression().fit(_nnz_macs(df)[:, None] / 1e6, y, sample_weight=y**-2.0)
        self.coef_, self.intercept_ = np.asarray(fitted.coef_, np.float64), float(fitted.intercept_)
        return self

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted latency in ms (floored at 1 us so it stays positive)."""
        return np.maximum(_nnz_macs(df)[:, None] / 1e6 @ self.coef_ + self.intercept_, 1e-3)

    def state(self) -> State:
        return {"intercept": self.intercept_}, {"coef": self.coef_}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> FlopsLinear:
        model = cls()
        model.coef_, model.intercept_ = arrays["coef"].astype(np.float64), float(meta["intercept"])
        return model


AXES = ("cout", "cin", "density")


class _FamilyInterpolator:
    """Linear interpolation of one family's latency over (cout, cin, density), nearest outside the data."""

    def __init__(self, points: np.ndarray, values: np.ndarray):
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator, RegularGridInterpolator
        from scipy.spatial import QhullError

        self.axes = [j for j in range(points.shape[1]) if np.unique(points[:, j]).size > 1]
        pts = points[:, self.axes]
        grids = [np.unique(pts[:, j]) for j in range(pts.shape[1])]
        self.nearest = NearestNDInterpolator(pts, values) if self.axes else None
        self.value = float(values.mean())
        self.linear = None
        if self.axes and np.prod([g.size for g in grids]) == len(np.unique(pts, axis=0)) == len(pts):
            # A full grid, as JCW measures: trilinear (multilinear) interpolation.
            order = np.lexsort(pts.T[::-1])
            shape = [g.size for g in grids]
            self.linear = RegularGridInterpolator(grids, values[order].reshape(shape), bounds_error=False)
        elif len(self.axes) > 1 and len(pts) > len(self.axes):
            try:
                self.linear = LinearNDInterpolator(pts, values)
            except QhullError:
                self.linear = None
        elif len(self.axes) == 1 and len(pts) > 1:
            order = np.argsort(pts[:, 0])
            xs, ys = pts[order, 0], values[order]
            self.linear = lambda q: np.interp(q[:, 0], xs, ys, left=np.nan, right=np.nan)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if not self.axes:
            return np.full(len(points), self.value)
        pts = points[:, self.axes]
        out = self.linear(pts) if self.linear is not None else np.full(len(pts), np.nan)
        missing = np.isnan(out)
        out[missing] = self.nearest(pts[missing])
        return out


class JCWInterpolation:
    """Baseline: JCW's per-layer lookup table, linearly interpolated over (cout, cin, density).

    Trilinear on a full grid; on scattered samples (a random subset of a grid) piecewise-linear
    over their Delaunay cells; nearest measured point outside them. Families with no rows at all
    fall back to linear-in-FLOPs (JCW itself cannot predict them).
    """

    name = "JCW interpolation"

    def fit(self, df: pd.DataFrame) -> JCWInterpolation:
        """One interpolator per kernel family."""
        codes, keys = F.families(df)
        pts, y = df[list(AXES)].to_numpy(np.float64), df[TARGET].to_numpy()
        self.tables_ = {key: _FamilyInterpolator(pts[codes == c], y[codes == c]) for c, key in enumerate(keys)}
        self.fallback_ = FlopsLinear().fit(df)
        return self

    def state(self) -> None:
        """None: scipy's interpolators are rebuilt from the table (a JCW lookup table is its data)."""
        return None

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Interpolated latency in ms."""
        codes, keys = F.families(df)
        pts = df[list(AXES)].to_numpy(np.float64)
        out = self.fallback_.predict(df)
        for c, key in enumerate(keys):
            if key in self.tables_:
                rows = codes == c
                out[rows] = self.tables_[key](pts[rows])
        return out


def _raw_shape(df: pd.DataFrame) -> np.ndarray:
    """nn-Meter's conv features (HW, Cin, Cout, kernel, stride, FLOPs, params) plus groups and density."""
    p = F.physics(df)
    cols = [df[c].to_numpy() for c in ("h", "w", "cin", "cout", "k", "stride", "groups")]
    return np.column_stack([*cols, p["density"], p["macs"], p["weights"]]).astype(np.float64)


class _SavedTrees:
    """state() and from_state() of a model that is its `random_state` and one fitted tree ensemble, `trees_`."""

    trees_: TreeEnsemble

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def state(self) -> State:
        arrays: dict[str, np.ndarray] = {}
        return {"random_state": self.random_state, "trees": _trees_state(self.trees_, arrays)}, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]):
        model = cls(meta["random_state"])
        model.trees_ = _trees_from(meta["trees"], arrays)
        return model


class NNMeterForest(_SavedTrees):
    """Baseline: nn-Meter-style random forest on raw shape features (density added), latency in ms."""

    name = "nn-Meter RF"

    def fit(self, df: pd.DataFrame) -> NNMeterForest:
        """A 100-tree forest on the raw features."""
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=100, random_state=self.random_state, n_jobs=1)
        self.trees_ = TreeEnsemble.from_forest(forest.fit(_raw_shape(df), df[TARGET].to_numpy()))
        return self

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted latency in ms."""
        return self.trees_.predict(_raw_shape(df))


class RawBoosting(_SavedTrees):
    """Baseline: plain gradient boosting of log latency on the raw shape features (no physics)."""

    name = "GBM raw"

    def fit(self, df: pd.DataFrame) -> RawBoosting:
        """Default HistGradientBoosting on log latency."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        booster = HistGradientBoostingRegressor(random_state=self.random_state)
        self.trees_ = TreeEnsemble.from_hist_boosting(booster.fit(_raw_shape(df), np.log(df[TARGET].to_numpy())))
        return self

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Predicted latency in ms."""
        return np.exp(self.trees_.predict(_raw_shape(df)))



MODELS = {
    "physics": PhysicsModel,
    "flops-linear": FlopsLinear,
    "jcw-interp": JCWInterpolation,
    "nnmeter-rf": NNMeterForest,
    "gbm-raw": RawBoosting,
}
"""Regressors by the name `jcw fit --kind` takes; "physics" is the default."""
