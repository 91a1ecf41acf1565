"""LatencyModel on real phone data: accuracy on held-out rows, API paths agree, monotonicity, networks."""

from __future__ import annotations

import numpy as np
import pytest

from predictor import metrics
from predictor.latency import LatencyModel
from predictor.models import MODELS
from predictor.table import normalise
from profiler.errors import UserError
from profiler.kernel import KernelSpec


@pytest.fixture(scope="module")
def split(phone):
    test = phone.sample(frac=0.3, random_state=1)
    return phone.drop(test.index), test


@pytest.fixture(scope="module")
def model(split) -> LatencyModel:
    return LatencyModel.fit(split[0])


def test_default_model_is_accurate_on_held_out_rows(model, split):
    s = model.evaluate(split[1])
    assert s["within10_pct"] > 95
    assert s["n"] == len(split[1])


@pytest.mark.parametrize("kind", [k for k in MODELS if k != "physics"])
def test_baselines_fit_and_predict_positive_latencies(kind, split):
    train, test = split
    pred = LatencyModel.fit(train, kind).predict(test)
    assert pred.shape == (len(test),)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    assert metrics.within(test["latency_ms"].to_numpy(), pred, 0.5) > 0.5


def test_kernelspecs_and_frames_give_the_same_predictions(model, split):
    test = normalise(split[1], "test")
    specs = [KernelSpec.from_row(r) for r in test.to_dict("records")]
    np.testing.assert_allclose(model.predict(specs), model.predict(split[1]), rtol=1e-12)


def _sweep(base: KernelSpec, field: str, values) -> np.ndarray:
    return np.array([base.replace(**{field: v}) for v in values])


@pytest.mark.parametrize(
    "base",
    [
        KernelSpec("conv", 56, 56, 48, 40, k=3, density=0.55),  # a measured family
        KernelSpec("conv", 56, 56, 40, 96, k=1, stride=2, density=0.35),  # a measured family
        KernelSpec("conv", 14, 14, 200, 300, k=3, density=0.8),  # a shape never measured
        KernelSpec("conv", 56, 56, 48, 40, k=3),  # dense: channels only
        KernelSpec("conv", 14, 14, 200, 300, k=3),  # dense, never measured
    ],
)
def test_predictions_are_monotone_in_channels_and_in_density_among_sparse_kernels(model, base):
    """Dense kernels (density 1.0) are their own regime: monotonicity in density holds below 1.0."""
    sweeps = [("cin", range(4, 257, 4)), ("cout", range(4, 257, 4))]
    if base.is_sparse:
        sweeps.append(("density", np.linspace(0, 0.99, 100).tolist()))
    for field, values in sweeps:
        pred = model.predict(list(_sweep(base, field, values)))
        assert np.all(np.diff(pred) >= -1e-12 * pred[:-1]), field
        assert pred[-1] > pred[0], field


def test_network_latency_is_kernel_sum_plus_fitted_overhead(model):
    rng = np.random.default_rng(0)
    networks = [
        [KernelSpec("conv", 56, 56, int(c), int(c), k=3, density=0.5) for c in rng.integers(2, 17, n) * 4]
        for n in (2, 3, 5, 8)
    ]
    sums = np.array([model.predict(n).sum() for n in networks])
    assert model.predict_network(networks[0]) == pytest.approx(sums[0])
    measured = sums + 0.7 + 0.05 * np.array([len(n) for n in networks])
    overhead = model.fit_overhead(networks, measured)
    assert overhead.per_network_ms == pytest.approx(0.7, abs=1e-6)
    assert overhead.per_kernel_ms == pytest.approx(0.05, abs=1e-6)
    assert model.predict_network(networks[2]) == pytest.approx(measured[2])


def test_context_must_match_the_fitted_devices(split):
    train = split[0].assign(device=np.where(np.arange(len(split[0])) % 2, "pixel", "board"))
    two = LatencyModel.fit(train)
    spec = [KernelSpec("conv", 56, 56, 64, 64, k=3)]
    with pytest.raises(UserError, match="no data for"):
        two.predict(spec)
    assert two.predict(spec, device="pixel")[0] > 0


@pytest.mark.parametrize("seen", ["sparse", "dense"])
def test_a_regime_without_training_rows_is_priced_as_the_other(split, seen):
    """Fitted on sparse rows only (or dense only), the model still prices the other regime sensibly."""
    train, test = split
    dense_train, dense_test = train["density"] == 1.0, test["density"] == 1.0
    one = LatencyModel.fit(train[dense_train if seen == "dense" else ~dense_train])
    other = test[~dense_test if seen == "dense" else dense_test]
    pred = one.predict(other)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    assert metrics.within(other["latency_ms"].to_numpy(), pred, 0.5) > 0.5
