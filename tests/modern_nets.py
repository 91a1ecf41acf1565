"""Modern mobile CNNs of the tests' own, for the exporter, reader and pricing tests (through the root conftest's
fixtures) and bench/modern_bench.py: a MobileNetV3-small-style net (squeeze-and-excite with hardsigmoid, hardswish,
5x5 depthwise), an EfficientNet-B0-style block stack (SiLU, squeeze-and-excite through linear layers) and an
inception-style net (concat, grouped conv, average pooling, nearest and bilinear upsampling)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: nn.Module | None = None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class SqueezeExcite(nn.Module):
    """Global mean -> 1x1 conv -> relu -> 1x1 conv -> gate -> channel-wise multiply (MobileNetV3)."""

    def __init__(self, channels: int, squeeze: int, gate: nn.Module):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(torch.relu(self.reduce(s))))


class LinearSqueezeExcite(nn.Module):
    """The same with linear layers and SiLU / sigmoid (EfficientNet), the scale viewed back to (N, C, 1, 1)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Linear(channels, squeeze)
        self.expand = nn.Linear(squeeze, channels)

    def forward(self, x):
        n, c = x.shape[:2]
        s = torch.sigmoid(self.expand(nn.functional.silu(self.reduce(x.mean((2, 3))))))
        return x * s.view(n, c, 1, 1)


class InvertedResidual(nn.Module):
    def __init__(self, cin, expand, cout, k, stride, act, se: nn.Module | None):
        super().__init__()
        self.expand = conv_bn(cin, expand, act=act()) if expand != cin else nn.Identity()
        self.dw = conv_bn(expand, expand, k, stride, groups=expand, act=act())
        self.se = se or nn.Identity()
        self.project = conv_bn(expand, cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        hs, re = nn.Hardswish, nn.ReLU

        def se(c):
            return SqueezeExcite(c, c // 4, nn.Hardsigmoid())

        self.stem = conv_bn(3, 16, 3, 2, act=hs())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 16, 3, 2, re, se(16)),
            InvertedResidual(16, 72, 24, 3, 2, re, None),
            InvertedResidual(24, 88, 24, 3, 1, re, None),
            InvertedResidual(24, 96, 40, 5, 2, hs, se(96)),
            InvertedResidual(40, 240, 40, 5, 1, hs, se(240)),
        )
        self.head = conv_bn(40, 288, act=hs())
        self.classifier = nn.Sequential(nn.Linear(288, 256), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(256, classes))

    def forward(self, x):
        return self.classifier(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class EfficientNetB0Blocks(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        silu = nn.SiLU
        self.stem = conv_bn(3, 16, 3, 2, act=silu())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 8, 3, 1, silu, LinearSqueezeExcite(16, 4)),
            InvertedResidual(8, 48, 12, 3, 2, silu, LinearSqueezeExcite(48, 4)),
            InvertedResidual(12, 72, 12, 3, 1, silu, LinearSqueezeExcite(72, 4)),
            InvertedResidual(12, 72, 20, 5, 2, silu, LinearSqueezeExcite(72, 4)),
            InvertedResidual(20, 120, 20, 7, 1, silu, LinearSqueezeExcite(120, 8)),
        )
        self.head = conv_bn(20, 160, act=silu())
        self.fc = nn.Linear(160, classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class InceptionBlock(nn.Module):
    """1x1 | 1x1 -> grouped 3x3 | 1x1 -> 5x5 | 3x3 average pool -> 1x1, concatenated along channels."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int]):
        super().__init__()
        a, b, c, d = widths
        self.a = conv_bn(cin, a, act=nn.ReLU())
        self.b = nn.Sequential(conv_bn(cin, b, act=nn.ReLU()), conv_bn(b, b, 3, groups=4, act=nn.ReLU()))
        self.c = nn.Sequential(conv_bn(cin, c, act=nn.ReLU()), conv_bn(c, c, 5, act=nn.ReLU()))
        self.d = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_bn(cin, d, act=nn.ReLU()))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x), self.d(x)], 1)


class InceptionNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 24, 3, 2, act=nn.ReLU())
        self.mix1 = InceptionBlock(24, (16, 16, 8, 8))
        self.down = conv_bn(48, 32, 3, 2, act=nn.ReLU6())
        self.up_nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.mix2 = InceptionBlock(80, (16, 24, 8, 16))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.mix1(self.stem(x))
        coarse = self.down(x)
        up = nn.functional.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.mix2(torch.cat([x, self.up_nearest(coarse) + up], 1))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


NETS = {"mobilenet_v3_small": MobileNetV3Small, "efficientnet_b0": EfficientNetB0Blocks, "inception": InceptionNet}


def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics, so folding is really tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def built(name: str) -> nn.Module:
    """The network `name` of NETS, seeded, in eval mode, with random BatchNorm statistics."""
    torch.manual_seed(0)
    model = NETS[name]().eval()
    randomise_bn(model, torch.Generator().manual_seed(1))
    return model
