"""`${VAR}` expansion over a parsed YAML tree, with every value it brought in remembered.

Expansion happens after parsing, on string values only, so an environment value can never
change the structure of the config. The supported forms are exactly:

- `${NAME}`: the variable's value; unset (or empty) is reported, not raised.
- `${NAME:-default}`: the value, or `default` when unset or empty (the default holds no `$`, `{` or `}`).
- `$${`: a literal `${`.

NAME is a letter or underscore, then letters, digits and underscores. Anything else that
starts with `${` (unclosed, empty, a bad name, `${X:?msg}`, nesting) is a located error: sent
as it stands, it would reach a server as an API key. A bare `$NAME` is an error where the
value is a secret or a URL, which is where it is always a mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .yaml_source import KeyPath

_TOKEN = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}|\$\{")
_BARE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
FORMS = "${NAME}, ${NAME:-default} or $${ for a literal ${"


@dataclass(frozen=True)
class Substitution:
    """One `${NAME}` that was replaced: where, by which variable, and the value it brought in."""

    path: KeyPath
    name: str
    value: str


@dataclass
class Expansion:
    """The expanded tree, unset variables by key path, malformed references, and every value substituted."""

    data: Any
    missing: dict[KeyPath, list[str]] = field(default_factory=dict)
    malformed: list[tuple[KeyPath, str]] = field(default_factory=list)
    substituted: list[Substitution] = field(default_factory=list)


def expand(data: Any, environ: Mapping[str, str], *, strict_paths: frozenset[str] = frozenset()) -> Expansion:
    """Expand every string in `data`; a bare `$NAME` is an error under a key named in `strict_paths`."""
    result = Expansion(None)
    result.data = _expand(data, environ, (), result, strict_paths)
    return result


def _expand(value: Any, environ: Mapping[str, str], path: KeyPath, out: Expansion, strict: frozenset[str]) -> Any:
    if isinstance(value, str):
        return _expand_string(value, environ, path, out, strict)
    if isinstance(value, dict):
        return {k: _expand(v, environ, (*path, k), out, strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, (*path, i), out, strict) for i, v in enumerate(value)]
    return value


def _expand_string(text: str, environ: Mapping[str, str], path: KeyPath, out: Expansion, strict: frozenset[str]) -> str:
    if strict & {str(part) for part in path} and _BARE.search(text):
        out.malformed.append((path, "a bare `$NAME` is not expanded here: write ${NAME}"))

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name is None:
            out.malformed.append((path, f"{_what(text[match.start() :])} (supported: {FORMS})"))
            return token
        value = environ.get(name)
        if value:
            out.substituted.append(Substitution(path, name, value))
            return value
        if default is not None:
            return default
        out.missing.setdefault(path, []).append(name)
        return ""

    return _TOKEN.sub(substitute, text)


def _what(rest: str) -> str:
    """What is wrong with a `${` that no supported form matched, without echoing it: it may be a secret."""
    end = rest.find("}")
    if end < 0:
        return "an unclosed `${`"
    inner = rest[2:end]
    if not inner:
        return "an empty `${}`"
    name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", inner)
    if name is None:
        return "`${...}` with an invalid variable name"
    if "${" in inner:
        return "a nested `${...}`"
    return "an unsupported `${NAME...}` form"
