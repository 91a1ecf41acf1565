"""Reading the toolkit's YAML files (devices, plans) with one-line errors that name the file.

The loader is PyYAML's safe one, stricter in two ways: a key given twice in one mapping is refused (YAML
would silently keep the last, e.g. the second of two devices of one name), and so is a document whose
aliases expand it past MAX_NODES nodes (a "billion laughs" file of a few hundred bytes).
"""

from __future__ import annotations

import reprlib
from pathlib import Path

import yaml

from profiler.errors import UserError

MAX_NODES = 2_000_000
"""Most nodes a document may hold with its aliases expanded; a plan of 20,000 kernels, one entry each, has ~0.5M."""
_MERGE = "tag:yaml.org,2002:merge"


def clip(text: str, limit: int = 300) -> str:
    """`text` on one line of at most `limit` characters (and a count of the rest), for errors quoting user input."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """Nodes under `node` counting each alias as a copy of its anchor (memoised: linear in the file)."""
    if id(node) in sizes:
        if sizes[id(node)] is None:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to its own anchor", node.start_mark)
        return sizes[id(node)]
    sizes[id(node)] = None
    children = [] if isinstance(node, yaml.ScalarNode) else node.value
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in children for n in pair]
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    if size > MAX_NODES:
        raise yaml.constructor.ConstructorError(
            None, None, f"more than {MAX_NODES:,} nodes once its aliases are expanded", node.start_mark)
    sizes[id(node)] = size
    return size


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing duplicate keys and alias bombs (see the module docstring)."""

    def construct_document(self, node: yaml.Node):
        _expanded_size(node, {})
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # keys merged in with `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key, refused by SafeLoader itself
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {reprlib.repr(key)} (each key may appear once)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _describe(err: yaml.YAMLError) -> str:
    """A YAML error on one line: where, then what (PyYAML's own text spans several lines)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark, context = err.problem_mark, f"{err.context}, " if err.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {context}{err.problem}"
    return str(err)


def read_yaml(path: Path, what: str):
    """The parsed contents of `path`; a missing, unreadable, non-UTF-8 or malformed file is a UserError naming it."""
    if not path.is_file():
        raise UserError(f"{path}: no such {what}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                        "save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {clip(_describe(err))}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None
