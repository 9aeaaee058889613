"""JSON Schemas that users write (`output_schema`, a tool's `input_schema`): checked, and kept local.

jsonschema resolves a `$ref` it does not know by fetching it: `{"$ref": "file:///etc/passwd"}`
or an `http://` URL in a workflow would make a run read local files or call any server. A
user's schema may only refer inside itself (`#/$defs/...`), which is checked when the file is
loaded, and validators are built on an empty registry, so nothing is ever fetched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry


def problem(schema: Any) -> str | None:
    """Why `schema` cannot be used, or None: not a valid schema, or a `$ref` that leaves it."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    for ref in _refs(schema):
        if not ref.startswith("#"):
            return f"$ref {ref!r} points outside the schema; only references inside it (#/...) are allowed"
        if not _resolves(schema, ref[1:]):
            return f"$ref {ref!r} points at nothing in the schema"
    return None


def validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A validator that can never fetch a reference."""
    return Draft202012Validator(schema, registry=Registry())


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolves(schema: Any, pointer: str) -> bool:
    node = schema
    for raw in pointer.split("/")[1:] if pointer else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True
