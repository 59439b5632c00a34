"""YAML loading that remembers where every value came from (line numbers, raw text)."""
from __future__ import annotations

from typing import Any

import yaml


class YMap(dict):
    """A YAML mapping; `key_lines[k]` is the line of key k, `raw[k]` a scalar's source text."""

    line: int
    key_lines: dict[Any, int]
    raw: dict[Any, str]


class YSeq(list):
    """A YAML sequence; `item_lines[i]` is the line of item i, `raw[i]` a scalar's source text."""

    line: int
    item_lines: list[int]
    raw: dict[int, str]


class YamlSyntaxError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


_constructor = yaml.SafeLoader


def parse_yaml(text: str) -> Any:
    """Parse one YAML document into YMap/YSeq/scalars; raise YamlSyntaxError with a line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise YamlSyntaxError(line, f"invalid YAML: {e.problem or e}") from None
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    return _build(node, loader)


def _build(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.line = node.start_mark.line + 1
        out.key_lines, out.raw = {}, {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = _build(key_node, loader)
            if isinstance(key, (YMap, YSeq)):
                raise YamlSyntaxError(key_node.start_mark.line + 1, "a mapping key must be a scalar")
            out[key] = _build(value_node, loader)
            out.key_lines[key] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode):
                out.raw[key] = value_node.value
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YSeq(_build(item, loader) for item in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [item.start_mark.line + 1 for item in node.value]
        seq.raw = {i: item.value for i, item in enumerate(node.value) if isinstance(item, yaml.ScalarNode)}
        return seq
    return loader.construct_object(node, deep=True)
