"""Image data from a data spec: a generated ImageFolder of PNG files, a user's loader factory, MNIST; head checks."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from profiler.errors import UserError
from pruner.data import loading
from pruner.data.loading import IMAGENET_MEAN, IMAGENET_STD, check_head, image_transform, load_data

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}  # one pure colour per class


def write_split(root, per_class: int, size=(40, 40)) -> None:
    """root/CLASS/i.png: RGB PNGs of the class's colour, lightly noised so files differ."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = [tuple(max(0, c - i) for c in colour)] * (size[0] * size[1])
            image = Image.new("RGB", size)
            image.putdata(pixels)
            image.save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 8 training images and 3 x 2 validation images, 40x40 RGB PNG."""
    root = tmp_path_factory.mktemp("images")
    write_split(root / "train", 8)
    write_split(root / "val", 2)
    return root


def test_an_image_folder_gives_labelled_normalized_batches_from_workers(folder):
    data = load_data(f"imagefolder:{folder}", (1, 3, 32, 32), batch_size=5, num_workers=2)
    assert data.num_classes == 3 and data.source["classes"] == ["cat", "dog", "emu"]
    assert data.source["resize"] == "auto" and data.source["mean"] == list(IMAGENET_MEAN)
    batches = list(data.train)
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 4]
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert x.shape == (24, 3, 32, 32) and sorted(y.tolist()) == [0] * 8 + [1] * 8 + [2] * 8
    assert y.tolist() != sorted(y.tolist())  # shuffled
    # each class's colour channel is the brightest after normalization, in the class's label order
    assert (x.mean((2, 3)).argmax(1) == y).all()
    top = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    first_cat = next(img for img, label in zip(x, y, strict=True) if label == 0 and img[0].max() > top - 1e-4)
    assert first_cat[0].min().item() == pytest.approx(top, abs=1e-4)
    val_labels = torch.cat([y for _, y in data.val]).tolist()
    assert val_labels == [0, 0, 1, 1, 2, 2]


def test_the_transform_resizes_the_shorter_side_and_crops_the_centre():
    image = Image.new("L", (80, 40))
    image.paste(255, (30, 0, 50, 40))  # a white band in the middle quarter
    x = image_transform((1, 40, 40), mean=[0.0], std=[1.0], resize=40)(image)  # no resize: columns 20..60 kept
    assert x.shape == (1, 40, 40) and x[0, :, 10:30].min().item() == pytest.approx(1.0)
    assert x[0, :, :10].max().item() == 0.0 and x[0, :, 30:].max().item() == 0.0
    small = image_transform((3, 16, 16))(image.convert("RGB"))  # shorter side 40 -> 18, columns 10..26 of 36 kept
    assert small.shape == (3, 16, 16)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    assert torch.allclose(small[:, 8, 8], (1 - mean) / std) and torch.allclose(small[:, 8, 0], -mean / std)


def random_folder(root, size: int, per_class: int = 3, suffix: str = ".png") -> dict[str, list[np.ndarray]]:
    """root/{train,val}/{a,b}/i.png of random RGB pixels; the pixels by split, in the folder's (sorted) order."""
    rng, pixels = np.random.default_rng(0), {}
    for split in ("train", "val"):
        pixels[split] = []
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(array).save(root / split / name / f"{i}{suffix}")
                pixels[split].append(array)
    return pixels


