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
    assert devices["local"].runtime.name == "xnnpack"
    assert devices["local-sparse"].runtime.name == "builtin"
    assert devices["local-onnx"].runtime.name == "onnx"


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


def test_shipped_pixel_with_the_placeholder_serial_is_refused_when_used():
    assert load_devices("devices.yaml")["pixel"].options["serial"] == "REPLACE_WITH_SERIAL"  # the file still loads
    with pytest.raises(UserError, match=r"device 'pixel': field 'serial' is still REPLACE_WITH_SERIAL.*adb devices"):
        get_device("pixel", "devices.yaml")
    assert get_device("local", "devices.yaml").transport == "local"


def test_a_devices_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_bytes("devices:\n  board:\n    description: M\u00fcnchen\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"devices.yaml: not UTF-8 text \(byte 0xfc at offset 36\)"):
        load_devices(path)


def test_a_device_named_twice_is_refused_naming_it(tmp_path):
    entry = "    transport: local\n    runtime: litert\n"
    path = write(tmp_path, f"devices:\n  board:\n{entry}  other:\n{entry}  board:\n{entry}")
    with pytest.raises(UserError, match=r"devices.yaml: not valid YAML: line 8, column 3: duplicate key 'board'"):
        load_devices(path)


def test_merged_keys_may_still_be_overridden(tmp_path):
    path = write(tmp_path, """
        base: &base {transport: local, runtime: litert, threads: 1}
        devices:
          board:
            <<: *base
            threads: 2
    """)
    assert load_devices(path)["board"].threads == 2


def laughs(levels: int) -> str:
    """A "billion laughs" YAML document: `levels` lists of 9 aliases, each to the one before (9**levels strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndevices:\n  board:\n    transport: local\n    runtime: litert\n" \
                              f"    description: *l{levels - 1}\n"


@pytest.mark.parametrize("levels, message", [(6, r"field 'description': .*\.\.\. \(\d+ more characters\)"),
                                             (9, r"more than 2,000,000 nodes once its aliases are expanded")])
def test_an_alias_bomb_is_one_short_line(tmp_path, levels, message):
    with pytest.raises(UserError, match=message) as info:
        load_devices(write(tmp_path, laughs(levels)))
    assert len(str(info.value)) < 500 and "\n" not in str(info.value)


def test_a_relative_interpreter_path_is_relative_to_the_devices_file(tmp_path, monkeypatch):
    """`python: .arm-emu/python` names the wrapper beside the devices file, whatever the working directory."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "devices.yaml").write_text("devices:\n  emu:\n    transport: local\n    runtime: xnnpack\n"
                                         "    python: .arm-emu/python\n  plain:\n    transport: local\n"
                                         "    runtime: xnnpack\n    python: /usr/bin/python3\n")
    monkeypatch.chdir(tmp_path)
    devices = load_devices(folder / "devices.yaml")
    assert devices["emu"].options["python"] == str(folder / ".arm-emu" / "python")
    assert devices["plain"].options["python"] == "/usr/bin/python3"
