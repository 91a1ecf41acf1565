"""The Runtime interface, the registry of runtimes by name, and the network builder every runtime provides."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from profiler.errors import UserError
from profiler.kernel import BLOCKS, KernelSpec

PredictFn = Callable[[Sequence[KernelSpec]], np.ndarray]  # kernel specs -> latency in ms
Chooser = Callable[[list[KernelSpec]], list[bool]]  # sparse layers -> whether to store each dense
PRECISIONS = ("fp32", "fp16", "int8")


class Network:
    """A whole network being written for one runtime, NCHW shapes in and out whatever the runtime's own layout: what
    the exporter walks a torch graph into and the profiler's harness writes one kernel with. Tensors are opaque
    handles of the runtime's model."""

    def input(self, shape: tuple[int, ...]):
        """The network's input of `shape` (N, C, H, W), or (N, C) for a fully connected kernel."""
        raise NotImplementedError

    def kernel(self, x, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray, name: str):
        """`spec` with its weights (PyTorch's layout) and bias applied to `x`, its activation after it."""
        raise NotImplementedError

    def add(self, a, b, activation: str, name: str):
        raise NotImplementedError

    def mul(self, a, b, name: str):
        """Elementwise product; the smaller operand broadcasts (a squeeze-and-excite scale)."""
        raise NotImplementedError

    def concat(self, xs: list, name: str):
        """Concatenation along channels."""
        raise NotImplementedError

    def resize(self, x, size: tuple[int, int], mode: str, align_corners: bool, name: str):
        """Nearest or bilinear upsampling to `size` (height, width), sampled as PyTorch samples."""
        raise NotImplementedError

    def avg_pool(self, x, k: int, stride: int, pad: int, name: str):
        """Average pooling whose padding zeros count in the mean (PyTorch's count_include_pad)."""
        raise NotImplementedError

    def max_pool(self, x, k: int, stride: int, pad: int, name: str):
        raise NotImplementedError

    def activation(self, x, activation: str, name: str):
        raise NotImplementedError

    def pool(self, x, name: str):
        """Global average pooling, keeping a 1x1 feature map."""
        raise NotImplementedError

    def flatten(self, x, name: str):
        """A 1x1 feature map to (N, C)."""
        raise NotImplementedError

    def unflatten(self, x, name: str):
        """(N, C) back to a 1x1 feature map, e.g. a squeeze-and-excite scale computed by linear layers."""
        raise NotImplementedError

    def finish(self, outputs: list) -> bytes:
        """The serialised model with `outputs` as its outputs."""
        raise NotImplementedError


