"""Hand-built TFLite graphs for XNNPACK's sparse-inference rules: a 3x3/2 stem entering a cluster, a 1x1 conv with a
chosen number of zero weights, and what follows; shared by test_xnnpack.py and test_xnnpack_observed.py."""

import numpy as np

from profiler.tflite_writer import _OPT, OP, ReducerOptions, TFLiteModel


def weights_with_zeros(cout: int, cin: int, zeros: int) -> np.ndarray:
    """A (cout, 1, 1, cin) OHWI weight with exactly `zeros` zero entries."""
    w = np.random.default_rng(0).uniform(0.5, 1.0, cout * cin).astype(np.float32)
    w[:zeros] = 0.0
    return w.reshape(cout, 1, 1, cin)


def stem(m: TFLiteModel, x: int, name: str = "stem", padding: str = "explicit") -> int:
    """A 3x3 stride-2 conv from 3 to 20 channels: XNNPACK's entry with explicit padding."""
    n, h, w, _ = m.shape(x)
    weight, bias = m.constant(f"{name}/w", np.ones((20, 3, 3, 3), np.float32)), m.constant(f"{name}/b", np.zeros(20))
    if padding == "explicit":
        x = m.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], f"{name}/pad")
    return m.conv2d(x, weight, bias, 2, "valid" if padding == "explicit" else "same", "relu", (n, h // 2, w // 2, 20),
                    name)


def pointwise(m: TFLiteModel, x: int, zeros: int, name: str = "pw", stored: str = "sparse", cout: int = 15) -> int:
    """A 1x1 conv cin -> cout with `zeros` zero weights, stored sparse behind DENSIFY or dense."""
    n, h, w, cin = m.shape(x)
    array = weights_with_zeros(cout, cin, zeros)
    weight = m.densify(m.sparse_constant(f"{name}/w", array), f"{name}/w/dense") if stored == "sparse" else \
        m.constant(f"{name}/w", array)
    return m.conv2d(x, weight, m.constant(f"{name}/b", np.zeros(cout, np.float32)), 1, "valid", "none",
                    (n, h, w, cout), name)


def graph(zeros=240, stored="sparse", inside=None, leak=False, end="mean", stem_padding="explicit",
          stem_cin=3) -> TFLiteModel:
    """input -> 3x3/2 stem -> 1x1 conv (20 -> 15, `zeros` of its 300 weights zero) -> [inside op] -> `end`."""
    m = TFLiteModel()
    x = m.input("input", (1, 16, 16, stem_cin))
    if stem_cin == 3:
        x = stem(m, x, padding=stem_padding)
    else:
        x = m.conv2d(m.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], "stem/pad"),
                     m.constant("stem/w", np.ones((20, 3, 3, stem_cin), np.float32)),
                     m.constant("stem/b", np.zeros(20, np.float32)), 2, "valid", "relu", (1, 8, 8, 20), "stem")
    y = pointwise(m, x, zeros, stored=stored)
    if inside == "maxpool":
        y = m.max_pool2d(y, 2, 2, (1, 4, 4, 15), "pool2")
    elif inside is not None:
        y = m.activation(y, inside, "act")
    outputs = [y] if leak else []
    if end == "mean":
        out = m.mean(y, [1, 2], name="mean")
    elif end == "mean3":
        out = m.mean(y, [3], name="mean")
    elif end == "sum":
        axes = m.constant("sum/axes", np.array([1, 2], np.int32))
        out = m._op(OP.SUM, [y, axes], (1, 15), _OPT.ReducerOptions, (ReducerOptions, {"KeepDims": False}), "sum")
    else:
        out = m.reshape(y, (1, int(np.prod(m.shape(y)))), "flat")
    m.outputs = [out, *outputs]
    return m


def pool_then(activation: str) -> TFLiteModel:
    m = TFLiteModel()
    y = pointwise(m, stem(m, m.input("input", (1, 16, 16, 3))), 240)
    y = m.activation(m.max_pool2d(y, 2, 2, (1, 4, 4, 15), "pool"), activation, "act")
    m.outputs = [m.mean(y, [1, 2], name="mean")]
    return m
