"""Full-integer (INT8) post-training quantization of a .tflite file with ai-edge-quantizer (no TensorFlow).

Weights int8 per output channel (symmetric), activations int8 per tensor with ranges calibrated on sample inputs,
biases int32: the form XNNPACK runs with its QS8 kernels. Ranges are the global min/max over all samples, not the
library's default moving average of per-sample ranges, which clipped activations and cost a trained net 5.6 points
of top-1 against 0.3 for min/max (/work/notes/quant/report.md). The file must store its weights dense and carry a
"serving_default" signature (profiler.tflite_writer writes one): the library calibrates through it, and it turns a
DENSIFY's output into an activation (a file that then does not load), so sparse files are refused.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable

import numpy as np

from profiler.errors import UserError
from profiler.tflite_reader import read_model
from profiler.tflite_writer import OP, SIGNATURE_KEY, signature_names


def quantize_int8(model: bytes, samples: Iterable[np.ndarray], float_io: bool = True, source: str = "model") -> bytes:
    """`model` (a float .tflite with one input) quantized to INT8, its ranges calibrated on `samples` (arrays in the
    model's input layout, NHWC; a batch is split into single images, as the model takes one). With `float_io` the
    file keeps float input and output (QUANTIZE and DEQUANTIZE at its ends), else they are int8. Errors name
    `source`."""
    m = read_model(model, source)
    if any(op.code == OP.DENSIFY for op in m.ops):
        raise UserError(f"{source}: INT8 quantization needs weights stored dense; this file stores sparse weights "
                        "behind DENSIFY (XNNPACK has no sparse INT8 kernels; export it dense first)")
    if len(m.inputs) != 1:
        raise UserError(f"{source}: INT8 calibration feeds one input; the model has {len(m.inputs)}")
    shape = m.shape(m.inputs[0])
    (name,) = signature_names("input", 1)
    data = [{name: image[None].astype(np.float32)} for batch in samples
            for image in np.asarray(batch, np.float32).reshape(-1, *shape[1:])]
    if not data:
        raise UserError(f"{source}: INT8 calibration needs at least one sample input")
    from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(recipe.static_wi8_ai8())
    if float_io:
        for io_op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            recipes.add_quantization_config(regex=".*", operation_name=io_op,
                                            algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    # the library prints a size report and a progress bar, and warns that calibration keeps every tensor
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranges = calibrator.Calibrator(model, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        ranges.calibrate({SIGNATURE_KEY: data}, recipes)
        result = quantizer.Quantizer(model, recipes.get_quantization_recipe()).quantize(
            ranges.get_model_qsvs(), enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)
