"""Every generated kernel model, in every runtime, against the numpy reference on random data."""

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from profiler.harness import random_weights
from profiler.kernel import KernelSpec
from profiler.runtimes import get_runtime
from profiler.runtimes.tflite import runs_as_sparse_fc
from profiler.tflite_writer import TFLiteModel
from tests.profiler import reference

SPECS = [
    KernelSpec("conv", 12, 12, 16, 24, density=0.3, block="4x1", activation="relu"),
    KernelSpec("conv", 12, 12, 16, 24, density=0.3, block="1x4"),
    KernelSpec("conv", 12, 12, 16, 20, density=0.5, block="unstructured", activation="relu6"),
    KernelSpec("conv", 12, 12, 16, 24),
    KernelSpec("conv", 13, 11, 8, 16, k=3, stride=2, density=0.4, activation="relu"),
    KernelSpec("conv", 10, 10, 8, 12, k=3, density=0.6),
    KernelSpec("conv", 16, 16, 3, 16, k=3, stride=2, activation="relu6"),
    KernelSpec("conv", 9, 9, 8, 8, k=5, stride=1),
    KernelSpec("conv", 8, 8, 16, 8, k=1, stride=2, density=0.5),
    KernelSpec("dwconv", 14, 14, 16, 16, k=3, groups=16, activation="relu6"),
    KernelSpec("dwconv", 15, 15, 8, 8, k=5, stride=2, groups=8),
    KernelSpec("fc", 1, 1, 64, 10, density=0.25, block="4x1"),
    KernelSpec("fc", 1, 1, 64, 10, density=0.5, block="1x4", activation="relu"),
    KernelSpec("fc", 1, 1, 30, 7),
    KernelSpec("conv", 6, 6, 16, 24, density=0.3, layout="nchw"),  # inside XNNPACK's sparse cluster
    KernelSpec("conv", 6, 6, 16, 16, layout="nchw"),
    KernelSpec("dwconv", 6, 6, 16, 16, k=3, groups=16, activation="relu6", layout="nchw"),
    # activations that run as ops of their own after the conv
    KernelSpec("conv", 12, 12, 16, 24, density=0.3, block="4x1", activation="hardswish"),  # sparse FC path
    KernelSpec("conv", 10, 10, 8, 12, k=3, stride=2, activation="silu"),
    KernelSpec("dwconv", 14, 14, 16, 16, k=5, groups=16, activation="hardswish"),
    KernelSpec("dwconv", 13, 13, 8, 8, k=7, stride=2, groups=8, activation="sigmoid"),
    KernelSpec("conv", 1, 1, 16, 32, activation="hardsigmoid"),  # a squeeze-and-excite conv on the pooled map
    KernelSpec("fc", 1, 1, 32, 16, density=0.5, block="4x1", activation="sigmoid"),
    KernelSpec("conv", 6, 6, 16, 16, activation="hardswish", layout="nchw"),
    # grouped convs (not depthwise)
    KernelSpec("conv", 10, 10, 16, 24, k=3, groups=4, activation="relu"),
    KernelSpec("conv", 9, 9, 12, 12, k=1, stride=2, groups=3, activation="silu"),
]
RESOLVER = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def run_tflite(model: bytes, x: np.ndarray, runtime: str) -> np.ndarray:
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=RESOLVER[runtime])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def expected(spec, x_nchw, weight, bias):
    if spec.layout == "nchw":  # stem conv -> kernel -> global mean (the ballast is a side branch), rng(0) weights
        stem = KernelSpec("conv", 2 * spec.h, 2 * spec.w, 3, spec.cin, k=3, stride=2, activation="relu")
        x_nchw = reference.kernel(x_nchw, stem, *random_weights(stem, np.random.default_rng(0)))
        return reference.kernel(x_nchw, spec, weight, bias).mean(axis=(2, 3))
    return reference.kernel(x_nchw, spec, weight, bias)


CASES = [(spec, runtime) for spec in SPECS for runtime in ("xnnpack", "builtin", "onnx")
         if spec.layout == "nhwc" or runtime == "xnnpack"]  # the nchw layout exists only on XNNPACK


@pytest.mark.parametrize(("spec", "runtime"), CASES, ids=lambda v: v if isinstance(v, str) else v.name())
def test_kernel_model_matches_numpy(spec, runtime):
    rng = np.random.default_rng(1)
    weight, bias = random_weights(spec, rng)
    shape = (1, spec.cin) if spec.op == "fc" else (1, spec.cin, spec.h, spec.w)
    if spec.layout == "nchw":  # inside the wrapper cluster, after its 3x3 stride-2 stem on 3 channels
        shape = (1, 3, 2 * spec.h, 2 * spec.w)
    x = rng.standard_normal(shape).astype(np.float32)
    want = expected(spec, x, weight, bias)
    model = get_runtime(runtime, spec.block).kernel_model(spec, weight, bias)
    if runtime == "onnx":
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        nhwc = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
        got = run_tflite(model, np.ascontiguousarray(nhwc), runtime)
        got = got.transpose(0, 3, 1, 2) if got.ndim == 4 else got
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_pruned_weights_have_the_requested_density_and_block():
    spec = KernelSpec("conv", 8, 8, 32, 64, density=0.3, block="1x4")
    weight, _ = random_weights(spec, np.random.default_rng(0))
    nonzero = weight != 0
    assert nonzero.mean() == pytest.approx(0.3, abs=0.02)
    blocks = nonzero[:, :, 0, 0].reshape(16, 4, 32)  # 4 consecutive output channels per block
    assert np.all(blocks.all(axis=1) | ~blocks.any(axis=1))


def test_sparse_models_are_smaller_and_builtin_uses_sparse_fully_connected():
    dense = KernelSpec("conv", 8, 8, 64, 64, block="4x1")
    sparse = dense.replace(density=0.1)
    rng = np.random.default_rng(0)
    builtin = get_runtime("builtin", "4x1")
    sizes = {s.density: len(builtin.kernel_model(s, *random_weights(s, rng))) for s in (dense, sparse)}
    assert sizes[0.1] < 0.4 * sizes[1.0]
    assert runs_as_sparse_fc(sparse) and not runs_as_sparse_fc(dense)


def test_block_encoding_refuses_columns_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        TFLiteModel().sparse_constant("w", np.ones((4, 6), np.float32), block4=True)
