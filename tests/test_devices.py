import textwrap

import pytest

from profiler.devices import get_device, load_devices
from profiler.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "devices.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_inventory_has_the_documented_devices():
    devices = load_devices("devices.yaml")
    assert {"local", "local-sparse", "local-onnx", "pixel"} <= set(devices)
    assert any(d.transport == "ssh" for d in devices.values())
    assert devices["local"].flavour == "xnnpack"
    assert devices["local-sparse"].flavour == "builtin"
    assert devices["local-onnx"].flavour == "onnx"


def test_unknown_device_lists_known_ones():
    with pytest.raises(UserError, match="unknown device 'nope'.*local-sparse"):
        get_device("nope", "devices.yaml")


@pytest.mark.parametrize(
    "entry, message",
    [
        ("transport: local\n    runtime: tensorflow", "field 'runtime'"),
        ("transport: local\n    runtime: litert\n    threads: 0", "field 'threads'"),
        ("transport: local\n    runtime: litert\n    colour: red", "unknown field.*colour"),
        ("transport: ssh\n    runtime: litert\n    host: h\n    user: u", "missing field.*work_dir"),
        ("transport: adb\n    runtime: litert\n    serial: 'x; rm -rf /'\n    benchmark_model: /b",
         "field 'serial'"),
        ("transport: ssh\n    runtime: litert\n    host: h\n    user: u\n    work_dir: '/tmp/$(id)'",
         "field 'work_dir'"),
        ("transport: local\n    runtime: onnxruntime\n    xnnpack: true", "xnnpack"),
        ("transport: carrier-pigeon\n    runtime: litert", "field 'transport'"),
    ],
)
def test_malformed_entries_name_file_device_and_field(tmp_path, entry, message):
    path = write(tmp_path, f"devices:\n  board:\n    {entry}\n")
    with pytest.raises(UserError, match=message) as info:
        load_devices(path)
    assert str(path) in str(info.value) and "device 'board'" in str(info.value)


def test_not_yaml_and_wrong_shape_are_reported(tmp_path):
    with pytest.raises(UserError, match="not valid YAML"):
        load_devices(write(tmp_path, "devices: [unclosed"))
    with pytest.raises(UserError, match="top-level mapping 'devices:'"):
        load_devices(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(UserError, match="no such devices file"):
        load_devices(tmp_path / "missing.yaml")


def test_hostile_device_name_is_refused(tmp_path):
    path = write(tmp_path, "devices:\n  'a;reboot':\n    transport: local\n    runtime: litert\n")
    with pytest.raises(UserError, match="device names may hold only"):
        load_devices(path)
