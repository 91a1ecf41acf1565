"""Accuracy estimates on worker processes: real spawned processes scoring a briefly trained MobileNetV2 on MNIST
give bit-identical estimates, and the same fronts, with one worker or two."""

import multiprocessing
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from profiler.errors import UserError
from pruner.accuracy.estimate import proxy_data, proxy_estimator, user_estimator
from pruner.accuracy.supernet import SupernetEstimator, build_supernet
from pruner.data.mnist import load_mnist_sized
from pruner.model.graph import analyze
from pruner.model.reference import MobileNetV2
from pruner.search.engine import SearchConfig
from pruner.search.fronts import run_fronts
from pruner.search.space import SearchSpace


@pytest.fixture(scope="module")
def trained():
    """MobileNetV2 (width 0.35, 32x32, 1 channel) after 40 Adam steps on MNIST, its space and proxy data."""
    mnist = load_mnist_sized(32, train_limit=2560)
    torch.manual_seed(0)
    model = MobileNetV2(10, 0.35, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in mnist["train"].loader(64, shuffle=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    data = proxy_data(mnist["train"].loader(64, shuffle=True, seed=1), mnist["val"].loader(100, limit=200), 2)
    return model, SearchSpace(analyze(model, (1, 1, 32, 32))), data


def process_id(model: nn.Module) -> float:
    """A user score telling which process scored the candidate."""
    return float(os.getpid())


def test_candidates_are_scored_in_the_worker_processes_once_each(trained):
    model, space, _ = trained
    X = np.vstack([space.full(), space.lower, space.sample(np.random.default_rng(0), 4)])
    X = np.vstack([X, X[2:4]])  # revisits within the batch
    where = user_estimator(model, space, process_id, workers=2)
    try:
        pids = where(X)[:, 0]
        assert np.array_equal(where(X[::-1])[:, 0], pids[::-1])  # cached: the same answers, no new work
        workers = {p.pid for p in multiprocessing.active_children()}
    finally:
        where.close()
    assert len(workers) >= 2 and set(pids) <= workers and np.array_equal(pids[6:], pids[2:4])


def test_a_local_function_cannot_go_to_workers_and_says_so(trained):
    model, space, _ = trained
    estimator = user_estimator(model, space, lambda m: 0.0, workers=2)
    with pytest.raises(UserError, match="cannot send the estimator to worker processes"):
        estimator(space.lower[None])


def test_the_same_seed_gives_the_same_fronts_with_one_or_two_workers(trained, latency_of, tmp_path):
    model, space, data = trained
    fronts = {}
    for workers in (1, 2):
        estimator = proxy_estimator(model, space, data, workers=workers)
        try:
            fronts[workers] = run_fronts(space, latency_of(space), estimator, tmp_path / str(workers),
                                         SearchConfig(n_gen=2, pop_size=8, seed=3), progress=False,
                                         methods=("joint", "channel-only"))
        finally:
            estimator.close()
    assert fronts[1].hypervolume == fronts[2].hypervolume
    for method, table in fronts[1].fronts.items():
        pd.testing.assert_frame_equal(table, fronts[2].fronts[method], check_exact=True)
    assert len(fronts[1].fronts["joint"]) > 1


def test_supernet_workers_score_like_one_process_and_see_the_retrained_weights(trained):
    model, space, data = trained
    mnist = load_mnist_sized(32, train_limit=640)
    X = np.vstack([space.full(), space.lower, space.sample(np.random.default_rng(1), 2)])
    estimates = {}
    for workers in (1, 2):
        estimator = SupernetEstimator(build_supernet(model, space), data, mnist["train"].loader(64, True),
                                      workers=workers)
        try:
            torch.manual_seed(0)  # the classifier's dropout during training
            estimator.train(2)
            first = estimator(X)
            estimator.retrain(X, 2)
            estimates[workers] = first, estimator(X)
        finally:
            estimator.close()
    assert all(np.array_equal(a, b) for a, b in zip(estimates[1], estimates[2], strict=True))
    assert not np.array_equal(*estimates[2])  # the restarted workers scored the retrained weights
