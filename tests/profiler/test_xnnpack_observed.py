"""The toolkit's XNNPACK verdict (profiler.xnnpack) against what XNNPACK executes on arm-emu (profiler.observe_xnnpack:
breakpoint counts on its NCHW / SpMM functions, and the output against the built-in kernels'), for a corpus of small
nets exported as the toolkit exports them: MobileNetV2 blocks on both sides of the 2/3 gate, MobileNetV3 blocks with
squeeze-and-excite gated by sigmoid and by hardsigmoid, hardswish and 5x5 depthwise convs, a concat, bilinear and
nearest resizes, two entries, dense-stored zeros, an exit-less cluster, a linear squeeze-and-excite, a file for the
built-in kernels, and two hand-built files (no DENSIFY; a dangling 1x1 conv XNNPACK runs wrong). For every net the
regime (dense, sparse, broken) and the number of CHW and SpMM convs XNNPACK creates equal the verdict's, and the
output under the default settings equals the built-in kernels' unless the verdict says "broken". One emulated
process observes them all (about 35 s; gdb reading LiteRT's symbols is most of it).

Skipped without arm-emu (`make arm-emu`), except under CI, where a missing device is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from profiler import xnnpack
from profiler.observe_xnnpack import observe
from profiler.tflite_reader import read_model
from profiler.tflite_writer import OP
from pruner.deploy.export import export
from tests.profiler.xnnpack_graphs import graph, pool_then

EMU = Path(__file__).resolve().parents[2] / ".arm-emu"
INSTALLED = os.access(EMU / "python", os.X_OK)
if not INSTALLED and os.environ.get("CI"):
    raise RuntimeError("the arm-emu device is not installed: .ci/run must run `make arm-emu` before the tests")
pytestmark = pytest.mark.skipif(not INSTALLED, reason="arm-emu not installed: run `make arm-emu` (needs apt-get)")
SHAPE = (1, 3, 32, 32)


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    """MEAN -> 1x1 -> relu -> 1x1 -> gate -> multiply (MobileNetV3), or through linear layers (EfficientNet)."""

    def __init__(self, channels: int, gate: type, linear: bool = False):
        super().__init__()
        layer = nn.Linear if linear else nn.Conv2d
        self.reduce, self.expand = (layer(channels, channels // 4, *(() if linear else (1,))),
                                    layer(channels // 4, channels, *(() if linear else (1,))))
        self.gate, self.linear = gate(), linear

    def forward(self, x):
        if self.linear:
            n, c = x.shape[:2]
            return x * self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3)))))).view(n, c, 1, 1)
        return x * self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class Block(nn.Module):
    """An inverted residual: 1x1 expand, k x k depthwise, [squeeze-and-excite], 1x1 project, [+ input]."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: type = nn.ReLU6, se: nn.Module = None):
        super().__init__()
        self.expand, self.dw = conv_bn(cin, 3 * cin, act=act), conv_bn(3 * cin, 3 * cin, k, stride, 3 * cin, act)
        self.se, self.project = se or nn.Identity(), conv_bn(3 * cin, cout, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


def head(cin: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]


def mobilenet_v2() -> nn.Module:
    return nn.Sequential(conv_bn(3, 16, 3, 2), Block(16, 16), Block(16, 24, stride=2), conv_bn(24, 48), *head(48))


def mobilenet_v3(gate: type, linear: bool = False) -> nn.Module:
    hs = nn.Hardswish
    return nn.Sequential(conv_bn(3, 16, 3, 2, act=hs), Block(16, 16, se=SqueezeExcite(48, gate, linear)),
                         Block(16, 24, 5, 2, hs, SqueezeExcite(48, gate, linear)), conv_bn(24, 48, act=hs), *head(48))


class TwoBranches(nn.Module):
    """stem -> block -> two 1x1 branches joined by `join` (concat, or an add after a bilinear / nearest resize)."""

    def __init__(self, join: str):
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 16, 3, 2), Block(16, 16))
        self.a = conv_bn(16, 24)
        self.b = conv_bn(16, 24) if join == "concat" else nn.Sequential(conv_bn(16, 16, 3, 2, 16), conv_bn(16, 24))
        self.join, self.tail = join, conv_bn(48 if join == "concat" else 24, 32)
        self.pool = nn.Sequential(*head(32))

    def forward(self, x):
        x = self.body(x)
        if self.join == "concat":
            y = torch.cat([self.a(x), self.b(x)], 1)
        else:
            y = self.a(x) + nn.functional.interpolate(self.b(x), scale_factor=2.0, mode=self.join,
                                                      **({"align_corners": False} if self.join == "bilinear" else {}))
        return self.pool(self.tail(y))


class TwoStems(nn.Module):
    """Two entry convs on the input, joined by an add: one cluster with two entries."""

    def __init__(self):
        super().__init__()
        self.stem_a, self.stem_b = conv_bn(3, 16, 3, 2), conv_bn(3, 16, 3, 2)
        self.body = nn.Sequential(Block(16, 16), conv_bn(16, 32), *head(32))

    def forward(self, x):
        return self.body(self.stem_a(x) + self.stem_b(x))


def exit_less() -> nn.Module:
    """stem -> 1x1 -> max pool -> 1x1 -> sigmoid -> mean: {stem, 1x1} has no exit and its last value only MAX_POOL
    reads; the exporter stores it without DENSIFY, or XNNPACK would run that 1x1 conv NHWC on NCHW data."""
    return nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32), nn.MaxPool2d(2), conv_bn(32, 32, act=nn.Sigmoid),
                         *head(32))


