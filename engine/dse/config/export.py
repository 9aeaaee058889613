"""The effective config as plain data, for `dse config show`: every default filled in, no secret."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .model import BackendConfig, Budget, CacheSettings, Config, Secret
from .schema import is_secret_key

REDACTED = "***"


def to_data(config: Config) -> dict[str, Any]:
    return {
        "path": config.path,
        "llm": {
            "backend": config.backend,
            "fallback_backends": list(config.fallback_backends),
            "global_defaults": _plain(config.defaults),
            "balancer": _plain(config.balancer),
            "budget": _plain(config.budget or Budget()),
            "cache": _plain(CacheSettings(**config.cache)),
            **_confirmation(config.confirm_above),
            **{name: _backend(b) for name, b in config.backends.items()},
        },
        "pricing": _plain(config.pricing),
        "model_selector": _plain(config.selector),
        "tools": {name: _plain(t) for name, t in config.tools.items()},
        "warnings": list(config.warnings),
    }


def _backend(backend: BackendConfig) -> dict[str, Any]:
    """A backend block, its confirmation threshold under the key it is written with."""
    data: dict[str, Any] = _plain(dataclasses.replace(backend, confirm_above=None))
    return {**data, **_confirmation(backend.confirm_above)}


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
