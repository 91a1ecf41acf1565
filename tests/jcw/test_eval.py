"""Preprocessing a user can see and set: --resize, --mean, --std and --augment on every command that reads data,
small images kept whole by default, and `jcw eval`, the top-1 and loss of a model or a candidate under them."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from jcw.cli import build_parser
from jcw.options import AUGMENTS, load_data_arg
from pruner.data import loading
from pruner.model.checkpoint import load_model


def parsed(*args) -> argparse.Namespace:
    return build_parser().parse_args([str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A 32x32 RGB image folder of two classes, its val images' pixels by path."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    pixels = {}
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / name / f"{i}.png")
                pixels[root / split / name / f"{i}.png"] = image
    return root, [pixels[p] for p in sorted(p for p in pixels if p.parts[-3] == "val")]


def val_images(args: argparse.Namespace) -> np.ndarray:
    data = load_data_arg(args, (3, 32, 32))
    return torch.cat([x for x, _ in data.val]).numpy()


def test_a_32px_folder_keeps_its_pixels_through_evals_preprocessing(folder):
    root, pixels = folder
    model = ["eval", "--model", "net.py:build", "--data", f"imagefolder:{root}"]
    raw = val_images(parsed(*model, "--mean", "0,0,0", "--std", "1,1,1"))
    assert np.array_equal(np.rint(raw * 255).astype(np.uint8), np.stack(pixels).transpose(0, 3, 1, 2))
    default = val_images(parsed(*model))  # ImageNet's normalization, nothing scaled or cropped
    mean, std = np.array(loading.IMAGENET_MEAN)[:, None, None], np.array(loading.IMAGENET_STD)[:, None, None]
    assert np.allclose((default * std + mean) * 255, np.stack(pixels).transpose(0, 3, 1, 2), atol=1e-3)
    upscaled = val_images(parsed(*model, "--resize", "64", "--mean", "0,0,0", "--std", "1,1,1"))
    assert not np.array_equal(upscaled, raw)  # --resize 64 scales up, then crops the center 32x32


def test_preprocessing_flags_are_refused_where_they_do_not_apply(jcw, tmp_path, capsys):
    assert jcw("train", "--data", "mnist", "--mean", "0.5", "--out", tmp_path / "m.pt") == 3
    assert capsys.readouterr().err == ("jcw train: error: --mean: applies to imagefolder: data; --data mnist is "
                                       "preprocessed by the toolkit (scaled to the input size, pixels in [0, 1])\n")
    with pytest.raises(SystemExit):
        parsed("train", "--resize", "big", "--out", "m.pt")
    assert AUGMENTS == loading.AUGMENTS


@pytest.fixture(scope="module")
def user_model(tmp_path_factory, user_files):
    return user_files(tmp_path_factory.mktemp("eval"), {"train": 4, "val": 2})


def test_jcw_eval_scores_a_model_and_a_candidate_on_the_validation_split(jcw, user_model, user_classes, capsys):
    model = ["--model", f"{user_model / 'net.py'}:build", "--input-shape", "3,32,32", "--data",
             f"imagefolder:{user_model / 'images'}", "--threads", 1]
    capsys.readouterr()
    assert jcw("eval", *model, "--resize", 36, "--augment", "none") == 0
    out = capsys.readouterr().out
    assert out.startswith("model: validation top-1 ") and f"on {2 * len(user_classes)} images of imagefolder " in out
    assert "resize 36, mean 0.485,0.456,0.406, std 0.229,0.224,0.225, training images augmented: none" in out
    assert jcw("eval", *model, "--candidate", "0") == 3
    assert "--candidate needs --device NAME" in capsys.readouterr().err
    space = load_model(f"{user_model / 'net.py'}:build", None, "3,32,32").space("builtin")
    genes = ",".join(map(str, space.lower))  # the smallest candidate
    assert jcw("eval", *model, "--candidate", genes, "--device", "local-sparse", "--bn-batches", 1) == 0
    assert capsys.readouterr().out.startswith("candidate on 'local-sparse' (pruned as the search prunes it, "
                                              "BatchNorm recalibrated on 1 training batches): validation top-1 ")