def unnormalized(x: torch.Tensor) -> np.ndarray:
    """A normalized (C, H, W) image back to uint8 (H, W, C) pixels."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1), torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    return ((x * std + mean) * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def test_small_images_keep_every_pixel_and_only_training_images_are_augmented(tmp_path):
    """A 32x32 folder for a 32x32 model (CIFAR's case): no resize, no crop, the validation split exactly the files;
    training items are random windows of the image padded by 4, sometimes flipped, different pass to pass."""
    pixels = random_folder(tmp_path, 32)
    data = load_data(f"imagefolder:{tmp_path}", (3, 32, 32), batch_size=64)
    assert data.source["resize"] == "auto" and data.source["augment"] == "crop-flip"
    val = torch.cat([x for x, _ in data.val])
    for got, want in zip(val, pixels["val"], strict=True):
        assert np.array_equal(unnormalized(got), want)
    train_set = data.train.dataset
    views = [unnormalized(train_set[0][0]) for _ in range(12)]
    padded = np.pad(pixels["train"][0], ((4, 4), (4, 4), (0, 0)))
    windows = [padded[t:t + 32, s:s + 32] for t in range(9) for s in range(9)]
    for view in views:  # every view is a window of the padded image, or its mirror image
        assert any(np.array_equal(view, w) or np.array_equal(view, w[:, ::-1]) for w in windows)
    assert len({v.tobytes() for v in views}) > 1
    plain = load_data(f"imagefolder:{tmp_path}", (3, 32, 32), augment="none").train.dataset
    assert np.array_equal(unnormalized(plain[0][0]), pixels["train"][0])


def test_a_folder_is_decoded_once_then_read_from_its_cache(tmp_path, monkeypatch):
    pixels = random_folder(tmp_path / "data", 16, suffix=".bmp")  # lossless, like the cache
    cache = tmp_path / "cache"
    first = load_data(f"imagefolder:{tmp_path / 'data'}", (3, 16, 16), augment="none", cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 2  # train and val

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded again")

    monkeypatch.setattr(loading.Image, "open", no_decoding)
    again = load_data(f"imagefolder:{tmp_path / 'data'}", (3, 16, 16), augment="none", cache_dir=cache)
    assert torch.equal(torch.cat([x for x, _ in first.val]), torch.cat([x for x, _ in again.val]))
    assert np.array_equal(unnormalized(again.train.dataset[5][0]), pixels["train"][5])
    monkeypatch.undo()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "data" / "val" / "a" / "0.bmp")  # changed
    changed = load_data(f"imagefolder:{tmp_path / 'data'}", (3, 16, 16), augment="none", cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 3 and unnormalized(changed.val.dataset[0][0]).max() == 0


def test_grey_models_read_grey_images_and_a_training_limit_is_a_seeded_subset(folder):
    data = load_data(f"imagefolder:{folder}", (1, 24, 24), batch_size=64, train_limit=6, seed=3)
    x, y = next(iter(data.train))
    again, _ = next(iter(load_data(f"imagefolder:{folder}", (1, 24, 24), batch_size=64, train_limit=6, seed=3).train))
    assert x.shape == (6, 1, 24, 24) and torch.equal(x, again) and data.source["mean"] == [0.449]


@pytest.mark.parametrize(
    "layout, kwargs, message",
    [
        ({"train": {"cat": 1}}, {}, r"val: no such folder"),
        ({"train": {"cat": 1, "dog": 0}, "val": {"cat": 1}}, {}, r"train/dog: no images \(.png"),
        ({"train": {"cat": 1}, "val": {"cat": 1, "emu": 1}}, {}, r"val/emu: a class the training split does not have"),
        ({"train": {"cat": 1}, "val": {"cat": 1}}, {"mean": [0.5, 0.5]}, r"mean \(0.5, 0.5\) and std .* need 3 values"),
        ({"train": {"cat": 1}, "val": {"cat": 1}}, {"resize": 20}, r"resize 20 is below the 32x32 center crop"),
    ],
    ids=["no_val", "empty_class", "unknown_val_class", "mean_length", "resize_below_crop"],
)
def test_a_bad_image_folder_is_a_one_line_error(tmp_path, layout, kwargs, message):
    for split, classes in layout.items():
        for name, count in classes.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8)).save(tmp_path / split / name / f"{i}.png")
    with pytest.raises(UserError, match=message) as err:
        load_data(f"imagefolder:{tmp_path}", (3, 32, 32), **kwargs)
    assert "\n" not in str(err.value)


LOADERS_PY = textwrap.dedent(
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset


    class Named(TensorDataset):
        classes = ["a", "b", "c", "d"]


    def named():
        x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
        return DataLoader(Named(x, y), batch_size=4), DataLoader(Named(x, y), batch_size=4)


    def unnamed():
        x, y = torch.randn(10, 3, 16, 16), torch.arange(10) % 5
        return DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x[:6], y[:6]), batch_size=4)


    def one():
        return named()[0]
    """
)


def test_a_data_factory_gives_its_loaders_and_the_class_count(tmp_path):
    path = tmp_path / "loaders.py"
    path.write_text(LOADERS_PY)
    named = load_data(f"{path}:named", (3, 16, 16))
    assert named.num_classes == 4 and named.source["factory"] == "named" and named.source["path"] == str(path)
    assert next(iter(named.train))[0].shape == (4, 3, 16, 16)
    assert load_data(f"{path}:unnamed", (3, 16, 16)).num_classes == 5  # labels 0..5 in the validation loader
    with pytest.raises(UserError, match=r"loaders.py:one: must return \(train_loader, val_loader\); returned a "):
        load_data(f"{path}:one", (3, 16, 16))
    with pytest.raises(UserError, match="data 'cifar': expected mnist, imagefolder:DIR, FILE.py:factory"):
        load_data("cifar", (3, 16, 16))


def test_mnist_is_built_in():
    data = load_data("mnist", (1, 3, 28, 28), batch_size=32, train_limit=100)
    x, y = next(iter(data.train))
    assert data.num_classes == 10 and x.shape == (32, 3, 28, 28) and y.dtype == torch.int64
    assert sum(len(y) for _, y in data.train) == 100 and sum(len(y) for _, y in data.val) == 10000
    with pytest.raises(UserError, match="mnist: its images are square; the model's input is 28x32"):
        load_data("mnist", (1, 28, 32))


def small_classifier(classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def test_a_head_that_fits_the_data_passes_and_keeps_the_training_mode():
    model = small_classifier(3).train()
    check_head(model, (1, 3, 16, 16), 3)
    assert model.training


@pytest.mark.parametrize(
    "model, shape, message",
    [
        (small_classifier(10), (3, 16, 16), r"the model's head gives 10 classes but the data has 3; replace its last"),
        (small_classifier(3), (1, 16, 16), r"the model does not run on input shape 1,16,16 \(RuntimeError: "),
        (nn.Conv2d(3, 3, 1), (3, 16, 16), r"the model's output is \(1, 3, 16, 16\); a classifier gives"),
    ],
    ids=["wrong_class_count", "wrong_channels", "not_a_classifier"],
)
def test_a_head_that_does_not_fit_is_a_one_line_error(model, shape, message):
    with pytest.raises(UserError, match=message) as err:
        check_head(model, shape, 3)
    assert "\n" not in str(err.value)
