"""Reference CNNs defined in the project (torchvision cannot be installed here): MobileNetV2 (and its 32x32 variant
for CIFAR), ResNet-18, MobileNetV1."""

from __future__ import annotations

import torch
from torch import nn

from profiler.errors import UserError


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% of `value` (torchvision's rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU6):
    """Conv (padding k // 2, no bias), BatchNorm and an optional activation, as torchvision's Conv2dNormActivation."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, residual add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn(cin, hidden, k=1))
        layers.append(conv_bn(hidden, hidden, stride=stride, groups=hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (same module names and structure), any input size, class and channel count."""

    # expansion t, channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2))
    SETTINGS += ((6, 320, 1, 1),)

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [conv_bn(in_channels, cin, stride=2)]
        for t, c, n, s in self.SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(conv_bn(cin, self.last_channel, k=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class CifarMobileNetV2(MobileNetV2):
    """MobileNetV2 for 32x32 images (CIFAR), shaped to run sparse on a phone: its 3x3 stride-2 stem on 3 channels is
    where XNNPACK's sparse path starts, and the blocks' strides (1, 1, 2, 2, 1, 2, 1: 16x16 down to 2x2 features)
    are those of the usual CIFAR MobileNetV2, one stride moved into the stem. Trained as the README says, width 0.75
    reaches about 90% top-1 on CIFAR-10."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2))
    SETTINGS += ((6, 320, 1, 1),)

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, in_channels: int = 3, dropout: float = 0.2):
        super().__init__(num_classes, width_mult, in_channels, dropout)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a residual add, with a strided 1x1 downsample when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (same module names), with a width multiplier and configurable input channels."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        widths = [make_divisible(c * width_mult, 4) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class MobileNetV1(nn.Module):
    """MobileNetV1: a 3x3 stem, then 13 depthwise-separable blocks (3x3 depthwise, 1x1 pointwise), ReLU."""

    SETTINGS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        cin = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn(in_channels, cin, stride=2, act=nn.ReLU)]
        for c, stride in self.SETTINGS:
            cout = make_divisible(c * width_mult)
            layers.append(
                nn.Sequential(
                    conv_bn(cin, cin, stride=stride, groups=cin, act=nn.ReLU), conv_bn(cin, cout, k=1, act=nn.ReLU)
                )
            )
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal convs, unit BN, small normal linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


MODELS = {"mobilenet_v2": MobileNetV2, "mobilenet_v2_cifar": CifarMobileNetV2, "resnet18": ResNet18,
          "mobilenet_v1": MobileNetV1}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a reference model by name (a key of MODELS) with its keyword options."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
