"""YAML parsing that remembers where every key came from.

Users fix what we point at; an error that names `config.yaml:14:5: llm.anthropic.models` is
fixed in seconds, one that says "invalid config" is not. One parse yields both the plain data
and a map from key path to position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, InputErrors, Location

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """`("llm", "endpoints", 0)` -> `llm.endpoints[0]`: how users write key paths."""
    out = ""
    for part in path:
        text = str(part)
        if isinstance(part, int):
            out += f"[{part}]"
        elif not text or not text.isprintable() or text.strip() != text:
            out += f"[{json.dumps(text)}]"
        else:
            out += f".{text}" if out else text
    return out


@dataclass
class YamlSource:
    """A parsed YAML document plus the position of every mapping key and sequence item."""

    file: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: KeyPath) -> Location:
        """The position of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe and probe not in self.positions:
            probe = probe[:-1]
        line, col = self.positions.get(probe, (None, None))
        return Location(self.file, line, col, dotted(path) or None)


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse one YAML document; syntax errors and duplicate keys become located InputErrors."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(f"YAML syntax error: {problem}", location=Location(file, line, col)) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise InputError(f"YAML error: {exc.reason} (character {exc.character!r})", location=Location(file, line, column)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", location=Location(file)) from None
    finally:
        if loader is not None:
            loader.dispose()
    source = YamlSource(file, data)
    if node is not None:
        duplicates: list[InputError] = []
        _walk(node, (), source.positions, duplicates, file)
        if duplicates:
            raise duplicates[0] if len(duplicates) == 1 else InputErrors(duplicates)
    return source


def read_yaml(path: Path) -> YamlSource:
    """Read and parse a YAML file; a missing or unreadable file is an InputError, not a traceback."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", location=Location(str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", location=Location(str(path))) from None
    return parse_yaml(text, str(path))


def _walk(
    node: yaml.Node,
    path: KeyPath,
    positions: dict[KeyPath, tuple[int, int]],
    duplicates: list[InputError],
    file: str,
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            here = (*path, key)
            mark = key_node.start_mark
            if key in seen:
                duplicates.append(
                    InputError(
                        "duplicate key: YAML keeps only the last one, so an earlier setting would be silently ignored",
                        location=Location(file, mark.line + 1, mark.column + 1, dotted(here)),
                    )
                )
            seen.add(key)
            positions[here] = (mark.line + 1, mark.column + 1)
            _walk(value_node, here, positions, duplicates, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*path, index)
            positions[here] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _walk(item, here, positions, duplicates, file)
