"""Image data as the user names it: `mnist`, `imagefolder:DIR` or a factory `FILE.py:name` returning two loaders.

`load_data` gives the training and validation loaders and the class count, taken from the data (so a head that
does not match is caught by `check_head` before any work). ImageFolder images are decoded with PIL and preprocessed
as users of the field expect: a large image's shorter side resized to the input size / 0.875 and center-cropped
(ImageNet's evaluation), a small one (CIFAR's 32x32 for a 32x32 model) only scaled to the input size, never cropped;
normalized. Training images are augmented (`augment`: random crop, with padding for small images, and horizontal
flip), validation images never. A folder whose decoded images fit in memory is decoded once into a uint8 array
cached on disk (`cache_dir`), so later epochs and runs read no JPEG.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from profiler.errors import UserError
from pruner.data.mnist import load_mnist_sized
from pruner.model.sources import call_factory, error_line, factory_name, factory_source, is_factory

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875
"""The share of the resized image the center crop keeps: 224 of 256, as ImageNet models are evaluated."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")
AUGMENTS = ("crop-flip", "flip", "none")
"""Training augmentation: a random H x W crop (of the image padded by H/8 on every side when it is no larger than
the input, as CIFAR models are trained; of the resized image otherwise) and a horizontal flip; the flip alone; none."""
CACHE_LIMIT = 2 << 30
"""Decoded image folders up to this many bytes are cached as one uint8 array; larger ones decode every epoch."""


@dataclass(frozen=True)
class ImageData:
    """Training and validation loaders of (images, labels), the class count, and where the data came from."""

    train: Iterable
    val: Iterable
    num_classes: int
    source: dict


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> normalized float tensor (C, H, W).

    `resize` is the shorter side an image is scaled to before the H x W crop; None scales a small image (shorter
    side below max(H, W) / 0.875) to max(H, W), never upscaling and cropping it, and a large one to max(H, W) /
    0.875. Grey images for one channel, RGB for three; `mean` and `std` have one value per channel. `augment`
    (AUGMENTS) applies to training images only: `train_view` crops at random and flips, `__call__` center-crops.
    """

    shape: tuple[int, int, int]
    resize: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"

    def side(self, width: int, height: int) -> int:
        """The shorter side an image of this size is scaled to."""
        if self.resize is not None:
            return self.resize
        size = max(self.shape[1:])
        return size if min(width, height) < size / CROP_FRACTION else round(size / CROP_FRACTION)

    def decode(self, image: Image.Image) -> np.ndarray:
        """The image converted to the model's channels and scaled (shorter side `side`), uint8 (H', W', C)."""
        channels, height, width = self.shape
        image = image.convert("L" if channels == 1 else "RGB")
        scale = self.side(image.width, image.height) / min(image.size)
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        return np.array(image, dtype=np.uint8).reshape(image.height, image.width, channels)

    def view(self, pixels: np.ndarray, train: bool = False) -> torch.Tensor:
        """A decoded image as the model reads it: center crop (or, for training, `augment`), normalized."""
        channels, height, width = self.shape
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        if train and self.augment == "crop-flip":
            pad = height // 8 if x.shape[1:] == (height, width) else 0
            x = nn.functional.pad(x, (pad, pad, pad, pad))
            top = int(torch.randint(0, x.shape[1] - height + 1, ()))
            left = int(torch.randint(0, x.shape[2] - width + 1, ()))
        else:
            top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
        x = x[:, top:top + height, left:left + width]
        if train and self.augment != "none" and bool(torch.randint(0, 2, ())):
            x = x.flip(2)
        x = x.float() / 255.0
        return (x - torch.tensor(self.mean).view(-1, 1, 1)) / torch.tensor(self.std).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.view(self.decode(image))

    def record(self) -> dict:
        """The preprocessing as JSON values, for a run's provenance."""
        return {"resize": self.resize if self.resize is not None else "auto", "mean": list(self.mean),
                "std": list(self.std), "augment": self.augment}


