"""INT8 export (profiler.quantize through the xnnpack-int8 runtime) of a small trained model, against its FP32 export
on the validation split: under x86 LiteRT and on arm-emu, where XNNPACK's ARM QS8 kernels run it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tflite
import torch
from ai_edge_litert.interpreter import Interpreter

from profiler.runtimes import get_runtime
from profiler.tflite_reader import read_model
from profiler.tflite_writer import OP, TensorType
from pruner import JCW
from pruner.accuracy.train import train
from pruner.data.loading import load_data
from tests.pruner.deploy.precision import INSTALLED, arm_outputs, small_net

VAL_IMAGES = 500
SHAPE = (1, 3, 28, 28)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The net trained 3 epochs on 6,000 MNIST images (3 channels), exported FP32 and INT8 for `local`, and the first
    validation images (NHWC) with their labels."""
    torch.manual_seed(0)
    data = load_data("mnist", SHAPE, train_limit=6000, augment="none")
    model = small_net()
    train(model, data.train, 3, lr=3e-3, optimizer="adam")
    model.eval()
    out = tmp_path_factory.mktemp("int8")
    fp32 = JCW(model, SHAPE, "local").export(model, out / "fp32.tflite")
    int8 = JCW(model, SHAPE, "local", data=(data.train, data.val), precision="int8").export(model, out / "int8.tflite")
    images, labels = (torch.cat(t)[:VAL_IMAGES] for t in zip(*data.val, strict=True))
    return fp32, int8, images.permute(0, 2, 3, 1).numpy(), labels.numpy()


def outputs(path, images: np.ndarray) -> np.ndarray:
    """x86 LiteRT, default Interpreter (XNNPACK on), through the file's signature."""
    run = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return np.concatenate([run(input=images[i:i + 1])["output"] for i in range(len(images))])


def test_the_int8_file_is_full_integer_with_float_ends_and_says_so(exports):
    fp32, int8, _, _ = exports
    m = read_model(int8.read_bytes())
    codes = [op.code for op in m.ops]
    assert codes[0] == OP.QUANTIZE and codes[-1] == OP.DEQUANTIZE
    assert [m.tensors[t].dtype for t in (*m.inputs, *m.outputs)] == [TensorType.TensorType.FLOAT32] * 2
    model = tflite.Model.GetRootAs(int8.read_bytes(), 0).Subgraphs(0)
    for op in m.ops:
        if op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED):
            x, w, b = (m.tensors[t] for t in op.inputs)
            assert (x.dtype, w.dtype, b.dtype, m.tensors[op.outputs[0]].dtype) == (9, 9, 2, 9)  # int8, int32 bias
            channels = w.shape[3] if op.code == OP.DEPTHWISE_CONV_2D else w.shape[0]
            assert model.Tensors(op.inputs[1]).Quantization().ScaleLength() == channels  # per output channel
    sidecar = json.loads(int8.with_suffix(".tflite.json").read_text())
    assert (sidecar["runtime"], sidecar["precision"], sidecar["calibration_images"]) == ("xnnpack-int8", "int8", 512)
    assert json.loads(fp32.with_suffix(".tflite.json").read_text())["precision"] == "fp32"
    read_back = get_runtime("xnnpack-int8").read_file(int8)  # the layers a predictor prices, all dense
    assert list(read_back) == [layer["name"] for layer in sidecar["layers"]]
    assert {spec.density for spec in read_back.values()} == {1.0}


def test_int8_agrees_with_fp32_on_the_validation_split_under_x86_litert(exports):
    fp32, int8, images, labels = exports
    want, got = outputs(fp32, images), outputs(int8, images)
    top1 = {name: float((out.argmax(1) == labels).mean()) for name, out in (("fp32", want), ("int8", got))}
    assert top1["fp32"] > 0.7  # a trained model, so agreement means something
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97
    assert abs(top1["int8"] - top1["fp32"]) <= 0.02
    assert 10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()) > 25  # logits' SQNR in dB


@pytest.mark.skipif(not INSTALLED, reason="arm-emu not installed: run `make arm-emu` (needs apt-get)")
def test_on_arm_emu_xnnpack_computes_the_int8_file_as_x86_does(exports, tmp_path):
    fp32, int8, images, labels = exports
    images = images[:200]
    arm = arm_outputs(int8, images, tmp_path)
    np.testing.assert_allclose(arm, outputs(int8, images), atol=1e-6)  # QS8 kernels: the same integers
    assert (arm.argmax(1) == outputs(fp32, images).argmax(1)).mean() >= 0.97
