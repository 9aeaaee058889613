"""Reading JSON out of a model's answer or a command's output, checked against a user's schema."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ... import user_schema
from ...errors import DseError


class OutputNotJson(DseError):
    """A step with `output: json` got an answer that is not the JSON it asked for."""


def parse_json(text: str, schema: Mapping[str, Any] | None) -> Any:
    """The JSON in a model's answer (or a command's output): fences and chatter around it are tolerated, a wrong shape is not.

    The whole text is tried first: a JSON document whose strings hold a Markdown fence (a diff
    of a README) is not an answer wrapped in one.
    """
    candidate = text.strip()
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError:
        fenced = re.search(r"```(?:json)?\s*(.*?)```", candidate, re.S)
        candidate = fenced.group(1).strip() if fenced else candidate
        value = _embedded_json(candidate)
    if schema:
        errors = sorted(user_schema.validator(schema).iter_errors(value), key=lambda e: list(map(str, e.path)))
        if errors:
            where = "/".join(map(str, errors[0].path)) or "top level"
            raise OutputNotJson(f"does not match output_schema at {where}: {errors[0].message}")
    return value


def _embedded_json(candidate: str) -> Any:
    """The JSON value in `candidate`: all of it, else the first value from its first `{` or `[`."""
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        starts = [i for i in (candidate.find("{"), candidate.find("[")) if i >= 0]
        try:
            value, _ = json.JSONDecoder().raw_decode(candidate[min(starts):]) if starts else (None, 0)
        except json.JSONDecodeError as exc:
            raise OutputNotJson(f"invalid JSON: {exc.msg}") from None
        if not starts:
            raise OutputNotJson("no JSON value in the answer") from None
        return value
