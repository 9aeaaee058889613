"""`${VAR}` and `${VAR:-default}` expansion over a parsed YAML tree.

Expansion happens after parsing, on string values only, so an environment value can never
change the structure of the config. Unset variables are reported with their key path rather
than raised: the loader decides whether that makes a backend unavailable or the config invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .yaml_source import KeyPath

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(data: Any, environ: Mapping[str, str], path: KeyPath = ()) -> tuple[Any, dict[KeyPath, list[str]]]:
    """Return `data` with variables expanded, and the unset variable names by key path."""
    missing: dict[KeyPath, list[str]] = {}
    return _expand(data, environ, path, missing), missing


def _expand(value: Any, environ: Mapping[str, str], path: KeyPath, missing: dict[KeyPath, list[str]]) -> Any:
    if isinstance(value, str):
        return _expand_string(value, environ, path, missing)
    if isinstance(value, dict):
        return {k: _expand(v, environ, (*path, k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, (*path, i), missing) for i, v in enumerate(value)]
    return value


def _expand_string(text: str, environ: Mapping[str, str], path: KeyPath, missing: dict[KeyPath, list[str]]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        missing.setdefault(path, []).append(name)
        return ""

    return _VAR.sub(substitute, text)
