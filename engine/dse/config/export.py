"""The effective config as a config.yaml, for `dse config show`: every default filled in, no secret.

What it prints `dse validate` accepts and means the same: keys as a config file spells them (none
of the loader's own: `name`, `location`, ...), each secret as the `${VAR}` reference it was read
from. A secret written into the file itself stays `***`: there is no reference to print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import profiles
from .model import BackendConfig, Budget, CacheSettings, Config, Secret, ToolConfig
from .schema import is_secret_key
from .yaml_source import read_yaml

REDACTED = "***"
_LOADER_ONLY = ("name", "api_key_env", "unavailable", "location", "declared", "embedding_dimensions")
"""BackendConfig fields the loader fills in, which a config file does not write."""


def to_data(config: Config) -> dict[str, Any]:
    written = _written_backends(config.path, config.profile)
    return {
        "llm": {
            "backend": config.backend,
            "fallback_backends": list(config.fallback_backends),
            "global_defaults": _plain(config.defaults),
            "balancer": _plain(config.balancer),
            "budget": _plain(config.budget or Budget()),
            "cache": _plain(CacheSettings(**config.cache)),
            **_confirmation(config.confirm_above),
            **{name: _backend(b, written.get(name) or {}) for name, b in config.backends.items()},
        },
        "pricing": _plain(config.pricing),
        "model_selector": _plain(config.selector),
        "tools": {name: _tool(t) for name, t in config.tools.items()},
    }


def _written_backends(path: str, profile: str | None) -> dict[str, Any]:
    """The `llm:` blocks as the file (and its profile) writes them, `${VAR}` unexpanded: where each secret came from."""
    source = read_yaml(Path(path))
    data = profiles.apply(source, profile).data if isinstance(source.data, dict) else source.data
    llm = data.get("llm") if isinstance(data, dict) else None
    return {str(k): v for k, v in llm.items() if isinstance(v, dict)} if isinstance(llm, dict) else {}


def _backend(backend: BackendConfig, written: dict[str, Any]) -> dict[str, Any]:
    """A backend block as a config file writes it: its confirmation threshold under its key, endpoints for every role as a list."""
    data: dict[str, Any] = _plain(dataclasses.replace(backend, confirm_above=None))
    for name in _LOADER_ONLY:
        data.pop(name, None)
    if backend.api_key is not None:
        data["api_key"] = _reference(written.get("api_key"), backend.api_key_env)
    headers = written.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    if "headers" in data:
        data["headers"] = {k: _reference(headers.get(k), None) if is_secret_key(k) else v for k, v in data["headers"].items()}
    if list(backend.endpoints) == [None]:
        data["endpoints"] = data["endpoints"]["*"]
    return {**data, **_confirmation(backend.confirm_above)}


def _reference(written: Any, vendor_env: str | None) -> str:
    """A secret as the `${VAR}` it was written as, or as the vendor's variable it was read from when the block names none."""
    if isinstance(written, str) and "${" in written:
        return written
    if written is None and vendor_env:
        return f"${{{vendor_env}}}"
    return REDACTED


def _tool(tool: ToolConfig) -> dict[str, Any]:
    """A tool as a config file writes it: model settings under `llm:`, tiers as `<kind>_tier`, the display name as `name`."""
    llm = {key: getattr(tool, key) for key in ("model", "model_key", "temperature", "max_tokens", "timeout") if getattr(tool, key) is not None}
    data = {
        "type": tool.type,
        "description": tool.description,
        "backend": tool.backend,
        "llm": llm or None,
        "system": tool.system,
        "prompt": tool.prompt,
        "name": tool.display_name,
        "tags": list(tool.tags) or None,
        **{f"{kind}_tier": value for kind, value in tool.tiers.items()},
        "input_schema": tool.input_schema,
        "output_schema": tool.output_schema,
        "cache": tool.cache or None,
    }
    return {key: _plain(value) for key, value in data.items() if value is not None}


def _confirmation(above: int | None) -> dict[str, Any]:
    return {} if above is None else {"require_confirmation": {"above_tokens": above}}


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if getattr(value, f.name) not in (None, {}, ())}
    if isinstance(value, Mapping):
        return {("*" if k is None else str(k)): REDACTED if is_secret_key(k) else _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
