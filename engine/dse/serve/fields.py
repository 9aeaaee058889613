"""Reading one field of a client's JSON body, or saying exactly which field is wrong and why.

Both protocols' readers use these, so a wrong type gets the same 400 whichever API was called.
`where` is the field's path as a client would write it (`messages[2].content`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .problems import invalid

JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}


def kind_of(value: Any) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be an object, not {kind_of(value)}", where)
    return value


def objects(raw: Any, where: str, *, required: bool = False) -> list[tuple[str, Mapping[str, Any]]]:
    """An array of objects, each with the path it is found at (`tools[2]`); absent is empty unless `required`."""
    if raw is None and not required:
        return []
    if not isinstance(raw, list) or (required and not raw):
        raise invalid(f"{where} must be a{' non-empty' if required else 'n'} array", where)
    return [(f"{where}[{i}]", obj(item, f"{where}[{i}]")) for i, item in enumerate(raw)]


def text_parts(raw: Any, where: str, what: str) -> str:
    """A string, or an array of `{type: text, text}` `what` joined: content as both protocols write it; any other kind is refused by name."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise invalid(f"{where} must be a string or an array of {what}, not {kind_of(raw)}", where)
    texts = []
    for at, part in objects(raw, where):
        if part.get("type") != "text":
            raise invalid(f"{at}: {what} of type {part.get('type')!r} are not supported here; only text", f"{at}.type")
        texts.append(text(part, "text", f"{at}.", required=True) or "")
    return "".join(texts)


def text(body: Mapping[str, Any], name: str, where: str = "", *, required: bool = False) -> str | None:
    value = body.get(name)
    path = where + name
    if value is None:
        if required:
            raise invalid(f"{path} is required", path)
        return None
    if not isinstance(value, str):
        raise invalid(f"{path} must be a string, not {kind_of(value)}", path)
    return value


def model(body: Mapping[str, Any]) -> str:
    """`model`: a name of at most 256 printable characters, as every name dse serves is."""
    value = text(body, "model", required=True) or ""
    if not value.strip() or len(value) > 256 or not value.isprintable():
        raise invalid("model must be a name of 1 to 256 printable characters; GET /v1/models lists them", "model")
    return value


def number(body: Mapping[str, Any], name: str, low: float, high: float | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{name} must be a finite number, not {kind_of(value) if not isinstance(value, float) else value}", name)
    if value < low or (high is not None and value > high):
        raise invalid(f"{name} must be between {low} and {high}" if high is not None else f"{name} must be at least {low}", name)
    return float(value)


def integer(body: Mapping[str, Any], name: str, low: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer, not {kind_of(value)}", name)
    if low is not None and value < low:
        raise invalid(f"{name} must be at least {low}", name)
    return value


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean, not {kind_of(value)}", name)
    return value


def strings(body: Mapping[str, Any], name: str, *, most: int | None = None) -> tuple[str, ...]:
    """A string or an array of strings (OpenAI's `stop` takes both)."""
    value = body.get(name)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise invalid(f"{name} must be a string or an array of strings", name)
    if most is not None and len(items) > most:
        raise invalid(f"{name} takes at most {most} strings", name)
    return tuple(items)


def refuse_unknown(body: Mapping[str, Any], known: Iterable[str], harmless: Mapping[str, Any]) -> None:
    """A field the gateway cannot honour is a 400 naming it, never dropped unsaid.

    `harmless` maps fields that may be sent at the value that changes nothing (`n: 1`,
    `logprobs: false`); any other value of them is refused like an unknown field.
    """
    allowed = set(known)
    for name, value in body.items():
        if name in allowed:
            continue
        if name in harmless and value in (None, harmless[name]):
            continue
        why = f"{name} = {value!r} is not supported by dse serve" if name in harmless else f"unsupported field {name!r}"
        raise invalid(f"{why}; remove it (dse passes on only what every backend in the route can honour)", name)
