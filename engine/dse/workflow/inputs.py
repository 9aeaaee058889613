"""Workflow inputs: declared types, defaults, and `--input key=value` strings coerced to them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from .model import Workflow

_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def bind_inputs(workflow: Workflow, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then given values coerced to the declared type; unknown or missing inputs are errors."""
    unknown = sorted(set(given) - set(workflow.inputs))
    if unknown:
        raise InputError(
            f"unknown input {unknown[0]!r} for workflow {workflow.name!r}",
            hint=f"declared inputs: {', '.join(workflow.inputs) or 'none'}",
        )
    bound: dict[str, Any] = {}
    for name, spec in workflow.inputs.items():
        if name in given:
            _check_pattern(name, spec.pattern, given[name])
            bound[name] = _coerce(name, spec.type, given[name])
        elif spec.default is not None:
            bound[name] = _coerce(name, spec.type, spec.default) if spec.type == "directory" else spec.default
        elif spec.required:
            raise InputError(f"input {name!r} is required", hint=f"pass --input {name}=VALUE")
        else:
            bound[name] = None
    return bound


def _directory(name: str, value: Any) -> str:
    """A path that names an existing directory now: a run never starts only to find it missing."""
    if not isinstance(value, str) or not os.path.isdir(value):
        raise InputError(f"input {name!r} must name an existing directory, got {value!r}")
    return value


def _check_pattern(name: str, pattern: str | None, value: Any) -> None:
    """A given value matches the input's `pattern` as a whole, before it can reach a command."""
    text = value if isinstance(value, str) else json.dumps(value)
    if pattern is not None and re.fullmatch(pattern, text) is None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InputError(f"input {name!r} must match {pattern}, got {shown!r}")


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == "directory":
        return _directory(name, value)
    if not isinstance(value, str) or kind == "string":
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            return _BOOLS[value.lower()]
        return json.loads(value)
    except (ValueError, KeyError):
        raise InputError(f"input {name!r} must be {kind}, got {value!r}") from None
