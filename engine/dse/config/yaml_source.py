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

# No config or workflow comes near these; a file that does is a mistake or an attack, and is
# refused while it is parsed, before it can exhaust the stack or memory.
MAX_DEPTH = 64
MAX_NODES = 100_000


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
    origins: dict[KeyPath, KeyPath] = field(default_factory=dict)
    """For a value moved within the file (a profile's, merged over the base): its key path as written."""

    def locate(self, path: KeyPath) -> Location:
        """The position of `path`, or of its nearest ancestor that has one, named as the file writes it."""
        probe = tuple(path)
        while probe and probe not in self.positions:
            probe = probe[:-1]
        line, col = self.positions.get(probe, (None, None))
        written = self.origins.get(probe)
        shown = path if written is None else (*written, *path[len(probe):])
        return Location(self.file, line, col, dotted(shown) or None)


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse one YAML document; syntax errors and duplicate keys become located InputErrors."""
    loader = None
    try:
        loader = _BoundedLoader(text, file)
        node = loader.get_single_node()
        positions: dict[KeyPath, tuple[int, int]] = {}
        if node is not None:
            # Before constructing: a merge key (`<<: *base`) is flattened into the node in place,
            # and the merged keys would then look like duplicates of the ones written next to it.
            duplicates: list[InputError] = []
            positions[()] = (node.start_mark.line + 1, node.start_mark.column + 1)  # what a top-level error points at
            _walk(node, (), positions, duplicates, file)
            if duplicates:
                raise duplicates[0] if len(duplicates) == 1 else InputErrors(duplicates)
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
    return YamlSource(file, data, positions)


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses, with a position, documents that would exhaust the process.

    Limits are checked while composing, before anything is constructed. A 1 KB file of nested
    brackets would otherwise recurse past Python's stack; a 400-byte alias bomb is small as a
    node graph but every later pass (env expansion, schema validation, key positions) walks it
    as a tree, gigabytes of it. So each node is measured as it is finished, by the number of
    nodes and the depth it has once aliases are expanded, and an alias is charged the size of
    its anchor. Scalars the constructor cannot turn into a value are located too.
    """

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self._file = file
        self._depth = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height) once expanded

    def _refuse(self, message: str, mark: Any, hint: str | None = None) -> InputError:
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return InputError(message, location=Location(self._file, line, col), hint=hint)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            measured = self._measured.get(id(node))
            if measured is None:
                raise self._refuse(f"alias *{event.anchor} is used inside its own anchor, which makes an endless structure", event.start_mark)
            if self._depth + measured[1] > MAX_DEPTH:
                raise self._refuse(f"alias *{event.anchor} nests values deeper than {MAX_DEPTH} levels", event.start_mark)
            return node
        if self._depth >= MAX_DEPTH:
            raise self._refuse(f"values nested deeper than {MAX_DEPTH} levels", event.start_mark, "check for unbalanced brackets")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        sizes = [self._measured[id(child)] for child in children]
        size = 1 + sum(nodes for nodes, _ in sizes)
        if size > MAX_NODES:
            raise self._refuse(
                f"more than {MAX_NODES} values here, counting what each alias (*name) repeats",
                node.start_mark,
                "no config or workflow needs this many; repeat less through aliases, or split the data",
            )
        self._measured[id(node)] = (size, 1 + max((height for _, height in sizes), default=0))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            reason = str(exc).split(";")[0]
            raise self._refuse(f"cannot read this value as {kind}: {reason}", node.start_mark, "quote it to keep it as text") from None


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
