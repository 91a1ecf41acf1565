import numpy as np
import pytest

from profiler.kernel import KernelSpec
from pruner.model.graph import analyze
from pruner.model.reference import MobileNetV1, MobileNetV2, ResNet18
from pruner.search.space import WIDTH_BOUNDS, Candidate, SearchSpace, SpaceError, round_channels


@pytest.fixture(scope="module")
def resnet():
    return SearchSpace(analyze(ResNet18(num_classes=10, width_mult=0.25), (1, 3, 32, 32)))


@pytest.fixture(scope="module", params=["mobilenet_v2", "mobilenet_v1"])
def mobile(request):
    model = {"mobilenet_v2": MobileNetV2, "mobilenet_v1": MobileNetV1}[request.param](10, 0.35)
    return SearchSpace(analyze(model, (1, 3, 32, 32)))


@pytest.mark.parametrize(
    "channels, ratio, multiple, expected",
    [(16, 0.3, 4, 8), (40, 0.7, 4, 28), (16, 0.1, 4, 4), (10, 1.0, 4, 10), (3, 0.1, 4, 3), (64, 0.5, 8, 32)],
)
def test_channel_rounding(channels, ratio, multiple, expected):
    assert round_channels(channels, ratio, multiple) == expected


def test_jcw_default_bounds_per_kind_on_resnet18(resnet):
    kinds = dict(zip((g.layers[0] for g in resnet.graph.groups), resnet.group_kinds, strict=True))
    assert kinds["conv1"] == "residual"  # first and residual: the stricter bound wins
    assert kinds["layer2.0.conv1"] == "strided" and kinds["layer1.0.conv1"] == "general"
    lower = dict(zip(resnet.gene_names, resnet.lower, strict=True))
    grid = resnet.width_grid
    assert grid[lower["width:conv1"]] == 0.9
    assert grid[lower["width:layer2.0.downsample.0"]] == 0.9
    assert grid[lower["width:layer2.0.conv1"]] == 0.6
    assert grid[lower["width:layer1.0.conv1"]] == 0.5
    assert resnet.density_grid[lower["density:layer2.0.conv1"]] == 0.8
    assert resnet.density_grid[lower["density:layer4.1.conv2"]] == 0.5
    assert resnet.density_grid[lower["density:layer1.0.conv1"]] == 0.3
    assert list(resnet.upper) == [9] * resnet.n_var


def test_random_candidates_round_trip_and_respect_bounds(mobile):
    xs = mobile.sample(np.random.default_rng(0), 50)
    assert np.all(xs >= mobile.lower) and np.all(xs <= mobile.upper)
    for x in xs:
        candidate = mobile.decode(x)
        assert np.array_equal(mobile.encode(candidate), x)
        assert all(d >= 0.3 - 1e-9 for d in candidate.densities) and all(w >= 0.5 - 1e-9 for w in candidate.widths)
        channels = mobile.channels(x)
        assert all(c % 4 == 0 or c == g.channels for c, g in zip(channels, mobile.graph.groups, strict=True))


def test_full_candidate_is_the_model(mobile):
    x = mobile.full()
    assert mobile.channels(x) == mobile.graph.full_channels
    assert set(mobile.densities(x).values()) == {1.0}
    specs = mobile.kernel_specs(x, "1x4")
    assert [(s.cin, s.cout) for s in specs.values()] == [(layer.cin, layer.cout) for layer in mobile.graph.layers]


def test_kernel_specs_follow_channels_and_densities(resnet):
    x = resnet.lower
    specs = resnet.kernel_specs(x, "4x1")
    assert all(isinstance(s, KernelSpec) and s.block == "4x1" for s in specs.values())
    channels = resnet.channels(x)
    assert specs["layer1.0.conv1"].cout == channels[1] == round_channels(16, 0.5)
    assert specs["layer1.0.conv2"].cin == channels[1]
    assert specs["fc"].cin == channels[9] and specs["fc"].cout == 10
    densities = resnet.densities(x)
    assert specs["layer2.0.conv1"].density == densities["layer2.0.conv1"] == 0.8
    assert specs["conv1"].density == 1.0 and specs["conv1"].activation == "relu"


def test_table_reads_one_row_per_layer(resnet):
    table = resnet.table(resnet.lower)
    assert list(table.columns) == ["layer", "op", "kind", "cin", "cout", "full_cout", "density"]
    assert len(table) == len(resnet.graph.layers)
    row = table.set_index("layer").loc["layer4.1.conv2"]
    assert (row["kind"], row["density"], row["full_cout"]) == ("last", 0.5, 128)


def test_bad_candidates_are_refused_naming_the_gene(resnet):
    with pytest.raises(SpaceError, match="31 integers"):
        resnet.decode([9] * 3)
    x = resnet.full()
    x[0] = 2
    with pytest.raises(SpaceError, match=r"gene 0 \(width:conv1\) = 2 is outside \[8, 9\]"):
        resnet.channels(x)
    with pytest.raises(SpaceError, match="not on the grid"):
        resnet.encode(Candidate((0.95,) * 12, (1.0,) * 19))


def test_custom_grids_bounds_and_multiple(resnet):
    bounds = {"first": 0.5, "strided": 0.5, "residual": 0.5, "last": 0.5, "general": 0.25}
    space = SearchSpace(
        resnet.graph,
        width_grid=(0.25, 0.5, 0.75, 1.0),
        density_grid=(0.05, 0.5, 1.0),
        width_bounds=bounds,
        density_bounds=bounds,
        multiple=8,
    )
    assert space.lower[0] == 1 and space.lower[1] == 0
    channels = space.channels(space.lower)
    assert channels[1] == 8 and channels[0] == 8
    with pytest.raises(SpaceError, match="width_grid"):
        SearchSpace(resnet.graph, width_grid=(0.5, 0.9))
    with pytest.raises(SpaceError, match="density_bounds"):
        SearchSpace(resnet.graph, density_bounds={"middle": 0.3})
    partial = SearchSpace(resnet.graph, width_bounds={"residual": 0.5})
    assert partial.width_bounds == {**WIDTH_BOUNDS, "residual": 0.5}
    assert partial.lower[0] == 7  # conv1's group: first (0.8) is now the strictest
