import pytest

from profiler.kernel import KernelSpec, SpecError


def test_output_shape_matches_pytorch_padding():
    assert KernelSpec("conv", 224, 224, 3, 32, k=3, stride=2).out_hw == (112, 112)
    assert KernelSpec("conv", 7, 9, 8, 8, k=3).out_hw == (7, 9)
    assert KernelSpec("dwconv", 15, 15, 16, 16, k=5, stride=2, groups=16).out_hw == (8, 8)


def test_macs_count_groups():
    dense = KernelSpec("conv", 8, 8, 16, 16, k=3)
    depthwise = KernelSpec("dwconv", 8, 8, 16, 16, k=3, groups=16)
    assert dense.macs == 8 * 8 * 16 * 16 * 9
    assert depthwise.macs == dense.macs // 16


def test_row_round_trip_coerces_types_and_ignores_extra_columns():
    spec = KernelSpec("conv", 56, 56, 128, 64, density=0.3, activation="relu6")
    row = {k: str(v) for k, v in spec.to_row().items()} | {"latency_ms": "1.2"}
    assert KernelSpec.from_row(row) == spec


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(cin=10, cout=8, groups=4, op="conv"), "groups"),
        (dict(density=1.5), "density"),
        (dict(density=-0.1), "density"),
        (dict(op="pool"), "op"),
        (dict(k=2), "k"),
        (dict(op="dwconv", cin=8, cout=16, groups=8), "groups"),
        (dict(op="dwconv", cin=8, cout=8, groups=8, density=0.5), "density"),
        (dict(cin=0), "cin"),
    ],
)
def test_impossible_kernels_are_refused_naming_the_field(kwargs, field):
    base = dict(op="conv", h=8, w=8, cin=8, cout=8)
    with pytest.raises(SpecError, match=f"'{field}'"):
        KernelSpec(**(base | kwargs))
