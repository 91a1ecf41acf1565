"""Dense and sparse kernels as separate regimes: a model fitted on real local-sparse measurements predicts the dense
CONV_2D path faster than the sparse FULLY_CONNECTED path where it was measured so.

The measurements are recorded (local_sparse_regimes.csv: the 24 kernels below, `profile_device` on local-sparse on
the 2-core x86 machine this project is developed on, 2026-12-04), so that what the model is fitted on does not
move with the machine's load: how the device behaves is the profiler tests' and benchmarks' to check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor import features as F
from predictor.latency import LatencyModel
from predictor.table import specs_frame
from profiler.kernel import KernelSpec, runs_chw
from profiler.runtimes.tflite import runs_as_sparse_fc
from profiler.store import ResultsStore

ONE_BY_ONE = [(32, 64), (32, 192), (96, 64), (96, 192)]
DENSITIES = (0.3, 0.6, 0.9, 1.0)
RECORDED = Path(__file__).with_name("local_sparse_regimes.csv")


@pytest.fixture(scope="module")
def measured() -> pd.DataFrame:
    """24 kernels measured on local-sparse: 1x1 convs (sparse FC vs dense conv) and 3x3 convs (densified)."""
    store = ResultsStore(RECORDED)
    specs = [
        KernelSpec("conv", 28, 28, cin, cout, density=d, block="4x1") for cin, cout in ONE_BY_ONE for d in DENSITIES
    ] + [KernelSpec("conv", 14, 14, c, c, k=3, density=d, block="4x1") for c in (32, 64) for d in DENSITIES]
    assert store.measured() == {s.key() for s in specs}
    assert set(store.table.device) == {"local-sparse"} and set(store.table.runtime) == {"builtin"}
    return store.table


@pytest.fixture(scope="module")
def model(measured) -> LatencyModel:
    return LatencyModel.fit(measured)


def _latency(table: pd.DataFrame, cin: int, cout: int, density: float) -> float:
    row = table[(table.k == 1) & (table.cin == cin) & (table.cout == cout) & (table.density == density)]
    return float(row.latency_ms.iloc[0])


@pytest.mark.parametrize(("cin", "cout"), ONE_BY_ONE)
def test_dense_path_is_predicted_faster_where_measured_faster(measured, model, cin, cout):
    assert _latency(measured, cin, cout, 1.0) < _latency(measured, cin, cout, 0.9)  # what the device measured
    sparse, dense = model.predict([KernelSpec("conv", 28, 28, cin, cout, density=d, block="4x1") for d in (0.9, 1.0)])
    assert dense < sparse


def test_unmeasured_1x1_keeps_both_regimes(measured, model):
    """Between the measured shapes: monotone in density below 1.0, and the dense path faster than at 0.9."""
    densities = [*np.linspace(0.0, 0.99, 34).tolist(), 1.0]
    pred = model.predict([KernelSpec("conv", 28, 28, 64, 128, density=d, block="4x1") for d in densities])
    assert np.all(np.diff(pred[:-1]) >= -1e-12 * pred[:-2])
    assert pred[-1] < np.interp(0.9, densities[:-1], pred[:-1])


def test_densified_kernels_run_in_the_dense_regime(model):
    """On the built-in kernels a sparse 3x3 conv is densified at load: its latency does not depend on density."""
    pred = model.predict([KernelSpec("conv", 14, 14, 48, 48, k=3, density=d, block="4x1") for d in (0.2, 0.7, 1.0)])
    np.testing.assert_allclose(pred, pred[0], rtol=1e-12)


def test_run_density_follows_the_lowering():
    specs = [
        KernelSpec(op, 14, 14, 16, 16 if op == "dwconv" else 32, k=k, stride=s, groups=16 if op == "dwconv" else 1,
                   density=d)
        for op in ("conv", "dwconv")
        for k in (1, 3)
        for s in (1, 2)
        for d in ((1.0,) if op == "dwconv" else (0.0, 0.5, 1.0))
    ] + [KernelSpec("fc", 1, 1, 64, 10, k=1, density=d) for d in (0.5, 1.0)]
    specs += [s.replace(layout="nchw") for s in specs if runs_chw(s.op, s.k, s.stride)]
    df = specs_frame(specs)
    for runtime in ("builtin", "xnnpack", "onnx", ""):
        runs_at = F.run_density(df.assign(runtime=runtime))
        for spec, r in zip(specs, runs_at, strict=True):
            if runtime == "builtin":
                expected = spec.density if runs_as_sparse_fc(spec) else 1.0
            elif runtime == "xnnpack":  # dense NHWC unless inside a cluster XNNPACK runs sparse (nchw)
                expected = spec.density if spec.layout == "nchw" else 1.0
            else:
                expected = 1.0 if runtime == "onnx" else spec.density
            assert r == expected, (runtime, spec)
