"""The command line as the tests call it, and a user's own files: a model in a Python file of its own (a
MobileNetV3-style net: hardswish, a 5x5 depthwise conv, squeeze-and-excite, a residual add; 3 input channels, 5
classes), its weights in a state_dict file and an ImageFolder of PNG files."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jcw.cli import main

MODEL_FILE = '''
import torch
from torch import nn


def conv_bn(cin, cout, k=1, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(s))))


class TinyV3(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish())
        self.expand = conv_bn(16, 48, act=nn.Hardswish())
        self.dw = conv_bn(48, 48, 5, 1, groups=48, act=nn.Hardswish())
        self.se = SqueezeExcite(48, 12)
        self.project = conv_bn(48, 16)
        self.head = conv_bn(16, 64, act=nn.Hardswish())
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        return self.fc(self.head(x).mean((2, 3)))


def build():
    return TinyV3(5)


def build_seven():
    return TinyV3(7)
'''


CLASSES = ("circle", "cross", "dark", "light", "stripes")


def write_image_folder(root: Path, per_class: dict[str, int], size: int = 32) -> None:
    """PNG images, one folder per class and split, each class its own colour plus noise."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                base = np.full((size, size, 3), 40 + 45 * label, dtype=float)
                pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def write_user_files(directory: Path, per_class: dict[str, int] | None = None) -> Path:
    """`directory` with net.py (factories build and build_seven), weights.pt (build's state_dict, seeded) and
    images/ (train and val, `per_class` images each: 6 and 2 by default); returns `directory`."""
    (directory / "net.py").write_text(textwrap.dedent(MODEL_FILE))
    namespace: dict = {}
    exec(compile(MODEL_FILE, "net.py", "exec"), namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"]().state_dict(), directory / "weights.pt")
    write_image_folder(directory / "images", per_class or {"train": 6, "val": 2})
    return directory


@pytest.fixture(scope="session")
def user_files() -> Callable[..., Path]:
    """user_files(directory, per_class=None): a user's model file, weights and image folder written there."""
    return write_user_files


@pytest.fixture(scope="session")
def user_classes() -> tuple[str, ...]:
    """The class folders of the user's images, in label order."""
    return CLASSES


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """The user's files, written once per module: net.py, weights.pt and images/."""
    return write_user_files(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="session")
def jcw() -> Callable[..., int]:
    """jcw(*args): run `jcw ARGS` in this process (paths and numbers given as they are) and return its exit status."""
    return lambda *args: main([str(a) for a in args])
