"""Generated input for every reader of user files and flags: nothing escapes but a one-line UserError, and a
results table that cannot be read is left as it was."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler.devices import load_devices
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.plan import load_plan
from profiler.store import COLUMNS, ResultsStore
from pruner.model.checkpoint import parse_genes

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=12),
    st.sampled_from(["local", "ssh", "adb", "litert", "onnxruntime", "conv", "dwconv", "fc", "1x4", "relu", "nhwc",
                     "REPLACE_WITH_SERIAL", "", "~", "1e12", ".inf"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
yaml_documents = st.text(max_size=300)


def assert_one_line(err: UserError) -> None:
    message = str(err)
    assert message and "\n" not in message and len(message) < 1000, message


def device_entries():
    fields = ["transport", "runtime", "xnnpack", "threads", "cpus", "block", "serial", "benchmark_model", "host",
              "user", "work_dir", "port", "python", "setup", "max_cv", "description"]
    return st.dictionaries(st.sampled_from(fields), values, max_size=6)


def devices_files():
    structured = st.dictionaries(st.one_of(st.text(max_size=10), scalars), st.one_of(device_entries(), values),
                                 max_size=3).map(lambda devices: {"devices": devices})
    return st.one_of(yaml_documents, st.one_of(structured, values).map(yaml.safe_dump))


def plan_files():
    ranges = st.fixed_dictionaries({"from": scalars, "to": scalars}, optional={"step": scalars})
    small = st.one_of(st.integers(-2, 70), st.floats(-0.5, 1.5), st.sampled_from(["conv", "dwconv", "fc", "relu6"]))
    field = st.one_of(small, st.lists(small, max_size=4), ranges, values)
    entry = st.dictionaries(st.sampled_from(["op", "hw", "cin", "cout", "k", "stride", "density", "activation",
                                             "block", "layout", "colour"]), field, max_size=8)
    structured = st.lists(st.one_of(entry, values), max_size=3).map(lambda kernels: {"kernels": kernels})
    return st.one_of(yaml_documents, st.one_of(structured, values).map(yaml.safe_dump))


def _row(spec: KernelSpec) -> list[str]:
    fields = {"device": "d", "runtime": "builtin", "runtime_version": "r", **spec.to_row(), "latency_ms": 1.0,
              "iqr_ms": 0.1, "cv": 0.01, "model_ms": 1.0, "baseline_ms": 0.0, "runs": 10, "timestamp": "t",
              "version": "0"}
    return [str(fields.get(c, "")) for c in COLUMNS]


cells = st.one_of(st.sampled_from(["", "nan", "inf", "-1", "0", "fast", "conv", "1e400", "8", "0.5", '"', ",", "\n"]),
                  st.text(alphabet=string.printable, max_size=6))


@st.composite
def results_tables(draw) -> str:
    """A results table's CSV text: real rows with some cells replaced, columns dropped or rows repeated, or noise."""
    specs = [KernelSpec("conv", 8, 8, 8, c) for c in (8, 16, 24)] + [KernelSpec("dwconv", 8, 8, 8, 8, k=3, groups=8)]
    rows = [_row(s) for s in draw(st.lists(st.sampled_from(specs), max_size=4))]
    for _ in range(draw(st.integers(0, 3))):
        if rows:
            rows[draw(st.integers(0, len(rows) - 1))][draw(st.integers(0, len(COLUMNS) - 1))] = draw(cells)
    header = list(COLUMNS)
    if draw(st.booleans()):
        header.pop(draw(st.integers(0, len(header) - 1)))
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    return draw(st.one_of(st.just(text), st.text(max_size=200)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=devices_files())
def test_devices_files(folder, text):
    path = folder / "devices.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_devices(path)
    except UserError as err:
        assert_one_line(err)


@FUZZ
@given(data=st.binary(max_size=200))
def test_devices_files_as_bytes(folder, data):
    path = folder / "devices.yaml"
    path.write_bytes(data)
    try:
        load_devices(path)
    except UserError as err:
        assert_one_line(err)


@FUZZ
@given(text=plan_files())
def test_plans(folder, text):
    path = folder / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        assert len(load_plan(path, max_kernels=500)) > 0
    except UserError as err:
        assert_one_line(err)


@FUZZ
@given(text=results_tables())
def test_results_tables(folder, text):
    path = folder / "d.csv"
    path.write_text(text, encoding="utf-8")
    before = path.read_bytes()
    try:
        store = ResultsStore(path)
    except UserError as err:
        assert_one_line(err)
        assert path.read_bytes() == before
        return
    assert len(store.measured()) <= len(store.table)


@FUZZ
@given(text=st.one_of(st.text(max_size=40),
                      st.lists(st.integers(-(10**25), 10**25), max_size=60).map(lambda g: ",".join(map(str, g))),
                      st.lists(st.integers(0, 12), min_size=1, max_size=60).map(lambda g: ",".join(map(str, g)))))
def test_genes(space, text):
    try:
        space.check(parse_genes(text))
    except UserError as err:
        assert_one_line(err)
