"""The command line's conventions: `jcw --version`, one exit status per kind of failure, and where the devices file
is looked for (--devices FILE, ./devices.yaml, then the user's config directory)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKEN = "devices:\n  broken:\n    transport: local\n    runtime: litert\n    python: /nonexistent/python3\n"


def test_version_is_printed(jcw, capsys):
    with pytest.raises(SystemExit) as exit_:
        jcw("--version")
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("jcw ")


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory without devices.yaml, and an empty config directory (XDG_CONFIG_HOME): returns where
    the user's devices.yaml goes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "config" / "jcw").mkdir(parents=True)
    (tmp_path / "model.tflite").write_bytes(b"not measured: the device fails first")
    return tmp_path / "config" / "jcw" / "devices.yaml"


def test_no_devices_file_names_the_places_tried(jcw, elsewhere, capsys):
    assert jcw("measure", "--device", "local", "model.tflite") == 3
    err = capsys.readouterr().err
    assert f"no devices file: tried devices.yaml and {elsewhere}; pass --devices FILE" in err


def test_the_devices_file_in_the_config_directory_is_used_and_a_failing_device_exits_4(jcw, elsewhere, capsys):
    elsewhere.write_text(BROKEN)
    assert jcw("measure", "--device", "broken", "model.tflite") == 4
    assert "device 'broken': interpreter /nonexistent/python3 is not installed" in capsys.readouterr().err
    shutil.copy(ROOT / "devices.yaml", "devices.yaml")  # ./devices.yaml comes first: it has no 'broken'
    assert jcw("measure", "--device", "broken", "model.tflite") == 3
    assert "devices.yaml: unknown device 'broken'" in capsys.readouterr().err
    assert jcw("measure", "--devices", elsewhere, "--device", "broken", "model.tflite") == 4  # --devices wins


def test_usage_errors_exit_2_and_bad_input_3(jcw, elsewhere, capsys):
    with pytest.raises(SystemExit) as exit_:
        jcw("fit", "--data", "table.csv", "--out", "m.jcwm")  # a dataset is never a kernel table: --table
    assert exit_.value.code == 2
    elsewhere.write_text(BROKEN)
    assert jcw("measure", "--device", "broken", "--out", "results.txt", "model.tflite") == 3  # before any work
    assert "--out results.txt: measurements are written as .csv or .json" in capsys.readouterr().err
