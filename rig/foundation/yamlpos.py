"""YAML loading that remembers the line of every key, and refuses what a config must not contain.

``load_with_lines(text)`` returns the data and a map from key path (a tuple of
keys and list indices) to the 1-based line where that key or item starts, so a
validation error can point at the exact line of the offending value.

Outside input, so bounded and strict (each problem a :class:`YamlStructureError`,
a ``yaml.YAMLError`` whose ``problem_mark`` is the offending line):

* alias expansion is bounded (``MAX_NODES`` nodes after expansion: a 430-byte
  "billion laughs" file no longer takes 38 s and 2.5 GB) and an alias that
  contains itself is refused;
* keys must be scalars (a list or mapping used as a key is refused);
* a key given twice in one mapping is an error naming both lines;
* standard merge keys (``<<: *base`` or ``<<: [*a, *b]``) are supported: the
  merged keys apply where the mapping does not set them itself.
"""

from __future__ import annotations

from typing import Any

import yaml

#: nodes built after alias expansion; a real config has a few hundred
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlStructureError(yaml.YAMLError):
    def __init__(self, message: str, node: yaml.Node):
        super().__init__(message)
        self.problem = message
        self.problem_mark = node.start_mark

    def __str__(self) -> str:
        return f"{self.problem} (line {self.problem_mark.line + 1})"


class _Builder:
    def __init__(self, lines: dict[tuple, int]):
        self.lines = lines
        self.nodes = 0
        self.active: set[int] = set()  # nodes being built: meeting one again is a cycle

    def build(self, node: yaml.Node, path: tuple) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlStructureError(f"more than {MAX_NODES} values after expanding aliases "
                                     "(an alias bomb?)", node)
        if id(node) in self.active:
            raise YamlStructureError("an alias refers to the value that contains it (a cycle)", node)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            try:
                return self._mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            try:
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        # scalars: let the safe constructor resolve the type (int, float, bool, null)
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        return yaml.SafeLoader(yaml.serialize(node)).get_single_data()

    def _mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                self._merge(value_node, path, merged)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlStructureError("a key must be a plain value, not a list or mapping", key_node)
            key = self.build(key_node, path + ("<key>",))
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlStructureError(f"key {key!r} is given twice: lines {seen[key]} and {line}", key_node)
            seen[key] = line
            self.lines[path + (key,)] = line
            out[key] = self.build(value_node, path + (key,))
        self.lines.pop(path + ("<key>",), None)
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merge(self, value_node: yaml.Node, path: tuple, merged: dict) -> None:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                raise YamlStructureError("a merge key '<<' takes a mapping or a list of mappings", src)
            for k, v in self.build(src, path).items():
                merged.setdefault(k, v)  # the first mapping listed wins, as in YAML 1.1


def load_with_lines(text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML text; raise yaml.YAMLError on syntax errors and on what the module docstring refuses."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple, int] = {}
    if node is None:
        return None, lines
    return _Builder(lines).build(node, ()), lines


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
