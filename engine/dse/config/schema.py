"""JSON Schema validation that speaks the user's language: file:line:col, key path, hint.

The schemas in `schemas/` are the single source of truth for what input is valid; this module
only turns jsonschema's findings into messages a person can act on, all at once. The one
exception is the list of backend types: the backend registry owns it, the validator takes it
from there, and `make schemas` writes it into the file for editors to read.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

from ..backends.registry import type_names
from .dise import FOREIGN_SECTIONS
from ..errors import InputError, InputErrors
from .yaml_source import YamlSource, dotted


def schema_dir() -> Path:
    """Installed wheels carry the schemas inside the package; a source checkout keeps them at the top."""
    packaged = Path(str(resources.files("dse"))) / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "schemas"


def schema_document(name: str) -> dict[str, Any]:
    """`schemas/<name>.schema.json`, with the registry's backend types where the config schema lists them."""
    with open(schema_dir() / f"{name}.schema.json", encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    if name == "config":
        for section in sorted(FOREIGN_SECTIONS):
            document["properties"][section] = {
                "description": "A section of another DiSE subsystem: dse does not use it, and `dse validate` says so."
            }
        names = type_names()
        pattern = "^(" + "|".join(names) + ")$"
        document["$defs"]["backendType"]["enum"] = list(names)
        for holder in (document, document["$defs"]["llm"]):
            (rule,) = holder["patternProperties"].values()
            holder["patternProperties"] = {pattern: rule}
    return document


def schema_text(name: str) -> str:
    """The file's text as it should be: what the test compares and `make schemas` writes."""
    return json.dumps(schema_document(name), indent=2, ensure_ascii=False) + "\n"


@cache
def validator(name: str) -> Draft202012Validator:
    """A cached validator for a schema, as `schema_document` gives it."""
    return Draft202012Validator(schema_document(name))


def validate(source: YamlSource, schema_name: str, data: Any | None = None) -> None:
    """Raise every schema violation in `source` at once, each located and explained."""
    target = source.data if data is None else data
    errors = sorted(validator(schema_name).iter_errors(target), key=lambda e: list(map(str, e.absolute_path)))
    explained = [_explain(source, cause) for error in errors for cause in _causes(error)]
    found = list({str(e): e for e in explained}.values())  # a metaschema repeats one finding per vocabulary
    if len(found) == 1:
        raise found[0]
    if found:
        raise InputErrors(found)


_SECRET_KEY = re.compile(r"api[_-]?key|authorization|token|password|secret", re.I)
# Counts of tokens are numbers, not credentials: `max_tokens: 0` must be shown to be fixed.
_TOKEN_COUNT = re.compile(r"(max|min|num|total|prompt|completion)[_-]?(new[_-])?tokens?$", re.I)


def is_secret_key(key: object) -> bool:
    """Keys whose values must never be echoed back, not even in an error about them."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(key)) and not _TOKEN_COUNT.search(key)


def _causes(error: ValidationError) -> list[ValidationError]:
    """What to report for one failure: for `anyOf`/`oneOf`, the errors of the branch that was meant.

    jsonschema's best_match prefers the shallowest error, so an endpoint item with a typo in
    one key was reported as "expected object, got list" at the whole list. The branch meant is
    the one that takes the value's type; its errors are reported, each at its own key. When no
    branch takes the type, the failure itself is (its message lists the types allowed); when
    several do, the most relevant of their errors is.
    """
    if not error.context:
        return [error]
    branches: dict[object, list[ValidationError]] = {}
    for cause in error.context:
        branches.setdefault(cause.relative_schema_path[0], []).append(cause)
    fitting = [causes for causes in branches.values() if not any(_rejects_type(c) for c in causes)]
    if not fitting:
        return [error]
    if len(fitting) == 1:
        return [leaf for cause in fitting[0] for leaf in _causes(cause)]
    return _causes(max((c for causes in fitting for c in causes), key=relevance))


def _rejects_type(error: ValidationError) -> bool:
    """A branch error that says the value itself has the wrong type, not something inside it."""
    return error.validator == "type" and not error.relative_path


def _explain(source: YamlSource, error: ValidationError) -> InputError:
    path = tuple(error.absolute_path)
    rule: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    expected: Any = error.validator_value
    if any(is_secret_key(part) for part in path):
        return InputError("invalid value (not shown: it is a secret)", location=source.locate(path), hint=_rule(error))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(rule.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed and not _matches_pattern(rule, k)]
        key = unknown[0] if unknown else ""
        here = (*path, key) if key else path
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else None)
        return InputError(f"unknown key {key!r}", location=source.locate(here), hint=hint)
    if error.validator == "required" and isinstance(error.instance, dict):
        key = next((k for k in expected if k not in error.instance), "")
        described = rule.get("properties", {}).get(key, {})
        return InputError(f"missing required key {key!r}", location=source.locate(path), hint=described.get("description"))
    if error.validator == "enum":
        choices = [c for c in expected if isinstance(c, str)]
        close = difflib.get_close_matches(str(error.instance), choices, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(map(str, expected))}"
        return InputError(f"{error.instance!r} is not allowed here", location=source.locate(path), hint=hint)
    return InputError(_short(error), location=source.locate(path), hint=rule.get("description"))


def _matches_pattern(schema: Mapping[str, Any], key: str) -> bool:
    return any(re.search(pattern, key) for pattern in schema.get("patternProperties", {}))


def _short(error: ValidationError) -> str:
    """jsonschema quotes whole sub-documents; a user only needs the rule that failed."""
    if error.validator == "type":
        return f"{_rule(error)}, got {_got(error.instance)}"
    if error.validator in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        return f"{error.instance!r} is out of range ({error.validator} {error.validator_value})"
    if error.validator == "pattern":
        return f"{error.instance!r} does not match the pattern {error.validator_value}"
    if error.validator in {"anyOf", "oneOf"} and error.context:  # no branch takes this type (see _causes)
        types = dict.fromkeys(t for c in error.context if _rejects_type(c) for t in _types(c.validator_value))
        return f"expected {' or '.join(types)}, got {_got(error.instance)}"
    if error.validator in {"not", "anyOf", "oneOf"}:
        return f"invalid combination of keys at {dotted(tuple(error.absolute_path)) or 'top level'}"
    return error.message if len(error.message) <= 160 else error.message[:157] + "..."


def _got(instance: Any) -> str:
    return f"{type(instance).__name__} {json.dumps(instance, default=str)[:60]}"


def _types(value: Any) -> list[str]:
    """A `type` keyword's value as a list of names."""
    return [value] if isinstance(value, str) else list(value)


def _rule(error: ValidationError) -> str:
    """What the value should have been, without the value itself."""
    if error.validator == "type":
        return f"expected {' or '.join(_types(error.validator_value))}"
    return f"fails the schema rule {error.validator!r}"


def write_schema_files() -> None:
    """Bring the files up to date with the registry (`make schemas`), after a backend type is added."""
    for name in ("config", "workflow"):
        (schema_dir() / f"{name}.schema.json").write_text(schema_text(name), encoding="utf-8")
