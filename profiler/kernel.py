"""KernelSpec: the one description of a conv-like layer, shared by profiler, predictor and pruner."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from profiler.errors import UserError

OPS = ("conv", "dwconv", "fc")
ACTIVATIONS = ("none", "relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid")
FUSED_ACTIVATIONS = ("none", "relu", "relu6")
"""Activations a runtime fuses into the conv; the others run as ops of their own after it (profiler.runtimes)."""
# Block names read "inputs x outputs" of the weight matrix, as JCW writes them:
#   "1x4": 4 consecutive output channels at one (cin, kh, kw) position are kept or
#          dropped together (JCW's block; what XNNPACK's sparse 1x1 kernels exploit);
#   "4x1": 4 consecutive input channels of one output channel (TFLite's built-in
#          sparse FULLY_CONNECTED kernel, whose own name for it is "1x4");
#   "unstructured": any weight alone.
BLOCKS = ("1x4", "4x1", "unstructured")
LAYOUTS = ("nhwc", "nchw")
"""How the kernel runs: "nhwc" is every runtime's default (XNNPACK's dense path); "nchw" is XNNPACK's sparse
inference, where every node of a cluster that passes its gate runs a CHW kernel (profiler.xnnpack)."""


def runs_chw(op: str, k: int, stride: int) -> bool:
    """Whether a layer inside a sparse XNNPACK cluster runs a CHW kernel measured in the "nchw" layout: 1x1 stride-1
    convs (SpMM) and depthwise convs. The cluster's entry conv and everything outside it stay "nhwc"."""
    return op == "dwconv" or (op == "conv" and k == 1 and stride == 1)


class SpecError(UserError, ValueError):
    """A KernelSpec that describes no possible kernel."""


@dataclass(frozen=True)
class KernelSpec:
    """A conv (dense or grouped), depthwise conv or fully connected layer: its shape, sparsity and activation.

    `h`, `w` are the input's spatial size (1 for "fc"); padding is always k // 2 on
    every side, as in the PyTorch models the pruner reads. `density` is the fraction
    of weights kept (1.0 = dense), pruned in `block`s.
    """

    op: str
    h: int
    w: int
    cin: int
    cout: int
    k: int = 1
    stride: int = 1
    groups: int = 1
    density: float = 1.0
    block: str = "1x4"
    activation: str = "none"
    layout: str = "nhwc"

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> SpecError:
            return SpecError(f"KernelSpec field '{field}' = {getattr(self, field)!r}: {why}")

        if self.op not in OPS:
            raise bad("op", f"must be one of {', '.join(OPS)}")
        if self.activation not in ACTIVATIONS:
            raise bad("activation", f"must be one of {', '.join(ACTIVATIONS)}")
        if self.block not in BLOCKS:
            raise bad("block", f"must be one of {', '.join(BLOCKS)}")
        if self.layout not in LAYOUTS:
            raise bad("layout", f"must be one of {', '.join(LAYOUTS)}")
        if self.layout == "nchw" and (not runs_chw(self.op, self.k, self.stride) or self.is_grouped):
            raise bad("layout", "XNNPACK runs only 1x1 stride-1 convs and depthwise convs inside an NCHW cluster")
        for name in ("h", "w", "cin", "cout", "k", "stride", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        if not 0.0 <= self.density <= 1.0:
            raise bad("density", "must be in [0, 1]")
        if self.cin % self.groups or self.cout % self.groups:
            raise bad("groups", f"must divide cin={self.cin} and cout={self.cout}")
        if self.op == "dwconv" and not (self.groups == self.cin == self.cout):
            raise bad("groups", "a depthwise conv needs groups == cin == cout (no channel multiplier)")
        if self.op == "conv" and self.groups > 1 and self.groups == self.cin == self.cout:
            raise bad("groups", "a conv with groups == cin == cout is a depthwise conv: op 'dwconv'")
        if self.op == "dwconv" and self.density < 1.0:
            raise bad("density", "depthwise convs are never weight-pruned")
        if self.is_grouped and self.density < 1.0:
            raise bad("density", "grouped convs are never weight-pruned")
        if self.op == "fc" and (self.h, self.w, self.k, self.stride, self.groups) != (1, 1, 1, 1, 1):
            raise SpecError("an 'fc' KernelSpec needs h = w = k = stride = groups = 1")
        if self.k % 2 == 0:
            raise bad("k", "must be odd (padding k // 2 on every side)")
        if self.k > self.h + 2 * (self.k // 2):
            raise bad("k", f"larger than the padded input {self.h}x{self.w}")

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width (PyTorch's formula with padding k // 2)."""
        p = self.k // 2
        return ((self.h + 2 * p - self.k) // self.stride + 1, (self.w + 2 * p - self.k) // self.stride + 1)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """The weight's shape in PyTorch's layout (cout, cin / groups, k, k)."""
        return (self.cout, self.cin // self.groups, self.k, self.k)

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates of one inference."""
        oh, ow = self.out_hw
        return oh * ow * self.cout * (self.cin // self.groups) * self.k * self.k

    @property
    def is_grouped(self) -> bool:
        """A grouped conv that is not depthwise (groups > 1, op "conv")."""
        return self.op == "conv" and self.groups > 1

    @property
    def is_sparse(self) -> bool:
        return self.density < 1.0

    def replace(self, **changes) -> KernelSpec:
        return dataclasses.replace(self, **changes)

    def to_row(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row) -> KernelSpec:
        """Build from a mapping (a table row): ints and floats are coerced, extra keys ignored."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in row:
                value = row[f.name]
                kwargs[f.name] = {"int": int, "float": float, "str": str}[f.type](value)
        return cls(**kwargs)

    def key(self) -> tuple:
        """A hashable identity for results tables (density rounded so CSV round trips match)."""
        return dataclasses.astuple(self.replace(density=round(self.density, 6)))

    def name(self) -> str:
        """A short file-safe name, e.g. conv_56x56_128-128_k1s1_d0.3_1x4_none (_g4 when grouped, _nchw inside a
        sparse cluster)."""
        return (
            f"{self.op}_{self.h}x{self.w}_{self.cin}-{self.cout}_k{self.k}s{self.stride}"
            f"_d{self.density:g}_{self.block}_{self.activation}" + (f"_g{self.groups}" if self.is_grouped else "")
            + ("_nchw" if self.layout == "nchw" else "")
        )


FIELDS = tuple(f.name for f in dataclasses.fields(KernelSpec))
