"""Accuracy estimators on real MNIST and a briefly trained MobileNetV2: proxy, supernet, user function."""

import numpy as np
import pytest
import torch
from torch import nn

import pruner.accuracy.estimate
from pruner.accuracy.estimate import as_loss_fn, mnist_proxy_data, proxy_estimator, user_estimator
from pruner.accuracy.supernet import SupernetEstimator, build_supernet, sandwich, train_step
from pruner.accuracy.train import evaluate, recalibrate_bn
from pruner.model.apply import apply_candidate, layer_densities
from pruner.model.graph import KINDS, analyze, measured_channels
from pruner.model.reference import MobileNetV2, build_model
from pruner.search.space import SearchSpace


@pytest.fixture(scope="module")
def trained(mnist):
    """MobileNetV2 (width 0.5, 1 channel) after 100 Adam steps on MNIST (~60% top-1), and its search space."""
    torch.manual_seed(0)
    model = MobileNetV2(num_classes=10, width_mult=0.5, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for x, y in mnist["train"].loader(32, shuffle=True, limit=3200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    return model, SearchSpace(analyze(model, (1, 1, 28, 28)))


@pytest.fixture(scope="module")
def data(mnist):
    return mnist_proxy_data(mnist, val_size=1000)


def ends(space: SearchSpace) -> np.ndarray:
    """The full model and the most heavily pruned candidate, as two rows."""
    return np.stack([space.full(), space.lower])


def test_proxy_ranks_the_pruned_model_below_the_full_one(trained, data):
    model, space = trained
    (full_loss, full_top1), (low_loss, low_top1) = proxy_estimator(model, space, data)(ends(space))
    assert low_loss > full_loss and full_top1 > low_top1
    assert full_top1 > 0.4  # the trained model, scored on 1000 held-out digits


def test_proxy_is_deterministic_and_caches_by_gene_vector(trained, data, monkeypatch):
    model, space = trained
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[2])
        return apply_candidate(*args, **kwargs)

    monkeypatch.setattr(pruner.accuracy.estimate, "apply_candidate", counting)
    X = np.vstack([space.sample(np.random.default_rng(1), 2), space.full()])
    X = np.vstack([X, X[:1]])  # a revisit within the batch
    estimator = proxy_estimator(model, space, data)
    first = estimator(X)
    assert len(calls) == 3 and first.shape == (4, 2) and np.array_equal(first[0], first[3])
    again = estimator(X[::-1])
    assert len(calls) == 3 and np.array_equal(again, first[::-1])
    assert np.array_equal(proxy_estimator(model, space, data)(X), first)  # a fresh estimator agrees exactly
    assert np.array_equal(proxy_estimator(model, space, data, device=torch.device("cpu"))(X), first)
    assert np.array_equal(as_loss_fn(estimator)(X), first[:, 0])


def test_full_subnet_equals_the_model_and_slices_keep_the_most_important_channels(trained, mnist):
    model, space = trained
    images = mnist["val"].x[:64]
    supernet = build_supernet(model, space)
    recalibrate_bn(supernet.subnet(space.full()), [(images, None)], 1)  # a sub-network's own statistics...
    with torch.no_grad():
        reference = model(images)
        assert torch.allclose(supernet.subnet(space.full()).eval()(images), reference, atol=1e-4)  # ...not shared
        assert any(not torch.equal(a, b) for a, b in zip(supernet.model.parameters(), model.parameters(), strict=True))

        # narrow one residual group alone: apply_candidate keeps its top-L1 channels, and so must the slice
        loose = SearchSpace(space.graph, width_bounds=dict.fromkeys(KINDS, 0.1))
        group = max(space.graph.groups, key=lambda g: len(g.layers))
        x = loose.full()
        x[group.index] = loose.lower[group.index]
        sliced = build_supernet(model, loose).subnet(x).eval()
        assert measured_channels(sliced, [group.layers[0]])[group.layers[0]][1] < group.channels
        expected = apply_candidate(model, loose, x).eval()(images)
        assert torch.allclose(sliced(images), expected, atol=1e-4)
        assert not torch.allclose(expected, reference, atol=1e-2)

    candidate = space.sample(np.random.default_rng(2), 1)[0]
    sub = supernet.subnet(candidate)
    names = [layer.name for layer in space.graph.layers]
    assert measured_channels(sub, names) == space.graph.layer_channels(space.channels(candidate))
    measured = layer_densities(sub)
    for name, density in space.densities(candidate).items():
        assert measured[name] == pytest.approx(density, abs=0.02)


def test_sandwich_step_trains_shared_weights_through_the_masks_only(trained, mnist):
    model, space = trained
    supernet = build_supernet(model, space)
    images, labels = next(iter(mnist["train"].loader(64, shuffle=True, seed=3)))
    rng = np.random.default_rng(3)
    params = dict(supernet.model.named_parameters())

    candidates = sandwich(space, rng)
    assert np.array_equal(candidates[0], space.full()) and np.array_equal(candidates[1], space.lower)
    before = {n: p.detach().clone() for n, p in params.items()}
    train_step(supernet, images, labels, candidates, torch.optim.SGD(params.values(), lr=0.01))
    assert any(not torch.equal(before[n], p) for n, p in params.items())
    for x in candidates:  # every sub-network still has its density: masks' zeros are not filled in
        sub, masks = supernet.subnet(x), supernet.masks(x)
        modules = dict(sub.named_modules())
        for name, mask in masks.items():
            assert torch.all(modules[name].weight[~mask] == 0) and torch.all(modules[name].weight[mask] != 0)

    # without the largest candidate, only weights some candidate keeps (sliced and unmasked) may move
    students = np.stack([space.sample(rng, 1)[0], space.lower])
    used = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    for x in students:
        masks = supernet.masks(x)
        for name, param in supernet.subnet(x, masks).named_parameters():
            region = tuple(slice(0, s) for s in param.shape)
            layer = name.removesuffix(".weight")
            used[name][region] |= masks[layer] if name.endswith(".weight") and layer in masks else True
    before = {n: p.detach().clone() for n, p in params.items()}
    train_step(supernet, images, labels, students, torch.optim.SGD(params.values(), lr=0.01))
    for name, param in params.items():
        assert torch.equal(param[~used[name]], before[name][~used[name]]), name
    weights = [n for n in params if n.endswith(".weight") and not used[n].all()]
    assert weights and any(not torch.equal(params[n][used[n]], before[n][used[n]]) for n in weights)


def test_supernet_estimator_ranks_pruned_below_full_and_retrains_on_the_population(trained, data, mnist):
    model, space = trained
    estimator = SupernetEstimator(build_supernet(model, space), data, mnist["train"].loader(64, True, limit=2000))
    losses = estimator.train(3)
    assert len(losses) == 3 and all(np.isfinite(losses))
    X = ends(space)
    first = estimator(X)
    assert first[1, 0] > first[0, 0] and first[0, 1] > first[1, 1]
    assert np.array_equal(estimator(X), first) and len(estimator.estimator.cache) == 2
    estimator.retrain(X, 1)
    assert not estimator.estimator.cache
    assert not np.array_equal(estimator(X), first)  # new shared weights, new estimates


def test_a_user_function_of_the_pruned_model_plugs_in(trained, data):
    model, space = trained
    seen = []

    def my_eval(pruned: nn.Module) -> float:
        seen.append(measured_channels(pruned, [space.graph.layers[-1].name]))
        return evaluate(pruned, data.held_out).loss

    estimator = user_estimator(model, space, my_eval, calibration=data.calibration)
    out = estimator(np.vstack([ends(space), space.lower]))
    assert len(seen) == 2 and seen[0] != seen[1]
    assert out[1, 0] > out[0, 0] and out[1, 0] == out[2, 0] and np.isnan(out[:, 1]).all()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v1"])
def test_supernet_slices_other_reference_models(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, width_mult=0.25).eval()
    space = SearchSpace(analyze(model, (1, 3, 32, 32)))
    supernet = build_supernet(model, space)
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(supernet.subnet(space.full())(images), model(images), atol=1e-4)
        candidate = space.sample(np.random.default_rng(0), 1)[0]
        sub = supernet.subnet(candidate)
        assert sub(images).shape == (8, 10)
    names = [layer.name for layer in space.graph.layers]
    assert measured_channels(sub, names) == space.graph.layer_channels(space.channels(candidate))
