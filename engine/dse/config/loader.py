"""Find, parse, expand, validate and type the user's `config.yaml`.

Order matters: parse (syntax errors with line numbers), expand `${VAR}` on strings only,
validate against the JSON Schema (every error at once), then check what a schema cannot
express: cross references between backends and tools, and secrets that are not set. A
backend with a missing secret is *unavailable*, not an error, until something needs it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends.registry import backend_type, is_backend_type, type_names
from ..errors import InputError, InputErrors, Location
from . import schema
from .env import expand
from .model import (
    AzureDeployment,
    BackendConfig,
    BreakerSettings,
    Config,
    Endpoint,
    GlobalDefaults,
    ManagedSettings,
    RetrySettings,
    Secret,
    SelectorConfig,
    ToolConfig,
)
from .yaml_source import KeyPath, YamlSource, read_yaml

_RESERVED_LLM_KEYS = ("backend", "fallback_backends", "global_defaults", "balancer", "retry", "circuit_breaker")



def find_config(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """`--config`, else `$DSE_CONFIG`, else `./config.yaml`, else `./configs/config.yaml`."""
    if explicit:
        return Path(explicit)
    if environ.get("DSE_CONFIG"):
        return Path(environ["DSE_CONFIG"])
    for candidate in (cwd / "config.yaml", cwd / "configs" / "config.yaml"):
        if candidate.is_file():
            return candidate
    raise InputError(
        "no config found (looked at --config, $DSE_CONFIG, ./config.yaml, ./configs/config.yaml)",
        hint="pass --config PATH, or copy configs/config.yaml from the dse repository",
    )


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the effective config; raise InputError(s) naming file, line and key on bad input."""
    env = os.environ if environ is None else environ
    config_path = find_config(str(path) if path else None, env, Path.cwd())
    source = read_yaml(config_path)
    if source.data is None:
        source.data = {}
    if not isinstance(source.data, dict):
        raise InputError("a config must be a YAML mapping with an `llm:` key", location=Location(str(config_path), 1, 1))
    data, missing = expand(source.data, env)
    unset = _unset_outside_backends(source, missing)
    if unset:
        raise unset[0] if len(unset) == 1 else InputErrors(unset)
    schema.validate(source, "config", data)
    return _build(source, data, missing, env)


def _build(source: YamlSource, data: dict[str, Any], missing: dict[KeyPath, list[str]], env: Mapping[str, str]) -> Config:
    errors: list[InputError] = []
    warnings: list[str] = []
    llm: dict[str, Any] = dict(data.get("llm") or {})
    for legacy in [k for k in data if is_backend_type(k)]:
        warnings.append(
            f"{source.locate((legacy,))}: a top-level `{legacy}:` block is the pre-multi-backend format; "
            f"it is read as `llm.{legacy}` (move it under `llm:`)"
        )
        llm.setdefault(legacy, data[legacy])
        llm.setdefault("backend", legacy)

    block_paths = {name: (("llm", name) if name in (data.get("llm") or {}) else (name,)) for name in llm}

    backends: dict[str, BackendConfig] = {}
    for name, block in llm.items():
        if name in _RESERVED_LLM_KEYS:
            continue
        path = block_paths[name]
        block_missing = sorted({v for p, vs in missing.items() if p[: len(path)] == path for v in vs})
        backends[name] = _backend(name, block or {}, block_missing, source.locate(path), env)

    defaults_raw = llm.get("global_defaults") or {}
    defaults = GlobalDefaults(**{k: defaults_raw.get(k) for k in GlobalDefaults.__dataclass_fields__})
    tools = {
        name: _tool(name, raw or {}, source.locate(("tools", name)))
        for name, raw in (data.get("tools") or {}).items()
    }

    references: list[tuple[str, KeyPath]] = []
    if llm.get("backend"):
        references.append((llm["backend"], _llm_path(data, "backend")))
    for i, name in enumerate(llm.get("fallback_backends") or []):
        references.append((name, (*_llm_path(data, "fallback_backends"), i)))
    for key in ("default_backend", "default_embedding_backend"):
        if defaults_raw.get(key):
            references.append((defaults_raw[key], (*_llm_path(data, "global_defaults"), key)))
    for tool in tools.values():
        if tool.backend:
            references.append((tool.backend, ("tools", tool.name, "backend")))
    for name, key_path in references:
        if name in backends:
            continue
        if is_backend_type(name):
            backends[name] = _backend(name, {}, [], source.locate(key_path), env)
            continue
        known = sorted(set(backends) | set(type_names()))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        errors.append(
            InputError(
                f"unknown backend {name!r}",
                location=source.locate(key_path),
                hint=f"did you mean {close[0]!r}?" if close else f"declare `llm.{name}:` with a `type:` ({', '.join(type_names())})",
            )
        )
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)

    primary = llm.get("backend") or defaults.default_backend or (next(iter(backends)) if len(backends) == 1 else "")
    selector_raw = data.get("model_selector") or {}
    base_selector = SelectorConfig()
    selector = SelectorConfig(
        enabled=selector_raw.get("enabled", True),
        weights={**base_selector.weights, **(selector_raw.get("weights") or {})},
        top_k=selector_raw.get("top_k", base_selector.top_k),
        models=selector_raw.get("models") or {},
    )
    return Config(
        path=source.file,
        backend=primary,
        fallback_backends=tuple(llm.get("fallback_backends") or ()),
        defaults=defaults,
        backends=backends,
        tools=tools,
        selector=selector,
        balancer=llm.get("balancer") or {},
        retry=RetrySettings(**(llm.get("retry") or {})),
        circuit_breaker=BreakerSettings(**(llm.get("circuit_breaker") or {})),
        warnings=tuple(warnings),
        implicit={
            t: _backend(t, {}, [], Location(source.file), env) for t in type_names() if t not in backends
        },
    )


