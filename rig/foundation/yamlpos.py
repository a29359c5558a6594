"""YAML loading that remembers the line of every key.

``load_with_lines(text)`` returns the data and a map from key path (a tuple of
keys and list indices) to the 1-based line where that key or item starts, so a
validation error can point at the exact line of the offending value.
"""

from __future__ import annotations

from typing import Any

import yaml


def _build(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(
                key_node, yaml.ScalarNode) else key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), lines) for i, item in enumerate(node.value)]
    # scalars: let the safe constructor resolve the type (int, float, bool, null)
    return yaml.SafeLoader(yaml.serialize(node)).get_single_data() if node.tag != \
        "tag:yaml.org,2002:str" else node.value


def load_with_lines(text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML text; raise yaml.YAMLError on syntax errors."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple, int] = {}
    if node is None:
        return None, lines
    return _build(node, (), lines), lines


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
