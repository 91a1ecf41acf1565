"""The device inventory (devices.yaml): loading, schema validation, and the Device record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
import platformdirs

from profiler.errors import UserError
from profiler.yamlfile import clip, read_yaml

if TYPE_CHECKING:  # the runtimes import numpy and the TFLite schema: `jcw --help` needs neither
    from profiler.runtimes import Runtime

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # also keeps device names safe in paths and shells
_PATH = r"^[A-Za-z0-9_./~+][A-Za-z0-9_./~+-]*$"  # remote paths: no spaces, quotes, shell metacharacters or leading '-'
_ABS_PATH = r"^/[A-Za-z0-9_./+-]*$"  # absolute paths on a phone (adb does not expand '~')
DEVICES_FILE = "devices.yaml"
PLACEHOLDER_SERIAL = "REPLACE_WITH_SERIAL"  # the shipped devices.yaml's `pixel` serial, until the user puts theirs

_COMMON = {
    "description": {"type": "string"},
    "transport": {"enum": ["local", "ssh", "adb"]},
    "runtime": {"type": "string"},  # a registered runtime (profiler.runtimes) or an older name: checked by _schema
    "xnnpack": {"type": "boolean"},  # with the older runtime: litert, XNNPACK on (xnnpack) or off (builtin)
    "threads": {"type": "integer", "minimum": 1, "maximum": 64},
    "cpus": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
    "block": {"enum": ["1x4", "4x1", "unstructured"]},
    "warmup": {"type": "integer", "minimum": 0},
    "repeats": {"type": "integer", "minimum": 1},
    "rounds": {"type": "integer", "minimum": 1},
    "max_cv": {"type": "number", "exclusiveMinimum": 0},
    "min_sample_ms": {"type": "number", "exclusiveMinimum": 0},
    "clock": {"enum": ["wall", "instructions"]},
}
_BY_TRANSPORT = {
    "local": (
        {
            # another interpreter on this machine (e.g. the emulated ARM device's wrapper); a relative path is
            # relative to the devices file's folder; `setup` is the command that installs it, named when missing
            "python": {"type": "string", "minLength": 1},
            "setup": {"type": "string"},
        },
        [],
    ),
    "ssh": (
        {
            "host": {"type": "string", "pattern": r"^[A-Za-z0-9.:_-]+$"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "user": {"type": "string", "pattern": r"^[A-Za-z0-9._-]+$"},
            "key_file": {"type": "string"},
            "passphrase_env": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "trust_unknown_host": {"type": "boolean"},
            "known_hosts": {"type": "string"},
            "work_dir": {"type": "string", "pattern": _PATH},
            "python": {"type": "string", "pattern": _PATH},
            "connect_timeout": {"type": "number", "exclusiveMinimum": 0},
            "command_timeout": {"type": "number", "exclusiveMinimum": 0},
        },
        ["host", "user", "work_dir"],
    ),
    "adb": (
        {
            "serial": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"},
            "benchmark_model": {"type": "string", "pattern": _ABS_PATH},
            "work_dir": {"type": "string", "pattern": _ABS_PATH},
            "cpu_mask": {"type": "string", "pattern": r"^[0-9a-fA-F]+$"},
            "cooldown_s": {"type": "number", "minimum": 0},
            "max_temp_c": {"type": "number"},
            "command_timeout": {"type": "number", "exclusiveMinimum": 0},
            "adb": {"type": "string", "minLength": 1},
        },
        ["serial", "benchmark_model"],
    ),
}


def _schema(transport: str) -> dict:
    from profiler.runtimes import registered

    props, required = _BY_TRANSPORT[transport]
    return {
        "type": "object",
        "properties": {**_COMMON, "runtime": {"enum": [*registered(), "litert", "onnxruntime"]}, **props},
        "required": ["transport", "runtime", *required],
        "additionalProperties": False,
        "if": {"properties": {"runtime": {"not": {"const": "litert"}}}},
        "then": {"not": {"required": ["xnnpack"]}},
    }


LEGACY_RUNTIMES = {("litert", True): "xnnpack", ("litert", False): "builtin", ("onnxruntime", True): "onnx"}
"""Older devices files named the runner's package and `xnnpack: true|false`; each pair is one runtime."""


