import pytest
import torch
from torch import nn

from profiler.errors import UserError
from pruner.model.graph import AnalysisError, analyze
from pruner.model.reference import MobileNetV1, MobileNetV2, ResNet18


def group_of(graph, layer_name):
    return next(g for g in graph.groups if layer_name in g.layers)


def test_resnet18_groups_couple_residual_adds_and_downsample():
    graph = analyze(ResNet18(num_classes=10, width_mult=0.25), (1, 3, 32, 32))
    stage2 = group_of(graph, "layer2.0.downsample.0")
    assert set(stage2.layers) == {"layer2.0.downsample.0", "layer2.0.conv2", "layer2.1.conv2"}
    assert stage2.kinds == ("strided", "residual", "general")
    assert set(group_of(graph, "conv1").layers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert group_of(graph, "layer1.0.conv1").layers == ("layer1.0.conv1",)
    # 4 residual groups + 8 inner convs; the classifier's classes are no group
    assert len(graph.groups) == 12
    assert all("fc" not in g.layers for g in graph.groups)


def test_mobilenet_v2_couples_depthwise_and_residual_projections():
    graph = analyze(MobileNetV2(num_classes=10, width_mult=0.35), (1, 3, 32, 32))
    assert group_of(graph, "features.2.conv.0.0").layers == ("features.2.conv.0.0", "features.2.conv.1.0")
    assert group_of(graph, "features.2.conv.2").layers == ("features.2.conv.2", "features.3.conv.2")
    # 17 expansion/depthwise groups (stem included), 7 stage outputs, the last 1x1 conv
    assert len(graph.groups) == 25
    by_name = {layer.name: layer for layer in graph.layers}
    assert by_name["features.2.conv.1.0"].op == "dwconv" and not by_name["features.2.conv.1.0"].prunable
    assert not by_name["features.0.0"].prunable and not by_name["classifier.1"].prunable
    assert by_name["features.18.0"].prunable and "last" in by_name["features.18.0"].kinds
    assert by_name["features.2.conv.0.0"].activation == "relu6"
    assert by_name["features.2.conv.2"].activation == "none"
    assert len(graph.prunable) == 34  # every non-depthwise conv but the first


def test_layer_shapes_come_from_shape_propagation():
    graph = analyze(MobileNetV1(num_classes=7, width_mult=0.25), (1, 3, 40, 48))
    first, dw = graph.layers[0], graph.layers[1]
    assert (first.h, first.w, first.cin, first.cout, first.k, first.stride) == (40, 48, 3, 8, 3, 2)
    assert (dw.h, dw.w, dw.op) == (20, 24, "dwconv")
    fc = graph.layers[-1]
    assert (fc.op, fc.cin, fc.cout, fc.h, fc.w) == ("fc", 256, 7, 1, 1)
    specs = graph.kernel_specs(graph.full_channels, {}, "4x1")
    assert list(specs) == [layer.name for layer in graph.layers]
    assert specs["features.0.0"].activation == "relu" and specs["features.0.0"].block == "4x1"
    assert specs["features.1.0.0"].groups == 8


def test_configurable_first_and_classifier_weight_pruning():
    model = MobileNetV1(num_classes=10, width_mult=0.25)
    graph = analyze(model, (1, 3, 32, 32), dense_first=False, dense_classifier=False)
    names = [layer.name for layer in graph.prunable]
    assert names[0] == "features.0.0" and names[-1] == "fc"


def test_analysis_leaves_the_model_as_it_was():
    model = ResNet18(num_classes=10, width_mult=0.25).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyze(model, (1, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Net(nn.Module):
    """conv -> middle -> conv -> pool -> fc, with a replaceable middle module."""

    def __init__(self, middle: nn.Module, cin: int = 8, mid_out: int = 8, conv: nn.Conv2d | None = None):
        super().__init__()
        self.stem = conv or nn.Conv2d(3, cin, 3, padding=1)
        self.middle = middle
        self.head = nn.Conv2d(mid_out, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.head(self.middle(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class Repeat(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1)


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, 8, 1, 1))

    def forward(self, x):
        return x * self.gamma


class FunctionalRepeat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(self.a(x).repeat(1, 2, 1, 1)).mean((2, 3))


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.a(self.a(x))


@pytest.mark.parametrize(
    "model, pattern",
    [
        (Net(nn.Conv2d(8, 16, 3, padding=1, groups=8), mid_out=16), r"'middle' \(Conv2d\).*channel multiplier"),
        (Net(Repeat(), mid_out=16), r"'middle' \(Repeat\) changes the channel count \(8 -> 16\)"),
        (Net(Scale()), r"'middle' \(Scale\) holds parameters"),
        (Net(nn.Identity(), conv=nn.Conv2d(3, 8, 3)), r"'stem' \(Conv2d\).*padding"),
        (Net(nn.Identity(), conv=nn.Conv2d(3, 8, 3, padding=2, dilation=2)), r"'stem' \(Conv2d\).*dilation"),
        (Net(nn.Conv1d(8, 8, 1)), r"'middle' \(Conv1d\) holds parameters"),
        (Reused(), r"'a' \(Conv2d\) is called more than once"),
        (FunctionalRepeat(), r"narrowing.*'b' \(Conv2d\)"),
    ],
)
def test_unsupported_layers_raise_a_user_error_naming_the_module(model, pattern):
    with pytest.raises(AnalysisError, match=pattern) as info:
        analyze(model, (1, 3, 8, 8))
    assert isinstance(info.value, UserError)


def test_a_grouped_conv_keeps_the_width_of_the_channels_it_reads_and_writes():
    graph = analyze(Net(nn.Conv2d(8, 12, 3, padding=1, groups=4), mid_out=12), (1, 3, 8, 8))
    assert [g.layers for g in graph.groups] == [("head",)]  # stem's and middle's channels come in 4 groups
    by_name = {layer.name: layer for layer in graph.layers}
    middle = by_name["middle"]
    assert (middle.op, middle.groups, middle.in_groups, middle.out_groups) == ("conv", 4, (), ())
    assert not middle.prunable
    assert "first" not in by_name["head"].kinds and by_name["head"].prunable
    spec = graph.kernel_specs((4,), {}, "1x4")["middle"]
    assert (spec.cin, spec.cout, spec.groups, spec.is_grouped) == (8, 12, 4, True)


def test_a_model_whose_forward_fails_is_reported():
    with pytest.raises(AnalysisError, match="forward pass fails"):
        analyze(MobileNetV2(num_classes=10, width_mult=0.35), (1, 1, 32, 32))


class AddAtOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.a(x)
        return self.b(x) + self.c(x)


def test_channels_returned_as_model_output_are_not_a_width_gene():
    graph = analyze(AddAtOutput(), (1, 3, 8, 8))
    assert [g.layers for g in graph.groups] == [("a",)]
    assert graph.prunable == ()  # "a" reads the input, "b" and "c" produce the output: dense by default


class Inception(nn.Module):
    """Concat of two branches, functional activations, and a linear layer reading a flattened 4x4 map."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Conv2d(16, 8, 1)
        self.b = nn.Conv2d(16, 12, 3, padding=1)
        self.c = nn.Conv2d(20, 16, 1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        x = nn.functional.relu6(self.c(torch.cat([self.a(x), self.b(x)], 1)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def test_user_models_with_concats_flatten_and_functional_activations():
    graph = analyze(Inception(), (1, 3, 16, 16))
    assert [g.layers for g in graph.groups] == [("stem.0",), ("a",), ("b",), ("c",), ("fc1",)]
    by_name = {layer.name: layer for layer in graph.layers}
    assert by_name["c"].in_groups == ((1, 1), (2, 1))  # the concat of a's and b's channels
    assert by_name["fc1"].in_groups == ((3, 16),)  # each of c's channels is 4x4 flattened features
    assert [by_name[n].activation for n in ("stem.0", "a", "c", "fc1", "fc2")] == [
        "relu",
        "none",
        "relu6",
        "relu",
        "none",
    ]
    specs = graph.kernel_specs((16, 4, 8, 12, 32), {"fc1": 0.5}, "1x4")
    assert (specs["c"].cin, specs["fc1"].cin, specs["fc1"].density) == (12, 192, 0.5)
