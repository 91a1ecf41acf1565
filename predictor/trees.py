"""Fitted decision-tree ensembles as plain arrays, predicted with numpy exactly as scikit-learn predicts them.

A latency model file must load without running code from it or refitting (predictor.persist): the trees of a fitted
HistGradientBoostingRegressor or RandomForestRegressor are copied out into flat numeric arrays (every tree's nodes
one after another), which save to .npz and predict bit for bit what the scikit-learn model predicts: the same
preprocessing (a boosting model's categorical columns first, ordinal-encoded by the categories seen in fit; a forest's
inputs as float32), the same branch rules (missing values, categorical bitsets) and the trees summed in their order.
Trees of at most 64 leaves (a boosting model's: 31 by default) are predicted by leaf masks rather than walked node by
node (_LeafMasks): the physics model's 100 trees price 13,440 kernels in ~35 ms instead of ~190 ms.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ARRAYS = ("roots", "feature", "threshold", "left", "right", "missing_left", "is_leaf", "value", "is_categorical",
          "bitset", "left_bitsets", "known_bitsets", "known_row", "order", "categories", "category_offsets",
          "baseline")
"""The arrays a TreeEnsemble is made of, in its .npz."""


class TreeEnsemble:
    """Trees over the columns of a float matrix: `roots` index each tree's first node in the node arrays (feature,
    threshold, left/right children, where missing values go, leaf flag and value, categorical split and its row in
    `left_bitsets`). Inputs are reordered by `order` and, for the first len(category_offsets) - 1 columns, replaced by
    their index among `categories` (NaN when unseen). The prediction is `baseline` plus the trees' leaf values, summed
    tree by tree, divided by the number of trees when `average` (a forest), computed on float32 inputs when `float32`.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], average: bool, float32: bool):
        missing = [name for name in ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"tree arrays missing: {', '.join(missing)}")
        self.arrays = {name: np.asarray(arrays[name]) for name in ARRAYS}
        self.average, self.float32 = bool(average), bool(float32)
        a = self.arrays
        nodes = len(a["value"])
        if any(len(a[name]) != nodes for name in ("feature", "threshold", "left", "right", "missing_left", "is_leaf",
                                                  "is_categorical", "bitset")):
            raise ValueError("tree node arrays differ in length")
        inner = ~a["is_leaf"].astype(bool)
        if not (np.all((a["roots"] >= 0) & (a["roots"] < nodes)) and np.all(a["left"][inner] < nodes)
                and np.all(a["right"][inner] < nodes) and np.all(a["left"][inner] >= 0)
                and np.all(a["right"][inner] >= 0)):
            raise ValueError("tree node indices out of range")
        _check_structure(a, inner)
        leaves = np.bincount(_tree_of(a), weights=~inner)
        self._masks = _LeafMasks(a, inner) if leaves.max() <= 64 else None

    @classmethod
    def from_hist_boosting(cls, model) -> TreeEnsemble:
        """The trees of a fitted sklearn HistGradientBoostingRegressor (one tree per iteration)."""
        trees = [predictors[0] for predictors in model._predictors]
        known, known_row = model._bin_mapper.make_known_categories_bitsets()
        arrays = _concatenate([t.nodes for t in trees], [t.raw_left_cat_bitsets for t in trees], hist=True)
        categorical = np.zeros(model.n_features_in_, bool) if model.is_categorical_ is None else model.is_categorical_
        encoder = model._preprocessor.named_transformers_["encoder"] if model._preprocessor is not None else None
        categories = [] if encoder is None else [np.asarray(c, np.float64) for c in encoder.categories_]
        arrays.update(known_bitsets=np.asarray(known, np.uint32).reshape(-1, 8),
                      known_row=np.asarray(known_row, np.int64),
                      order=np.r_[np.flatnonzero(categorical), np.flatnonzero(~categorical)].astype(np.int64),
                      categories=np.concatenate([np.zeros(0), *categories]),
                      category_offsets=np.cumsum([0, *map(len, categories)]).astype(np.int64),
                      baseline=np.asarray(model._baseline_prediction, np.float64).reshape(1))
        return cls(arrays, average=False, float32=False)

    @classmethod
    def from_forest(cls, model) -> TreeEnsemble:
        """The trees of a fitted sklearn RandomForestRegressor (single output)."""
        nodes = []
        for estimator in model.estimators_:
            t = estimator.tree_
            leaf = t.children_left == -1
            nodes.append({"value": t.value[:, 0, 0], "feature_idx": t.feature, "num_threshold": t.threshold,
                          "missing_go_to_left": t.missing_go_to_left, "left": np.where(leaf, 0, t.children_left),
                          "right": np.where(leaf, 0, t.children_right), "is_leaf": leaf,
                          "is_categorical": np.zeros(len(leaf), bool), "bitset_idx": np.zeros(len(leaf), np.int64)})
        arrays = _concatenate(nodes, [], hist=False)
        arrays.update(known_bitsets=np.zeros((0, 8), np.uint32), known_row=np.zeros(model.n_features_in_, np.int64),
                      order=np.arange(model.n_features_in_, dtype=np.int64), categories=np.zeros(0),
                      category_offsets=np.zeros(1, np.int64), baseline=np.zeros(1))
        return cls(arrays, average=True, float32=True)

    def predict(self, X) -> np.ndarray:
        """The ensemble's prediction for each row of X (a frame or matrix with the columns it was fitted on)."""
        a = self.arrays
        X = np.asarray(X, np.float64)[:, a["order"]]
        offsets = a["category_offsets"]
        for j in range(len(offsets) - 1):
            known = a["categories"][offsets[j]:offsets[j + 1]]
            known = known[~np.isnan(known)]
            at = np.minimum(np.searchsorted(known, X[:, j]), max(len(known) - 1, 0))
            found = (known[at] == X[:, j]) if len(known) else np.zeros(len(X), bool)
            X[:, j] = np.where(found, at, np.nan)
        if self.float32:
            X = X.astype(np.float32).astype(np.float64)
        leaves = self._masks.leaf_values(X) if self._masks is not None else self._walk(X)
        total = np.zeros(len(X))
        total += a["baseline"][0]
        for values in leaves:
            total += values
        return total / len(leaves) if self.average else total

    def _walk(self, X: np.ndarray) -> np.ndarray:
        """The leaf value each tree gives each row of X (trees x rows), walking all (tree, row) pairs down together."""
        a = self.arrays
        n, trees = len(X), len(a["roots"])
        node = np.repeat(a["roots"].astype(np.int64), n)
        row = np.tile(np.arange(n), trees)
        live = np.flatnonzero(~a["is_leaf"][node].astype(bool))
        while live.size:
            at = node[live]
            left = self._goes_left(at, X[row[live], a["feature"][at]])
            node[live] = np.where(left, a["left"][at], a["right"][at])
            live = live[~a["is_leaf"][node[live]].astype(bool)]
        return a["value"][node].reshape(trees, n)

    def _goes_left(self, at: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether each (node, value) pair branches left, by scikit-learn's rules: missing values as the node says,
        categorical values left when in the node's set, else right when a category seen in fit, else as missing."""
        a = self.arrays
        missing_left = a["missing_left"][at].astype(bool)
        left = np.where(np.isnan(x), missing_left, x <= a["threshold"][at])
        categorical = a["is_categorical"][at].astype(bool) & ~np.isnan(x)
        if categorical.any():
            c_at, c_x, c_missing = at[categorical], x[categorical], missing_left[categorical]
            code = np.where(c_x < 0, 0, c_x).astype(np.int64) & 0xFF  # scikit-learn casts to uint8
            in_left = _in_bitset(a["left_bitsets"], a["bitset"][c_at], code)
            in_known = _in_bitset(a["known_bitsets"], a["known_row"][a["feature"][c_at]], code)
            left[categorical] = np.where(c_x < 0, c_missing, np.where(in_left, True, np.where(in_known, False,
                                                                                           c_missing)))
        return left


def _tree_of(a: Mapping[str, np.ndarray]) -> np.ndarray:
    """The tree of each node (a tree's nodes run from its root to the next root)."""
    return np.repeat(np.arange(len(a["roots"])), np.diff(np.r_[a["roots"], len(a["value"])]))


def _check_structure(a: Mapping[str, np.ndarray], inner: np.ndarray) -> None:
    """Refuse arrays that are not trees as scikit-learn stores them (roots from 0 up; each node but a root the child of
    one node before it in its tree) or whose splits name columns, categories or bitsets that are not there."""
    nodes, columns = len(a["value"]), len(a["order"])
    roots, parents = a["roots"], np.flatnonzero(inner)
    if len(roots) == 0 or roots[0] != 0 or np.any(np.diff(roots) <= 0):
        raise ValueError("tree roots must start at node 0 and increase")
    children, parent = np.r_[a["left"][inner], a["right"][inner]], np.r_[parents, parents]
    tree, is_root = _tree_of(a), np.isin(np.arange(nodes), roots)
    if not (np.all(children > parent) and np.array_equal(tree[children], tree[parent])
            and np.array_equal(np.bincount(children, minlength=nodes), (~is_root).astype(np.int64))):
        raise ValueError("tree nodes do not form trees")
    categorical = inner & a["is_categorical"].astype(bool)
    offsets = a["category_offsets"]
    if not (np.array_equal(np.sort(a["order"]), np.arange(columns)) and np.all(a["feature"][inner] >= 0)
            and np.all(a["feature"][inner] < columns) and len(a["known_row"]) == columns
            and np.all((a["known_row"] >= 0) & (a["known_row"] < max(len(a["known_bitsets"]), 1)))
            and np.all((a["bitset"][categorical] >= 0) & (a["bitset"][categorical] < len(a["left_bitsets"])))
            and len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == len(a["categories"])
            and np.all(np.diff(offsets) >= 0) and len(offsets) - 1 <= columns
            and a["left_bitsets"].shape[1:] == a["known_bitsets"].shape[1:] == (8,) and len(a["baseline"]) == 1):
        raise ValueError("tree splits name columns, categories or bitsets out of range")


class _LeafMasks:
    """Trees of at most 64 leaves predicted without walking them (QuickScorer: Lucchese et al., SIGIR 2015).

    Each tree's leaves are numbered left to right, bit i of a mask standing for leaf i. A split a row fails (goes
    right at) rules out the leaves of its left subtree, and the leaf the row reaches is the leftmost one that no failed
    split rules out. The numeric splits on a column with one missing-value direction that a row fails are those whose
    threshold is below its value: a prefix of them sorted by threshold, so their masks ANDed per tree are one row of a
    table, found by a binary search. A column's categorical splits are tabled by category code likewise.
    """

    MISSING_CODE = 256
    """The state of a missing or negative category (codes are 0..255: scikit-learn casts them to uint8)."""

    def __init__(self, a: Mapping[str, np.ndarray], inner: np.ndarray):
        nodes, trees = len(a["value"]), len(a["roots"])
        tree, left, right = _tree_of(a), a["left"].tolist(), a["right"].tolist()
        count = (~inner).astype(np.int64).tolist()  # leaves under each node
        for n in np.flatnonzero(inner)[::-1].tolist():  # children come after their parent
            count[n] = count[left[n]] + count[right[n]]
        first = [0] * nodes  # the number of the node's leftmost leaf
        for n in np.flatnonzero(inner).tolist():
            first[left[n]], first[right[n]] = first[n], first[n] + count[left[n]]
        self.dtype = np.uint32 if max(count[r] for r in a["roots"].tolist()) <= 32 else np.uint64
        splits = np.flatnonzero(inner)
        below, start = np.array(count)[a["left"][splits]], np.array(first)[a["left"][splits]]
        left_leaves = ((np.uint64(1) << below.astype(np.uint64)) - np.uint64(1)) << start.astype(np.uint64)
        masks = (~left_leaves).astype(self.dtype)  # the leaves left when the split fails
        self.values = np.zeros((trees, np.iinfo(self.dtype).bits))  # tree x leaf number
        is_leaf = ~inner
        self.values[tree[is_leaf], np.array(first)[is_leaf]] = a["value"][is_leaf]
        self.tests: list[tuple[int, np.ndarray | None, int, np.ndarray]] = []
        """(column, sorted thresholds or None for categorical splits, the state of a missing value, table)"""
        feature, missing_left = a["feature"][splits], a["missing_left"][splits].astype(bool)
        categorical = a["is_categorical"][splits].astype(bool)
        numeric = zip(feature[~categorical].tolist(), missing_left[~categorical].tolist(), strict=True)
        for column, goes_left in sorted(set(numeric)):
            on = np.flatnonzero(~categorical & (feature == column) & (missing_left == goes_left))
            on = on[np.argsort(a["threshold"][splits[on]], kind="stable")]
            table = np.full((len(on) + 1, trees), np.iinfo(self.dtype).max, self.dtype)
            table[np.arange(1, len(on) + 1), tree[splits[on]]] = masks[on]
            self.tests.append((column, a["threshold"][splits[on]], 0 if goes_left else len(on),
                               np.bitwise_and.accumulate(table, axis=0)))
        codes = np.arange(self.MISSING_CODE)
        for column in sorted(set(feature[categorical].tolist())):
            on = np.flatnonzero(categorical & (feature == column))
            in_left = _in_bitset(a["left_bitsets"], np.repeat(a["bitset"][splits[on]], len(codes)),
                                 np.tile(codes, len(on))).reshape(len(on), -1)
            known = _in_bitset(a["known_bitsets"], np.full(len(codes), a["known_row"][column]), codes)
            fails = np.c_[~(in_left | (~known & missing_left[on, None])), ~missing_left[on]]  # split x state
            table = np.full((self.MISSING_CODE + 1, trees), np.iinfo(self.dtype).max, self.dtype)
            split, state = np.nonzero(fails)
            np.bitwise_and.at(table, (state, tree[splits[on]][split]), masks[on][split])
            self.tests.append((column, None, self.MISSING_CODE, table))

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """The leaf value each tree gives each row of X (trees x rows)."""
        alive = np.full((len(X), len(self.values)), np.iinfo(self.dtype).max, self.dtype)  # leaves not ruled out
        for column, thresholds, missing, table in self.tests:
            x = X[:, column]
            missing_rows = np.isnan(x)
            if thresholds is None:  # a category code, cast to uint8 as scikit-learn does; a negative one is missing
                missing_rows |= x < 0
                state = np.where(missing_rows, 0, x).astype(np.int64) & 0xFF
            else:
                state = np.searchsorted(thresholds, x)  # the number of splits the row fails: thresholds below x
            state[missing_rows] = missing
            np.bitwise_and(alive, table[state], out=alive)
        lowest = alive & (~alive + self.dtype(1))  # the lowest bit set: the leftmost leaf alive
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # its number (a power of two converts exactly)
        return self.values[np.arange(len(self.values))[:, None], leaf.T]


def _in_bitset(bitsets: np.ndarray, rows: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Whether `code` is set in row `rows` of 256-bit sets stored as 8 uint32 words."""
    if len(bitsets) == 0:
        return np.zeros(len(code), bool)
    return ((bitsets[rows, code // 32] >> (code % 32).astype(np.uint32)) & 1).astype(bool)


def _concatenate(nodes: list, bitsets: list[np.ndarray], hist: bool) -> dict[str, np.ndarray]:
    """Every tree's node records one after another, children and bitset rows offset to global indices."""
    sizes = [len(n["value"]) for n in nodes]
    starts = np.cumsum([0, *sizes])[:-1]
    rows = np.cumsum([0, *(len(b) for b in bitsets)])[:-1] if hist else np.zeros(len(nodes), np.int64)

    def joined(field: str, dtype, shift=None) -> np.ndarray:
        parts = [np.asarray(n[field]).astype(dtype) for n in nodes]
        if shift is not None:
            parts = [part + shift[i] for i, part in enumerate(parts)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    leaf = joined("is_leaf", bool)
    arrays = {"roots": starts.astype(np.int64), "feature": joined("feature_idx", np.int64),
              "threshold": joined("num_threshold", np.float64), "left": joined("left", np.int64, starts),
              "right": joined("right", np.int64, starts), "missing_left": joined("missing_go_to_left", bool),
              "is_leaf": leaf, "value": joined("value", np.float64), "is_categorical": joined("is_categorical", bool),
              "bitset": joined("bitset_idx", np.int64, rows),
              "left_bitsets": np.concatenate([np.zeros((0, 8), np.uint32), *bitsets]).astype(np.uint32)}
    arrays["left"][leaf] = arrays["right"][leaf] = 0  # leaves have no children
    return arrays
