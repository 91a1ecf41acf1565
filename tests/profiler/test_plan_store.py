"""Plans of kernels (YAML grids, counted before expanded, refused naming the entry and field) and the results
tables they fill: atomic appends that concurrent writers share, refusals naming the row."""

import multiprocessing
import textwrap
from collections.abc import Iterator

import pandas as pd
import pytest

from jcw.cli import main
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.plan import expand, load_plan
from profiler.store import COLUMNS, ResultsStore

HANG = 600  # s: only a hung writer takes this long, however busy the machine


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
    return {"device": "d", "runtime": "builtin", "runtime_version": "r", **spec.to_row(), "latency_ms": latency,
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
    with pytest.raises(UserError, match="empty cells in row 1;"):
        ResultsStore(path)


def test_a_plan_over_the_limit_is_refused_with_its_count_and_time(tmp_path):
    path = plan_file(tmp_path, "kernels:\n  - {op: conv, hw: 8, cin: 8, cout: {from: 1, to: 30000}}\n")
    with pytest.raises(UserError, match=r"30,000 kernels, about 1 h to profile.*--max-kernels 30000") as info:
        load_plan(path)
    assert str(path) in str(info.value)
    assert len(load_plan(path, max_kernels=30_000)) == 30_000


def test_a_huge_plan_is_counted_not_expanded(tmp_path):
    entry = "{op: conv, hw: 8, cin: {from: 1, to: 1000000}, cout: {from: 1, to: 1.0e+12}}"
    path = plan_file(tmp_path, f"kernels:\n  - {entry}\n")
    with pytest.raises(UserError, match=r"1,000,000,000,000,000,000 kernels"):
        load_plan(path)


def test_expansion_streams(tmp_path):
    entry = {"op": "conv", "hw": 8, "cin": {"from": 1, "to": 100}, "cout": {"from": 1, "to": 100},
             "activation": ["none"] * 100}
    kernels = expand(entry, "1x4", "entry")
    assert isinstance(kernels, Iterator) and next(kernels) == KernelSpec("conv", 8, 8, 1, 1)


@pytest.mark.parametrize(
    "field, message",
    [
        ("cout: {from: 1, to: 1e12}", r"kernels\[0\]: field 'cout': range 'to' must be a number.*'1e12'"),
        ("cout: {from: '8', to: 16}", r"kernels\[0\]: field 'cout': range 'from' must be a number"),
        ("cout: {from: 8, to: 16, step: two}", r"field 'cout': range 'step' must be a number"),
        ("cout: {from: 8, to: .inf}", r"field 'cout': range 'to' must be a number"),
        ("cout: {from: 16, to: 8}", r"field 'cout': range 'to' \(8\) is below 'from' \(16\)"),
        ("cout: {from: 8, to: 16, step: 0}", r"field 'cout': range step must be at least"),
        ("cout: {from: 8}", r"field 'cout': a range is \{from, to, step\}; missing \['to'\]"),
        ("cout: 8\n    density: 0", r"kernels\[0\]: field 'density' = 0: must be a number in \(0, 1\]"),
        ("cout: 8\n    density: [0.5, 0.0]", r"kernels\[0\]: field 'density' = 0.0"),
        ("cout: 8\n    density: {from: 0, to: 1, step: 0.5}", r"kernels\[0\]: field 'density' = 0"),
        ("cout: []", r"the plan has no kernels"),
    ],
)
def test_bad_ranges_densities_and_empty_grids_name_the_field(tmp_path, field, message):
    path = plan_file(tmp_path, f"kernels:\n  - op: conv\n    hw: 8\n    cin: 8\n    {field}\n")
    with pytest.raises(UserError, match=message) as info:
        load_plan(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_an_empty_plan_is_refused(tmp_path):
    with pytest.raises(UserError, match="no kernels"):
        load_plan(plan_file(tmp_path, "kernels: []\n"))


def test_a_plan_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_bytes("kernels:\n  - {op: conv, hw: 8, cin: 8}  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"plan.yaml: not UTF-8 text \(byte 0xe9 at offset 45\)"):
        load_plan(path)


def test_profile_refuses_a_plan_over_max_kernels(tmp_path, capsys):
    path = plan_file(tmp_path, "kernels:\n  - {op: conv, hw: 8, cin: 8, cout: [8, 16, 24]}\n")
    args = ["profile", "--device", "local", "--plan", str(path), "--out", str(tmp_path), "--max-kernels", "2"]
    assert main(args) == 3
    assert "3 kernels" in capsys.readouterr().err and not list(tmp_path.glob("*.csv"))


def test_a_second_writer_sees_and_keeps_the_first_ones_rows(tmp_path):
    first, second = ResultsStore(tmp_path / "d.csv"), ResultsStore(tmp_path / "d.csv")
    a, b = KernelSpec("conv", 8, 8, 8, 8), KernelSpec("conv", 8, 8, 8, 16)
    first.append([row(a)])
    assert second.measured() == {a.key()}
    second.append([row(b), row(a, latency=5.0)])
    table = ResultsStore(tmp_path / "d.csv").table
    assert table.cout.tolist() == [8, 16] and table.latency_ms.tolist() == [1.0, 1.0]


def _append_one_by_one(path: str, couts: list[int], start) -> None:
    """A writer process: once every writer is ready (pandas imported, the store open), appends its kernels one row
    at a time."""
    store = ResultsStore(path)
    start.wait(HANG)
    for cout in couts:
        store.append([row(KernelSpec("conv", 8, 8, 8, cout))])


def test_concurrent_writers_lose_no_row(tmp_path):
    path = tmp_path / "d.csv"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)  # the writers start appending together, whenever both are ready
    writers = [context.Process(target=_append_one_by_one, args=(str(path), couts, start))
               for couts in (range(1, 21), range(21, 41))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(HANG)
        assert writer.exitcode == 0
    assert sorted(ResultsStore(path).table.cout) == list(range(1, 41))


def _write_rows(path, rows: list[dict]) -> str:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path.read_text()


@pytest.mark.parametrize(
    "latency, message",
    [("fast", r"got 'fast' in row 2"), ("inf", r"got inf in row 2"), (0.0, r"got 0.0 in row 2"),
     (-1.0, r"got -1.0 in row 2")],
)
def test_a_table_with_a_bad_latency_is_refused_naming_the_row(tmp_path, latency, message):
    path = tmp_path / "d.csv"
    before = _write_rows(path, [row(KernelSpec("conv", 8, 8, 8, 8)), row(KernelSpec("conv", 8, 8, 8, 16), latency)])
    with pytest.raises(UserError, match=rf"d\.csv: latency_ms must be a finite positive number, {message}"):
        ResultsStore(path)
    assert path.read_text() == before


def test_a_table_with_a_repeated_kernel_is_refused_naming_both_rows(tmp_path):
    path = tmp_path / "d.csv"
    spec = KernelSpec("conv", 8, 8, 8, 8)
    _write_rows(path, [row(spec), row(KernelSpec("conv", 8, 8, 8, 16)), row(spec, 2.0)])
    with pytest.raises(UserError, match=r"d\.csv: row 3 repeats the kernel and device of row 1"):
        ResultsStore(path)
    _write_rows(path, [row(spec), {**row(spec, 2.0), "device": "other"}])
    assert len(ResultsStore(path).table) == 2  # one kernel on two devices: two measurements


def test_a_table_with_an_impossible_kernel_is_refused_naming_the_row(tmp_path):
    path = tmp_path / "d.csv"
    _write_rows(path, [row(KernelSpec("conv", 8, 8, 8, 8)), {**row(KernelSpec("conv", 8, 8, 8, 16)), "cin": "many"}])
    with pytest.raises(UserError, match=r"d\.csv: row 2 is no kernel"):
        ResultsStore(path)


def test_a_plan_can_list_grouped_convs(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("kernels:\n  - {op: conv, hw: 8, cin: 16, cout: 32, k: 3, groups: [1, 4]}\n"
                    "  - {op: dwconv, hw: 8, cin: 16, k: 5}\n")
    specs = load_plan(plan)
    assert sorted((s.op, s.groups) for s in specs) == [("conv", 1), ("conv", 4), ("dwconv", 16)]
