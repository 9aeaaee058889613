"""Profiles: named partial configs under `profiles:`, one of them laid over the rest of the file.

One config serves every environment (FARM's Ollama in development, OpenAI in production): the
base says what is common, `profiles.prod` says only what differs. A profile is merged as a JSON
Merge Patch (RFC 7386), a rule users already know from kubectl and HTTP APIs: mappings merge
key by key, at any depth; a list or a scalar replaces what the base has; `null` removes the key
(so a profile can drop a backend block the base declares). `profiles:` itself is not part of
the result.

The merged result keeps the line of every value where it is written: a value the profile set
is located at its line in the profile, under its key path there (`profiles.prod.llm.backend`),
so an error in the effective config points at the line to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from ..errors import InputError
from . import schema
from .yaml_source import KeyPath, YamlSource

SECTION = "profiles"
ENV = "DSE_PROFILE"

_flag: ContextVar[str | None] = ContextVar("dse_profile_flag", default=None)


@contextmanager
def choosing(name: str | None) -> Iterator[None]:
    """`--profile NAME` for every config loaded inside: the runner and the gateway load theirs without being told."""
    token = _flag.set(name)
    try:
        yield
    finally:
        _flag.reset(token)


def chosen(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The profile asked for, and by what (for messages): `--profile` wins over `$DSE_PROFILE`."""
    flag = _flag.get()
    if flag:
        return flag, "--profile"
    return environ.get(ENV) or None, f"${ENV}"


def merge(base: Any, patch: Any) -> Any:
    """`patch` laid over `base` as a JSON Merge Patch: mappings merge, `null` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


def apply(source: YamlSource, name: str | None, asked_by: str = "--profile") -> YamlSource:
    """The config as profile `name` makes it, `profiles:` gone; every profile is checked as written."""
    data: dict[str, Any] = source.data
    section = data.get(SECTION)
    if SECTION in data:
        schema.validate(source, "config", {SECTION: section})
    base = {key: value for key, value in data.items() if key != SECTION}
    if name is None:
        return replace(source, data=base)
    profiles: dict[str, Any] = section or {}
    if name not in profiles:
        raise _unknown(source, name, asked_by, profiles)
    patch = profiles[name] or {}
    if SECTION in patch:
        raise InputError(
            "a profile cannot hold profiles", location=source.locate((SECTION, name, SECTION)), hint="declare every profile at the top level"
        )
    positions, origins = _positions(source, base, patch, (SECTION, name))
    return replace(source, data=merge(base, patch), positions=positions, origins=origins)


def _unknown(source: YamlSource, name: str, asked_by: str, profiles: Mapping[str, Any]) -> InputError:
    """The profile asked for is not in the file: name those that are, or say there are none."""
    if not profiles:
        return InputError(
            f"profile {name!r} (from {asked_by}) asked for, but this config has no `{SECTION}:`",
            location=source.locate(()),
            hint=f"add `{SECTION}: {{{name}: {{...}}}}` to the config, or drop --profile and unset ${ENV}",
        )
    close = difflib.get_close_matches(name, list(profiles), n=1, cutoff=0.6)
    listed = f"profiles here: {', '.join(profiles)}"
    return InputError(
        f"no profile {name!r} (from {asked_by})",
        location=source.locate((SECTION,)),
        hint=f"did you mean {close[0]!r}? {listed}" if close else listed,
    )


def _positions(
    source: YamlSource, base: Mapping[str, Any], patch: Mapping[str, Any], prefix: KeyPath
) -> tuple[dict[KeyPath, tuple[int, int]], dict[KeyPath, KeyPath]]:
    """Where each merged value is written: the base's line, or the profile's for what the profile set.

    Returns the positions by merged key path, and for each value that came from the profile its
    key path as written there.
    """
    replaced = set(_set_by(base, patch, ()))

    def from_profile(path: KeyPath) -> bool:
        return any(path[:depth] in replaced for depth in range(1, len(path) + 1))

    positions = {path: at for path, at in source.positions.items() if not from_profile(path)}
    origins: dict[KeyPath, KeyPath] = {}
    for written, at in source.positions.items():
        path = written[len(prefix):]
        if written[: len(prefix)] == prefix and from_profile(path):
            positions[path] = at
            origins[path] = written
    return positions, origins


def _set_by(base: Mapping[str, Any], patch: Mapping[str, Any], path: KeyPath) -> Iterator[KeyPath]:
    """The key paths whose value the profile sets or removes, rather than merges into."""
    for key, value in patch.items():
        here = (*path, key)
        below = base.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            yield from _set_by(below, value, here)
        else:
            yield here