def _unset_outside_backends(source: YamlSource, missing: dict[KeyPath, list[str]]) -> list[InputError]:
    """An unset variable inside a backend block only disables that backend; anywhere else it is an error."""
    errors = []
    for key_path, names in missing.items():
        in_block = len(key_path) >= 2 and key_path[0] == "llm" and key_path[1] not in _RESERVED_LLM_KEYS
        if not (in_block or (key_path and is_backend_type(str(key_path[0])))):
            errors.append(
                InputError(
                    f"environment variable {', '.join(names)} is not set",
                    location=source.locate(key_path),
                    hint="set it, or write ${VAR:-default}",
                )
            )
    return errors


def _llm_path(data: dict[str, Any], key: str) -> KeyPath:
    return ("llm", key) if key in (data.get("llm") or {}) else (next((k for k in data if is_backend_type(k)), "llm"),)


def _backend(
    name: str, raw: dict[str, Any], missing: list[str], location: Location, env: Mapping[str, str]
) -> BackendConfig:
    """A block with what its type declares filled in, so `backend: anthropic` alone means what it says."""
    btype = raw.get("type", name)
    kind = backend_type(btype)
    key_env = kind.key_env
    api_key = raw.get("api_key")
    if api_key is None and key_env:
        api_key = env.get(key_env)
        if not api_key:
            missing = [*missing, key_env]
    reason = None
    if missing:
        names = sorted(set(missing))
        reason = f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not set"
    elif raw.get("enabled") is False:
        reason = "disabled in config (enabled: false)"
    endpoint = raw.get("endpoint")
    if not endpoint and kind.url_env:
        endpoint = env.get(kind.url_env)
    managed = ManagedSettings(**raw["managed"]) if raw.get("managed") is not None else None
    return BackendConfig(
        name=name,
        type=btype,
        base_url=raw.get("base_url") or (None if managed else kind.default_url),
        api_key=Secret(api_key) if api_key else None,
        api_key_env=key_env,
        organization=raw.get("organization"),
        models=dict(raw.get("models") or {}),
        endpoints=_endpoints(raw.get("endpoints")),
        context_windows=dict(raw.get("context_windows") or {}),
        embedding_model=raw.get("embedding_model"),
        timeout=raw.get("timeout"),
        headers=dict(raw.get("headers") or {}),
        endpoint=endpoint,
        api_version=raw.get("api_version"),
        deployment_name=raw.get("deployment_name"),
        deployments={role: AzureDeployment(**d) for role, d in (raw.get("deployments") or {}).items()},
        managed=managed,
        balancer=dict(raw.get("balancer") or {}),
        enabled=raw.get("enabled", True),
        unavailable=reason,
        location=location,
    )


def _endpoints(raw: Any) -> dict[str | None, tuple[Endpoint, ...]]:
    """A list applies to every role (key None); a mapping gives each role its own list."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {None: tuple(_endpoint(item) for item in raw)}
    return {role: tuple(_endpoint(item) for item in items) for role, items in raw.items()}


def _endpoint(item: str | dict[str, Any]) -> Endpoint:
    return Endpoint(item) if isinstance(item, str) else Endpoint(**item)


def _tool(name: str, raw: dict[str, Any], location: Location) -> ToolConfig:
    llm = raw.get("llm") or {}
    return ToolConfig(
        name=name,
        type=raw.get("type", "llm"),
        description=raw.get("description"),
        backend=raw.get("backend"),
        model=llm.get("model"),
        model_key=llm.get("model_key"),
        temperature=llm.get("temperature"),
        max_tokens=llm.get("max_tokens"),
        timeout=llm.get("timeout"),
        system=raw.get("system"),
        prompt=raw.get("prompt"),
        location=location,
    )

