import textwrap

import pandas as pd
import pytest

from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.plan import load_plan
from profiler.store import COLUMNS, ResultsStore


def plan_file(tmp_path, text):
    path = tmp_path / "plan.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expands_to_the_product_with_ranges_and_device_block(tmp_path):
    path = plan_file(tmp_path, """
        kernels:
          - op: conv
            hw: 8
            cin: 16
            cout: {from: 8, to: 32, step: 8}
            density: [0.5, 1.0]
          - op: dwconv
            hw: 8
            cin: [8, 16]
            k: 3
    """)
    specs = load_plan(path, block="4x1")
    convs = [s for s in specs if s.op == "conv"]
    assert sorted({s.cout for s in convs}) == [8, 16, 24, 32] and len(convs) == 8
    assert all(s.block == "4x1" for s in specs)
    assert {(s.cin, s.cout, s.groups) for s in specs if s.op == "dwconv"} == {(8, 8, 8), (16, 16, 16)}


def test_default_plan_holds_the_acceptance_kernel():
    specs = load_plan(None, block="4x1")
    sweep = {s.density for s in specs if (s.op, s.h, s.cin, s.cout, s.k) == ("conv", 56, 128, 128, 1)}
    assert {0.1, 1.0} <= sweep


@pytest.mark.parametrize(
    "entry, message",
    [
        ("op: conv\n    hw: 8\n    cin: 10\n    cout: 8\n    density: 1.2", r"kernels\[0\].*density"),
        ("op: dwconv\n    hw: 8\n    cin: 8\n    cout: 16", r"kernels\[0\].*impossible kernel"),
        ("op: conv\n    hw: 8\n    cin: 8\n    colour: 3", r"kernels\[0\].*unknown field.*colour"),
        ("op: conv\n    cin: 8", r"kernels\[0\].*missing.*hw"),
    ],
)
def test_impossible_plans_name_the_entry_and_field(tmp_path, entry, message):
    path = plan_file(tmp_path, f"kernels:\n  - {entry}\n")
    with pytest.raises(UserError, match=message) as info:
        load_plan(path)
    assert str(path) in str(info.value)


def row(spec: KernelSpec, latency=1.0) -> dict:
    return {"device": "d", "runtime": "r", "flavour": "builtin", **spec.to_row(), "latency_ms": latency,
            "iqr_ms": 0.1, "cv": 0.01, "model_ms": latency, "baseline_ms": 0.0, "runs": 10,
            "timestamp": "t", "version": "0"}


def test_store_appends_atomically_and_remembers_measured_kernels(tmp_path):
    store = ResultsStore(tmp_path / "d.csv")
    a, b = KernelSpec("conv", 8, 8, 8, 8, density=0.3), KernelSpec("conv", 8, 8, 8, 16)
    store.append([row(a)])
    store.append([row(b, 2.0)])
    reopened = ResultsStore(tmp_path / "d.csv")
    assert reopened.measured() == {a.key(), b.key()}
    assert list(reopened.table.columns) == COLUMNS and reopened.table.latency_ms.tolist() == [1.0, 2.0]
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("content", ['a,b\n1,"2\n', "device,runtime\nx,y\n", ""])
def test_corrupt_table_is_reported_and_left_untouched(tmp_path, content):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(UserError, match="d.csv"):
        ResultsStore(path)
    assert path.read_text() == content


def test_table_with_empty_latency_cells_is_corrupt(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame([row(KernelSpec("conv", 8, 8, 8, 8), latency=None)]).to_csv(path, index=False)
    with pytest.raises(UserError, match="empty cells in rows \\[0\\]"):
        ResultsStore(path)
