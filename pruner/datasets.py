"""Image data as the user names it: `mnist`, `imagefolder:DIR` or a factory `FILE.py:name` returning two loaders.

`load_data` gives the training and validation loaders and the class count, taken from the data (so a head that
does not match is caught by `check_head` before any work). ImageFolder images are decoded with PIL inside the
Dataset, so the decoding runs in the DataLoader's workers, and transformed the way ImageNet models are evaluated:
shorter side resized, center-cropped to the model's input size, normalized.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from profiler.errors import UserError
from pruner.data import load_mnist_sized
from pruner.sources import call_factory, error_line, factory_name, factory_source, is_factory

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875
"""The share of the resized image the center crop keeps: 224 of 256, as ImageNet models are evaluated."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageData:
    """Training and validation loaders of (images, labels), the class count, and where the data came from."""

    train: Iterable
    val: Iterable
    num_classes: int
    source: dict


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> normalized float tensor (C, H, W): resize the shorter side to `resize`, center-crop H x W.

    Grey images for one channel, RGB for three; `mean` and `std` have one value per channel.
    """

    shape: tuple[int, int, int]
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        channels, height, width = self.shape
        image = image.convert("L" if channels == 1 else "RGB")
        scale = self.resize / min(image.size)
        image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        x = x.unsqueeze(0) if channels == 1 else x.permute(2, 0, 1)
        return (x - torch.tensor(self.mean).view(-1, 1, 1)) / torch.tensor(self.std).view(-1, 1, 1)


class ImageFolder(Dataset):
    """Images in one subfolder per class (`root/CLASS/*.png`), decoded when an item is read.

    `classes` are the class folders' names, sorted, their indices the labels; a split that lacks a class keeps the
    others' indices when `classes` is given (the training split's).
    """

    def __init__(self, root: str | Path, transform: ImageTransform, classes: Sequence[str] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder (an image folder has train/ and val/, one subfolder per class)")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not found:
            raise UserError(f"{root}: no class subfolders")
        self.classes = list(classes) if classes is not None else found
        unknown = [c for c in found if c not in self.classes]
        if unknown:
            raise UserError(f"{root / unknown[0]}: a class the training split does not have")
        self.samples = []
        for name in found:
            images = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserError(f"{root / name}: no images ({', '.join(IMAGE_SUFFIXES)})")
            self.samples += [(p, self.classes.index(name)) for p in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as image:
                return self.transform(image), label
        except OSError as err:
            raise UserError(f"{path}: cannot read the image ({err})") from None


def load_data(
    spec: str,
    input_shape: Sequence[int],
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    train_limit: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize: int | None = None,
) -> ImageData:
    """The data `spec` names, shaped for a model of `input_shape` (C, H, W; a leading batch dimension is ignored).

    - `mnist`: the built-in MNIST, resized to H (square) with its grey channel replicated C times;
    - `imagefolder:DIR`: DIR/train and DIR/val, one subfolder per class. `resize` (the shorter side before the
      center crop) defaults to max(H, W) / 0.875; `mean` and `std` to ImageNet's (their averages for one channel);
    - `FILE.py:name` or `package.module:name`: a function called with no arguments that returns
      (train_loader, val_loader). The class count is len(train_loader.dataset.classes) if the dataset has
      `classes`, else the largest label in one pass over the validation loader, plus one.

    The training loader is shuffled with `seed`; `train_limit` keeps a seeded random subset of the training images
    (built-in and image-folder data). `batch_size`, `num_workers` and `train_limit` do not apply to a factory.
    """
    shape = tuple(int(v) for v in input_shape[-3:])
    if spec == "mnist":
        if shape[1] != shape[2]:
            raise UserError(f"mnist: its images are square; the model's input is {shape[1]}x{shape[2]}")
        splits = load_mnist_sized(shape[1], train_limit, channels=shape[0])
        train = splits["train"].loader(batch_size, shuffle=True, seed=seed)
        return ImageData(train, splits["val"].loader(batch_size), 10, {"kind": "mnist"})
    if spec.startswith("imagefolder:"):
        root = Path(spec.removeprefix("imagefolder:")).resolve()
        transform = image_transform(shape, mean, std, resize)
        train_set = ImageFolder(root / "train", transform)
        val_set = ImageFolder(root / "val", transform, train_set.classes)
        if train_limit is not None and train_limit < len(train_set):
            picked = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:train_limit]
            train_set = Subset(train_set, picked.tolist())
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(train_set, batch_size, shuffle=True, num_workers=num_workers, generator=generator)
        val = DataLoader(val_set, batch_size, num_workers=num_workers)
        source = {"kind": "imagefolder", "path": str(root), "classes": val_set.classes, "resize": transform.resize,
                  "mean": list(transform.mean), "std": list(transform.std)}
        return ImageData(train, val, len(val_set.classes), source)
    if is_factory(spec):
        return _factory_data(factory_source(spec))
    raise UserError(f"data {spec!r}: expected mnist, imagefolder:DIR, FILE.py:factory or package.module:factory")


def image_transform(
    shape: Sequence[int], mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
    resize: int | None = None,
) -> ImageTransform:
    """The evaluation transform for input `shape` (C, H, W), ImageNet's normalization unless `mean`/`std` given."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise UserError(f"image folder: the model reads {channels} channels; images give 1 (grey) or 3 (RGB)")
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
    mean, std = tuple(mean or default_mean), tuple(std or default_std)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UserError(f"image folder: mean {mean} and std {std} need {channels} values each, std positive")
    resize = resize if resize is not None else round(max(height, width) / CROP_FRACTION)
    if resize < max(height, width):
        raise UserError(f"image folder: resize {resize} is below the {height}x{width} center crop")
    return ImageTransform((channels, height, width), resize, mean, std)


def _factory_data(source: dict) -> ImageData:
    """The loaders a user's data factory returns, and the class count their data gives."""
    loaders = call_factory(source)
    if not isinstance(loaders, tuple | list) or len(loaders) != 2 or not all(isinstance(x, Iterable) for x in loaders):
        raise UserError(f"{factory_name(source)}: must return (train_loader, val_loader); "
                        f"returned a {type(loaders).__name__}")
    train, val = loaders
    return ImageData(train, val, class_count(train, val), source)


def class_count(train: Iterable, val: Iterable) -> int:
    """The classes of a pair of loaders: len(train_loader.dataset.classes) if the dataset has `classes`, else the
    largest label in one pass over the validation loader, plus one."""
    classes = getattr(getattr(train, "dataset", None), "classes", None)
    return len(classes) if classes is not None else 1 + max(int(torch.as_tensor(y).max()) for _, y in val)


def check_head(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
    """One forward pass on zeros of `input_shape` (C, H, W; a leading batch dimension is ignored): UserError unless
    the model runs and gives `num_classes` outputs per image, so a head that does not fit the data stops a run
    before any training or measuring."""
    shape = tuple(input_shape[-3:])
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *shape))
    except Exception as err:  # any layer of the user's model may refuse the shape
        shown = ",".join(map(str, shape))
        raise UserError(f"the model does not run on input shape {shown} ({error_line(err)})") from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"the model's output is {got}; a classifier gives (batch, classes)")
    if out.shape[1] != num_classes:
        raise UserError(f"the model's head gives {out.shape[1]} classes but the data has {num_classes}; "
                        f"replace its last layer with one of {num_classes} outputs")