def pruned(model: nn.Module, zeros: float, seed: int = 0) -> nn.Module:
    """The model (BatchNorm randomised, eval mode) with `zeros` of every 1x1 conv's weights set to zero."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
                flat = m.weight.view(-1)
                flat[torch.from_numpy(rng.permutation(flat.numel())[: int(round(zeros * flat.numel()))])] = 0.0
    return model.eval()


def exported(model: nn.Module, zeros: float, **kwargs) -> bytes:
    return export(pruned(model, zeros), SHAPE, "xnnpack", **kwargs).model


CORPUS = {
    "mobilenet_v2 blocks, 80% zeros": lambda: exported(mobilenet_v2(), 0.8),
    "mobilenet_v2 blocks, 70% zeros (just over 2/3)": lambda: exported(mobilenet_v2(), 0.7),
    "mobilenet_v2 blocks, 60% zeros (under 2/3)": lambda: exported(mobilenet_v2(), 0.6),
    "mobilenet_v3 blocks, SE with sigmoid, 85%": lambda: exported(mobilenet_v3(nn.Sigmoid), 0.85),
    "mobilenet_v3 blocks, SE with hardsigmoid, 85%": lambda: exported(mobilenet_v3(nn.Hardsigmoid), 0.85),
    "mobilenet_v3 blocks, SE with hardsigmoid, 50%": lambda: exported(mobilenet_v3(nn.Hardsigmoid), 0.5),
    "SE through linear layers (EfficientNet), 85%": lambda: exported(mobilenet_v3(nn.Sigmoid, linear=True), 0.85),
    "concat of two 1x1 branches, 80%": lambda: exported(TwoBranches("concat"), 0.8),
    "bilinear resize inside, 80%": lambda: exported(TwoBranches("bilinear"), 0.8),
    "nearest resize inside, 80%": lambda: exported(TwoBranches("nearest"), 0.8),
    "two entries joined by an add, 80%": lambda: exported(TwoStems(), 0.8),
    "half the 1x1 convs stored dense, 80%": lambda: exported(
        mobilenet_v2(), 0.8, prefer_dense=lambda specs: [i % 2 == 0 for i in range(len(specs))]),
    "every 1x1 conv kept dense, 80% (re-stored sparse)": lambda: exported(
        mobilenet_v2(), 0.8, prefer_dense=lambda specs: [True] * len(specs)),
    "exit-less cluster, 80% (exported without DENSIFY)": lambda: exported(exit_less(), 0.8),
    "built-in kernels' file (sparse FULLY_CONNECTED v8), 80%": lambda: export(
        pruned(mobilenet_v2(), 0.8), SHAPE, "builtin").model,
    "hand-built: dense-stored zeros, no DENSIFY": lambda: graph(zeros=240, stored="dense").to_bytes(),
    "hand-built: dangling 1x1 conv with DENSIFY": lambda: pool_then("sigmoid").to_bytes(),
}


def predicted(data: bytes) -> dict:
    """The verdict's regime and the CHW / SpMM convs XNNPACK creates if it is right."""
    m = read_model(data)
    clusters = xnnpack.analyse(m)
    running = {n for c in clusters if c.sparse or c.broken for n in c.nchw}
    convs = {m.tensors[op.outputs[0]].name: op for op in m.ops if op.code in (OP.CONV_2D, OP.DEPTHWISE_CONV_2D)}
    chw = [op for name, op in convs.items() if name in running]
    spmm = [op for op in chw if op.code == OP.CONV_2D and m.tensors[op.inputs[1]].shape[1:3] == (1, 1)]
    regime = "broken" if any(c.broken for c in clusters) else "sparse" if any(c.sparse for c in clusters) else "dense"
    return {"regime": regime, "nchw_convs": len(chw), "spmm_convs": len(spmm),
            "reason": xnnpack.verdict_of(clusters)["reason"]}


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("corpus")
    files, expected = [], {}
    for i, (name, build) in enumerate(CORPUS.items()):
        data = build()
        files.append(folder / f"net{i:02d}.tflite")
        files[-1].write_bytes(data)
        expected[name] = predicted(data)
    records = observe(files, EMU)
    for (name, want), got in zip(expected.items(), records, strict=True):
        print(f"| {name} | {want['regime']} | {got['regime']} | {got['nchw_convs']}/{got['spmm_convs']} | "
              f"{got['runtime_flags']} | {want['reason']} |")
    return {name: (want, got) for (name, want), got in zip(expected.items(), records, strict=True)}


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_verdict_is_what_xnnpack_runs(observed, name):
    """Same regime and CHW / SpMM convs; the output under the default settings equal to the built-in kernels' unless
    the verdict says XNNPACK breaks it."""
    want, got = observed[name]
    assert (got["regime"], got["nchw_convs"], got["spmm_convs"]) == (
        want["regime"], want["nchw_convs"], want["spmm_convs"]), (want["reason"], got)
    assert got["regime"] == "broken" or got["max_diff"] <= 1e-4 * got["max_abs"], got


def test_the_corpus_covers_both_regimes_and_the_broken_one(observed):
    regimes = [got["regime"] for _, got in observed.values()]
    assert {"dense", "sparse", "broken"} <= set(regimes) and len(regimes) >= 12
    assert regimes.count("sparse") >= 6 and regimes.count("dense") >= 5


def test_a_file_without_densify_never_gets_the_sparse_hint(observed):
    _, got = observed["hand-built: dense-stored zeros, no DENSIFY"]
    assert got["runtime_flags"] == ["0x10"]
    _, hinted = observed["half the 1x1 convs stored dense, 80%"]
    assert all(int(flag, 16) & 1 for flag in hinted["runtime_flags"])

