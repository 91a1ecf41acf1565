"""Target runtimes: one object per runtime a device runs models with, registered by name.

A `Runtime` owns everything that differs between runtimes, so nothing else asks which runtime it is: how a
KernelSpec is lowered and a network written (`network`), the file suffix, the sparsity block its sparse kernels
exploit, the search's density floors and weight stage, which kernels run at their density (`run_density`), which
forms of a layer the profiler measures (`measured_forms`), which sparse layers are better stored dense
(`storage_chooser`), what its sparse regime is (`cluster`, `verdict`), how its measurement job runs
(`runner_options`) and how a model file is read back (`read_layers`).

A device in devices.yaml names its runtime; `get_runtime(name, block)` builds it. Registered here: "xnnpack"
(LiteRT with the XNNPACK delegate, a phone's default CPU path), "builtin" (LiteRT's built-in kernels), "onnx"
(onnxruntime), and XNNPACK's dense reduced-precision paths "xnnpack-int8" and "xnnpack-fp16" (profiler.runtimes.dense;
`at_precision` finds a runtime's counterpart at another precision, and `deployed` is where a runtime turns a written
network into the file it runs, e.g. quantized). A new runtime is a module with a Runtime subclass and one `register`
call.
"""

from __future__ import annotations

from profiler.runtimes.base import PRECISIONS, Runtime, at_precision, get_runtime, register, registered
from profiler.runtimes.builtin import BuiltinRuntime
from profiler.runtimes.dense import XnnpackFp16Runtime, XnnpackInt8Runtime
from profiler.runtimes.onnx import OnnxRuntime
from profiler.runtimes.xnnpack import XnnpackRuntime

for _runtime in (XnnpackRuntime, BuiltinRuntime, OnnxRuntime, XnnpackInt8Runtime, XnnpackFp16Runtime):
    register(_runtime)

__all__ = ["PRECISIONS", "Runtime", "at_precision", "get_runtime", "register", "registered"]