@dataclass(frozen=True)
class Device:
    """One entry of devices.yaml: how to reach it, the runtime it runs models with (profiler.runtimes, with the
    sparsity block of its sparse kernels) and how to time them; `options` keeps the transport-specific fields."""

    name: str
    transport: str
    runtime: Runtime
    threads: int = 1
    cpus: tuple[int, ...] = ()
    warmup: int = 3
    repeats: int = 20
    rounds: int = 3
    max_cv: float = 0.1
    min_sample_ms: float = 1.0  # each timed sample repeats the model until it lasts this long
    clock: str = "wall"  # or "instructions": the emulated ARM device's executed instructions (profiler.runner)
    description: str = ""
    options: dict = field(default_factory=dict, compare=False)


def _describe(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        return f"unknown field: {clip(err.message)}"
    if err.validator == "required":
        return f"missing field: {clip(err.message)}"
    if err.validator == "not":
        return "field 'xnnpack': only with the older runtime 'litert' (name the runtime instead: xnnpack, builtin)"
    return f"field '{where}': {clip(err.message)}"


def devices_file(path: str | Path | None = None) -> Path:
    """The devices file to read: `path` when given (--devices FILE), else ./devices.yaml, else devices.yaml in the
    user's config directory (platformdirs: ~/.config/jcw on Linux); an error names the places tried."""
    if path is not None:
        return Path(path)
    tried = [Path(DEVICES_FILE), Path(platformdirs.user_config_dir("jcw")) / DEVICES_FILE]
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise UserError(f"no devices file: tried {' and '.join(map(str, tried))}; pass --devices FILE")
    return found


def load_devices(path: str | Path | None = None) -> dict[str, Device]:
    """Read and validate a devices file (found by `devices_file`); every error names the file, the device and the
    field."""
    from profiler.runtimes import get_runtime

    path = devices_file(path)
    data = read_yaml(path, "devices file (pass --devices FILE)")
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict) or not data["devices"]:
        raise UserError(f"{path}: expected a top-level mapping 'devices:' of device names to entries")
    devices = {}
    for name, entry in data["devices"].items():
        where = f"{path}: device '{clip(str(name), 80)}'"
        if not isinstance(name, str) or not re.match(_NAME, name):
            raise UserError(f"{where}: device names may hold only letters, digits, '.', '_' and '-'")
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a mapping of fields")
        transport = entry.get("transport")
        if not isinstance(transport, str) or transport not in _BY_TRANSPORT:
            raise UserError(f"{where}: field 'transport' must be one of {', '.join(_BY_TRANSPORT)}")
        errors = sorted(jsonschema.Draft202012Validator(_schema(transport)).iter_errors(entry), key=str)
        if errors:
            raise UserError(f"{where}: {_describe(errors[0])}")
        common = {k: v for k, v in entry.items() if k in _COMMON and k not in ("runtime", "xnnpack", "block")}
        if "cpus" in common:
            common["cpus"] = tuple(common["cpus"])
        name_of = LEGACY_RUNTIMES.get((entry["runtime"], entry.get("xnnpack", True)), entry["runtime"])
        common["runtime"] = get_runtime(name_of, entry.get("block", ""))
        options = {k: v for k, v in entry.items() if k not in _COMMON}
        if transport == "local" and "/" in options.get("python", "") and not Path(options["python"]).is_absolute():
            options["python"] = str(path.resolve().parent / options["python"])  # where the file says, from anywhere
        devices[name] = Device(name=name, options=options, **common)
    return devices


def get_device(name: str, path: str | Path | None = None) -> Device:
    """The device `name` of a devices file (found by `devices_file`), refused while its adb serial is still the
    shipped placeholder."""
    path = devices_file(path)
    devices = load_devices(path)
    if name not in devices:
        raise UserError(f"{path}: unknown device '{clip(name, 80)}'; known devices: {', '.join(devices)}")
    if devices[name].options.get("serial") == PLACEHOLDER_SERIAL:
        raise UserError(f"{path}: device '{name}': field 'serial' is still {PLACEHOLDER_SERIAL}: "
                        "put the phone's serial there, as `adb devices` lists it")
    return devices[name]