@dataclass(frozen=True)
class Runtime:
    """A target runtime, with the sparsity `block` its device's sparse kernels exploit ("" for the runtime's default).

    Subclasses set the class attributes and override what differs; the defaults describe a runtime whose sparse
    kernels each run at their own density, priced layer by layer at the faster of their sparse and dense forms.
    """

    block: str = ""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    suffix: ClassVar[str] = ".tflite"
    package: ClassVar[str] = "litert"
    """What the device's runner imports to run the files: "litert" (ai_edge_litert or tflite_runtime) or
    "onnxruntime"."""
    default_block: ClassVar[str] = "1x4"
    density_floors: ClassVar[Mapping[str, float]] = {}
    """Lower bounds of the search's densities that replace JCW's (pruner.search.space.DENSITY_BOUNDS) for some
    layer kinds."""
    weight_stage: ClassVar[float] = 0.3
    """The joint method's default share of evaluations for adding sparse layers one by one (pruner.search.fronts)."""
    precision: ClassVar[str] = "fp32"
    """What the deployed file computes in: one of PRECISIONS (`at_precision` finds a runtime's counterparts)."""

    def __post_init__(self) -> None:
        block = self.block or self.default_block
        if block not in BLOCKS:
            raise UserError(f"runtime '{self.name}': unknown sparsity block {block!r}; expected one of "
                            f"{', '.join(BLOCKS)}")
        object.__setattr__(self, "block", block)

    def __str__(self) -> str:
        return self.name

    # -- writing models --------------------------------------------------------------------------------------

    def network(self) -> Network:
        """A new, empty network for this runtime."""
        raise NotImplementedError

    def kernel_model(self, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray) -> bytes:
        """A model running exactly one kernel, for the profiler to time."""
        net = self.network()
        shape = (1, spec.cin) if spec.op == "fc" else (1, spec.cin, spec.h, spec.w)
        return net.finish([net.kernel(net.input(shape), spec, weight, bias, "kernel")])

    def baseline_model(self, spec: KernelSpec) -> tuple[str, bytes]:
        """(name, model) of what to subtract from a kernel model's time; equal names share a model."""
        raise NotImplementedError

    def deployed(self, model: bytes, calibration: Iterable[np.ndarray] | None) -> bytes:
        """The file to deploy from a written network (`finish`'s bytes): the network itself, unless the runtime
        converts it, e.g. quantizes it calibrated on `calibration` (input batches, NCHW; None when there are none)."""
        return model

    def analyse(self, net: Network) -> tuple:
        """What the runtime's sparse rules make of a written network (XNNPACK: its clusters); () for none."""
        return ()

    def in_layouts(self, specs: dict[str, KernelSpec], analysis: tuple) -> dict[str, KernelSpec]:
        """A written network's layers (by name) each in the layout the runtime runs it in, given `analyse`'s
        result (the exporter's record of what it wrote)."""
        return specs

    def as_run(self, specs: dict[str, KernelSpec], analysis: tuple) -> dict[str, KernelSpec]:
        """A written network's layers as the runtime runs them: in their layouts, at the density they run at (what
        a model file read back is priced as)."""
        return self.in_layouts(specs, analysis)

    def stored_dense(self, analysis: tuple, kept: set[str], sparse: set[str]) -> set[str] | None:
        """The sparse layers (of `sparse`, by name) a written network must store dense instead of `kept`, when its
        storage would make the runtime run it wrong or not as priced (`analyse`'s result); None to keep it."""
        return None

    def verdict(self, analysis: tuple) -> dict | None:
        """Whether the runtime runs a written network in its sparse regime, and why: the export sidecar's record
        (None for a runtime without one)."""
        return None

    # -- reading models back ---------------------------------------------------------------------------------

    def read_layers(self, data: bytes, source: str = "model") -> dict[str, KernelSpec]:
        """The layers of a model file (its bytes) by name, as this runtime runs them; errors name `source`."""
        raise NotImplementedError

    def read_file(self, path: str | Path) -> dict[str, KernelSpec]:
        """`read_layers` of a model file, refused unless its suffix is this runtime's."""
        path = Path(path)
        suffixes = sorted({runtime.suffix for runtime in _REGISTRY.values()})
        if path.suffix.lower() not in suffixes:
            raise UserError(f"{path}: unknown model file type {path.suffix or '(no suffix)'!r}; expected "
                            f"{' or '.join(suffixes)}")
        if path.suffix.lower() != self.suffix:
            raise UserError(f"{path}: a {path.suffix.lower()} model, but runtime '{self.name}' runs {self.suffix} "
                            "models")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UserError(f"{path}: cannot read the model file ({err.strerror or err})") from None
        return self.read_layers(data, str(path))

    # -- measuring -------------------------------------------------------------------------------------------

    def runner_options(self) -> dict:
        """The settings of the device's runner job (profiler.runner) that select this runtime."""
        return {"runtime": self.package}

    # -- pricing ---------------------------------------------------------------------------------------------

    def run_density(self, df: pd.DataFrame) -> np.ndarray:
        """The density each kernel of a table runs at (vectorised; 1.0 where its weights are dense by then)."""
        return np.where(df["op"].to_numpy() == "dwconv", 1.0, df["density"].to_numpy()).astype(np.float64)

    def measured_forms(self, name: str, spec: KernelSpec, cluster=None) -> list[KernelSpec]:
        """The forms of a candidate's layer `name` a predictor for this runtime must have seen: the layer and its
        dense twin (`cluster`: the model's sparse regime, for runtimes that have one)."""
        return [spec, spec.replace(density=1.0)]

    def storage_chooser(self, predict: PredictFn | None) -> Chooser | None:
        """How the exporter decides to store a sparse layer dense (None: every sparse layer is stored sparse), given
        the latency predictor (None without one)."""
        return None

    def cluster(self, layers: Sequence[str], analysis: tuple):
        """The part of a model whose layers run in the runtime's sparse regime together, for the search's pricing
        and repair (None: each layer runs at its own density)."""
        return None


def faster_forms(predict: PredictFn, specs: list[KernelSpec]) -> tuple[np.ndarray, np.ndarray]:
    """Each spec's latency at its faster form, and whether that form is dense storage of a sparse layer: the one rule
    both a layer-by-layer runtime's price and the exporter's choice follow (one predictor call)."""
    sparse = [i for i, s in enumerate(specs) if s.is_sparse]
    lat = np.asarray(predict([*specs, *(specs[i].replace(density=1.0) for i in sparse)]), dtype=float)
    cost, as_dense = lat[: len(specs)].copy(), np.zeros(len(specs), dtype=bool)
    as_dense[sparse] = lat[len(specs):] < cost[sparse]
    cost[sparse] = np.minimum(cost[sparse], lat[len(specs):])
    return cost, as_dense


_REGISTRY: dict[str, type[Runtime]] = {}


def register(runtime: type[Runtime]) -> type[Runtime]:
    """Make a Runtime subclass available by its name (devices.yaml, tables, latency models)."""
    if not runtime.name:
        raise ValueError(f"{runtime.__name__}: a runtime needs a name")
    _REGISTRY[runtime.name] = runtime
    return runtime


def registered() -> Mapping[str, type[Runtime]]:
    """The registered runtimes by name."""
    return dict(_REGISTRY)


def at_precision(runtime: Runtime, precision: str) -> Runtime:
    """The registered runtime that runs `runtime`'s models at `precision`, with its block: named NAME-PRECISION for
    fp16 and int8 and NAME for fp32 (xnnpack <-> xnnpack-int8); a one-line error names the runtimes that have it."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == runtime.precision:
        return runtime
    base = runtime.name.removesuffix(f"-{runtime.precision}")
    name = base if precision == "fp32" else f"{base}-{precision}"
    if name not in _REGISTRY:
        have = [n for n, r in _REGISTRY.items() if r.precision == precision]
        raise UserError(f"runtime '{runtime.name}' has no {precision} counterpart; {precision} models run on "
                        f"{', '.join(have) or 'no registered runtime'}")
    return _REGISTRY[name](runtime.block)


def get_runtime(name: str | Runtime, block: str = "") -> Runtime:
    """The runtime `name` with sparsity `block` ("" for its default); a Runtime is returned as it is."""
    if isinstance(name, Runtime):
        return name
    if name not in _REGISTRY:
        raise UserError(f"unknown runtime {name!r}; expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name](block)
