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

A `.env` file beside the config supplies values the environment lacks (`read_dotenv`): its
values are expanded like any other, so the same rule decides which of them are secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, Location
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


DOTENV = ".env"
_DOTENV_LINE = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=[ \t]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "$": "$"}


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables of a `.env` file, or none when there is no such file; bad lines are located errors."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", location=Location(str(path))) from None
    return parse_dotenv(text, str(path))


def parse_dotenv(text: str, file: str = DOTENV) -> dict[str, str]:
    r"""`KEY=VALUE` lines, simply and strictly; nothing in a value is expanded.

    A line is blank, a `#` comment, or `[export ]KEY=VALUE`. A value is bare (up to a ` #`
    comment, surrounding blanks dropped), 'single-quoted' (as written) or "double-quoted"
    (with \\ \" \n \t \r \$ escapes); after a closing quote only a comment may follow. A
    value spans one line. A key set twice is an error, as is any other line; the error names
    the file, line and column and never quotes the line, which may hold a secret.
    """
    values: dict[str, str] = {}
    first: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            column = len(line) - len(line.lstrip(" \t")) + 1
            raise InputError(
                "not a KEY=VALUE line",
                location=Location(file, number, column),
                hint="write NAME=value (NAME: letters, digits and _, not starting with a digit; no blank before =), or # for a comment",
            )
        name = match.group(1)
        value = _dotenv_value(line, match.end(), Location(file, number))
        if name in values:
            raise InputError(
                f"{name} is set twice (first on line {first[name]})",
                location=Location(file, number, match.start(1) + 1),
                hint="keep one of them",
            )
        values[name], first[name] = value, number
    return values


def _dotenv_value(line: str, start: int, at: Location) -> str:
    """The value that starts at `start`: bare, or quoted with nothing but a comment after it."""
    def error(column: int, why: str, hint: str) -> InputError:
        return InputError(why, location=Location(at.file, at.line, column + 1), hint=hint)

    quote = line[start : start + 1]
    if quote not in ("'", '"'):
        value = re.split(r"[ \t]#", line[start:], maxsplit=1)[0].rstrip(" \t")
        if "'" in value or '"' in value:
            raise error(start, "a quote inside an unquoted value", "quote the whole value: KEY='value' or KEY=\"value\"")
        return value
    out: list[str] = []
    i = start + 1
    while i < len(line) and line[i] != quote:
        if quote == '"' and line[i] == "\\":
            escaped = line[i + 1 : i + 2]
            if escaped not in _ESCAPES:
                raise error(i, "an unknown escape in a double-quoted value", "write \\\\ for a backslash, or use single quotes")
            out.append(_ESCAPES[escaped])
            i += 2
            continue
        out.append(line[i])
        i += 1
    if i >= len(line):
        raise error(start, "an unclosed quote (a value spans one line)", "close the quote on the same line; write \\n in double quotes for a newline")
    rest = line[i + 1 :]
    if rest.strip(" \t") and not re.match(r"[ \t]+#", rest):
        raise error(i + 1 + len(rest) - len(rest.lstrip(" \t")), "text after the closing quote", "only a ` # comment` may follow a quoted value")
    return "".join(out)