class ImageFolder(Dataset):
    """Images in one subfolder per class (`root/CLASS/*.png`), decoded when an item is read, or once for all by
    `cache`.

    `classes` are the class folders' names, sorted, their indices the labels; a split that lacks a class keeps the
    others' indices when `classes` is given (the training split's). `train` augments items (ImageTransform.augment).
    """

    def __init__(self, root: str | Path, transform: ImageTransform, classes: Sequence[str] | None = None,
                 train: bool = False):
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
        self.root, self.transform, self.train = root, transform, train
        self.pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def decoded(self, i: int) -> np.ndarray:
        """Image `i` decoded and scaled (ImageTransform.decode), from the cache when there is one."""
        if self.pixels is not None:
            return self.pixels[i]
        path = self.samples[i][0]
        try:
            with Image.open(path) as image:
                return self.transform.decode(image)
        except OSError as err:
            raise UserError(f"{path}: cannot read the image ({err})") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform.view(self.decoded(i), self.train), self.samples[i][1]

    def cache(self, cache_dir: str | Path, limit: int = CACHE_LIMIT) -> bool:
        """Decode every image once into one uint8 array kept in `cache_dir` (reused while the files, their sizes
        and times and the decoding are unchanged); False, and nothing cached, when the images decode to different
        sizes or the array would exceed `limit` bytes."""
        stats = [(str(p.relative_to(self.root)), *_size_and_time(p)) for p, _ in self.samples]
        decoding = {"shape": self.transform.shape, "side": self.transform.resize}
        key = hashlib.sha256(json.dumps([str(self.root), decoding, stats]).encode()).hexdigest()[:20]
        path = Path(cache_dir) / f"{self.root.parent.name}-{self.root.name}-{key}.npy"
        if path.is_file():
            try:
                self.pixels = np.load(path, allow_pickle=False)
                return True
            except (OSError, ValueError):  # a torn or foreign file: decode again
                path.unlink(missing_ok=True)
        first = self.decoded(0)
        if first.nbytes * len(self) > limit:
            return False
        pixels = np.empty((len(self), *first.shape), np.uint8)
        for i in tqdm(range(len(self)), desc=f"decoding {self.root} once", unit="image", leave=False):
            image = self.decoded(i)
            if image.shape != first.shape:
                return False
            pixels[i] = image
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, pixels)
        tmp.replace(path)
        self.pixels = pixels
        return True


def _size_and_time(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def default_cache_dir() -> Path:
    """Where decoded image folders are cached: the user's cache directory (~/.cache/jcw/images on Linux)."""
    return Path(platformdirs.user_cache_dir("jcw")) / "images"


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
    augment: str = "crop-flip",
    cache_dir: str | Path | None = None,
) -> ImageData:
    """The data `spec` names, shaped for a model of `input_shape` (C, H, W; a leading batch dimension is ignored).

    - `mnist`: the built-in MNIST, resized to H (square) with its grey channel replicated C times (never augmented);
    - `imagefolder:DIR`: DIR/train and DIR/val, one subfolder per class, preprocessed by `image_transform` (`resize`,
      `mean`, `std`; training images augmented by `augment`, one of AUGMENTS), each split decoded once into
      `cache_dir` (None: `default_cache_dir()`) when it fits in memory;
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
        transform = image_transform(shape, mean, std, resize, augment)
        train_set = ImageFolder(root / "train", transform, train=True)
        val_set = ImageFolder(root / "val", transform, train_set.classes)
        cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        cached = all([train_set.cache(cache_dir), val_set.cache(cache_dir)])
        subset = train_set
        if train_limit is not None and train_limit < len(train_set):
            picked = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:train_limit]
            subset = Subset(train_set, picked.tolist())
        generator = torch.Generator().manual_seed(seed)
        workers = 0 if cached else num_workers  # cached items cost microseconds: workers would only add overhead
        train = DataLoader(subset, batch_size, shuffle=True, num_workers=workers, generator=generator)
        val = DataLoader(val_set, batch_size, num_workers=workers)
        source = {"kind": "imagefolder", "path": str(root), "classes": val_set.classes, **transform.record()}
        return ImageData(train, val, len(val_set.classes), source)
    if is_factory(spec):
        return _factory_data(factory_source(spec))
    raise UserError(f"data {spec!r}: expected mnist, imagefolder:DIR, FILE.py:factory or package.module:factory")


def image_transform(
    shape: Sequence[int], mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
    resize: int | None = None, augment: str = "none",
) -> ImageTransform:
    """The transform for input `shape` (C, H, W): ImageNet's normalization unless `mean`/`std` given, the shorter
    side scaled to `resize` (None: ImageTransform's rule, small images kept whole), `augment` for training items."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise UserError(f"image folder: the model reads {channels} channels; images give 1 (grey) or 3 (RGB)")
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
    mean, std = tuple(mean or default_mean), tuple(std or default_std)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UserError(f"image folder: mean {mean} and std {std} need {channels} values each, std positive")
    if resize is not None and resize < max(height, width):
        raise UserError(f"image folder: resize {resize} is below the {height}x{width} center crop")
    if augment not in AUGMENTS:
        raise UserError(f"augment {augment!r}: expected one of {', '.join(AUGMENTS)}")
    return ImageTransform((channels, height, width), resize, mean, std, augment)


def describe(source: dict | None) -> str:
    """Where data came from and how its images were preprocessed, in one line, from a run's data record."""
    if not source:
        return "data not recorded"
    kind = source.get("kind")
    if kind == "imagefolder":
        return (f"imagefolder {source.get('path')} ({len(source.get('classes') or ())} classes; resize "
                f"{source.get('resize')}, mean {_numbers(source.get('mean'))}, std {_numbers(source.get('std'))}, "
                f"training images augmented: {source.get('augment')})")
    if kind == "mnist":
        return "mnist (built in: scaled to the input size, pixels in [0, 1], not augmented)"
    if kind in ("file", "module"):
        return f"{factory_name(source)} (loaders and preprocessing of the user's factory)"
    return "loaders given in Python (their own preprocessing)"


def _numbers(values: Sequence[float] | None) -> str:
    return ",".join(f"{v:g}" for v in values or ())


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
