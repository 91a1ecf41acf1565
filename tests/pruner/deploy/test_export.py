"""Pruned candidates exported to TFLite (XNNPACK and built-in kernels) and ONNX equal PyTorch's outputs."""

import numpy as np
import onnxruntime as ort
import pytest
import tflite
import torch
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from torch import nn

from profiler.runtimes import get_runtime
from pruner.deploy.export import ExportError, export
from pruner.model.apply import apply_candidate
from pruner.model.graph import analyze
from pruner.model.reference import build_model
from pruner.search.space import SearchSpace

SHAPE = (1, 3, 32, 32)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "mobilenet_v1"])
def test_random_candidates_export_equal_to_pytorch_in_every_runtime(name, randomise_bn, run_exported):
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, num_classes=10, width_mult=0.5).eval()
    randomise_bn(model, gen)
    space = SearchSpace(analyze(model, SHAPE))
    rng = np.random.default_rng(0)
    for x_genes in space.sample(rng, 3):
        block = str(rng.choice(["1x4", "4x1"]))
        pruned = apply_candidate(model, space, x_genes, block=block).eval()
        x = torch.randn(SHAPE, generator=gen)
        with torch.no_grad():
            want = pruned(x).numpy()
        for runtime in ("xnnpack", "builtin", "onnx"):
            exported = export(pruned, SHAPE, get_runtime(runtime, block))
            got = run_exported(exported, x)
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (name, runtime, x_genes)
            expected = {n: round(d, 1) for n, d in space.densities(x_genes).items()}
            for layer in exported.layers:
                if layer.name in expected:
                    assert layer.pruned_density == pytest.approx(expected[layer.name], abs=0.06)


@pytest.mark.parametrize("block", ["1x4", "4x1"])
def test_every_runtimes_export_of_a_sparse_model_equals_torch_under_the_default_settings(tmp_path, block, randomise_bn):
    """Each file as a user loads it, `Interpreter(model_path=...)` (OpResolverType.AUTO, the XNNPACK delegate on) or
    a default onnxruntime session, and under its device's setting: equal to torch. The built-in kernels' sparse
    FULLY_CONNECTED is written at op version 8, which the XNNPACK delegate leaves to them (it used to take it and
    read the compressed weights as dense ones: NaN)."""
    gen = torch.Generator().manual_seed(0)
    model = build_model("mobilenet_v2", num_classes=10, width_mult=0.5).eval()
    randomise_bn(model, gen)
    space = SearchSpace(analyze(model, SHAPE))
    pruned = apply_candidate(model, space, space.lower, block=block).eval()
    x = torch.randn(SHAPE, generator=gen)
    with torch.no_grad():
        want = pruned(x).numpy()
    for runtime in ("xnnpack", "builtin", "onnx"):
        exported = export(pruned, SHAPE, get_runtime(runtime, block))
        path = tmp_path / f"{runtime}{exported.suffix}"
        path.write_bytes(exported.model)
        if runtime == "onnx":
            got = [ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]]
        else:
            settings = [{}, {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}]
            got = [invoke(Interpreter(model_path=str(path), **kwargs), x) for kwargs in settings]
        for out in got:
            assert np.abs(out - want).max() <= 1e-4 * np.abs(want).max(), runtime


def invoke(interpreter: Interpreter, x: torch.Tensor) -> np.ndarray:
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).contiguous().numpy())
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_prefer_dense_keeps_a_sparse_layer_dense_and_says_so(run_exported):
    model = build_model("mobilenet_v2", num_classes=10, width_mult=0.5).eval()
    space = SearchSpace(analyze(model, SHAPE))
    x_genes = space.lower  # the sparsest candidate
    pruned = apply_candidate(model, space, x_genes, block="4x1").eval()
    chosen = export(pruned, SHAPE, get_runtime("builtin", "4x1"), prefer_dense=lambda specs: [s.k == 1 for s in specs])
    sparse_1x1 = [layer for layer in chosen.layers if layer.pruned_density < 1 and layer.spec.k == 1]
    assert sparse_1x1 and all(layer.storage == "dense" and layer.spec.density == 1.0 for layer in sparse_1x1)
    x = torch.randn(SHAPE)
    with torch.no_grad():
        np.testing.assert_allclose(run_exported(chosen, x), pruned(x).numpy(), rtol=1e-4, atol=1e-4)


def test_sparse_storage_is_smaller_on_disk():
    model = build_model("mobilenet_v2", num_classes=10, width_mult=0.5).eval()
    space = SearchSpace(analyze(model, SHAPE))
    pruned = apply_candidate(model, space, space.lower, block="1x4").eval()
    for runtime in ("xnnpack", "builtin"):
        sparse = export(pruned, SHAPE, get_runtime(runtime, "1x4"))
        dense = export(pruned, SHAPE, get_runtime(runtime, "1x4"), prefer_dense=lambda specs: [True] * len(specs))
        assert len(sparse.model) < 0.8 * len(dense.model)


def test_unsupported_operations_name_the_module():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.Upsample(scale_factor=2, mode="bicubic")

        def forward(self, x):
            return self.pool(self.conv(x))

    with pytest.raises(ExportError, match=r"module 'pool' \(nn.Upsample\)"):
        export(Odd(), SHAPE, "builtin")
    multiplier = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4))
    with pytest.raises(ExportError, match="channel multiplier"):
        export(multiplier, (1, 4, 8, 8), "onnx")


@pytest.mark.parametrize("runtime", ["xnnpack", "builtin"])
def test_every_tflite_file_computes_the_model_through_its_serving_default_signature(runtime, randomise_bn,
                                                                                    run_exported):
    """The writer's SignatureDef names the input and output, so signature runners (and ai-edge-quantizer) can call
    any exported file; the file has no metadata unless its runtime asks for some."""
    model = build_model("mobilenet_v2", num_classes=10, width_mult=0.35).eval()
    randomise_bn(model, torch.Generator().manual_seed(1))
    exported = export(model, SHAPE, get_runtime(runtime))
    resolver = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}[runtime]
    interpreter = Interpreter(model_content=exported.model, experimental_op_resolver_type=resolver)
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["input"], "outputs": ["output"]}}
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    got = interpreter.get_signature_runner("serving_default")(input=x.permute(0, 2, 3, 1).numpy())["output"]
    np.testing.assert_array_equal(got, run_exported(exported, x))
    assert tflite.Model.GetRootAs(exported.model, 0).MetadataLength() == 0
