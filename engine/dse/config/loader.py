"""Find, parse, expand, validate and type the user's `config.yaml`.

Order matters: parse (syntax errors with line numbers), expand `${VAR}` on strings only,
validate against the JSON Schema (every error at once), then check what a schema cannot
express: cross references between backends and tools, and secrets that are not set. A
backend with a missing secret is *unavailable*, not an error, until something needs it.

With no config of the user's own, the packaged default is read (and `dse` says so on stderr),
so `dse run review` works in any directory. A `.env` file beside the config supplies the
`${VAR}` values the environment does not set.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from .. import defaults, redact, user_schema
from ..backends.registry import backend_type, is_backend_type, type_names
from ..errors import InputError, InputErrors, Location
from ..redact import Redactor
from . import profiles, schema
from .dise import FOREIGN_SECTIONS, OUTPUT_TOKENS, TIER_WEIGHTS, format_to_jinja, other_layout, word
from .env import DOTENV, expand, read_dotenv
from .model import (
    AzureDeployment,
    BackendConfig,
    BreakerSettings,
    Budget,
    cache_settings,
    Config,
    Endpoint,
    GlobalDefaults,
    ManagedSettings,
    Price,
    RateLimit,
    RetrySettings,
    Secret,
    ServeSettings,
    SelectorConfig,
    TaskRoute,
    ToolConfig,
    unrouted_task,
)
from .secrets import secret_values
from .yaml_source import KeyPath, YamlSource, dotted, read_yaml

# Where a bare `$NAME` is refused: a value there is a credential or a URL, never prose.
_STRICT_PLACES = frozenset({"api_key", "headers", "base_url", "endpoint", "endpoints", "url"})
_RESERVED_LLM_KEYS = (
    "backend", "fallback_backends", "global_defaults", "balancer", "retry", "circuit_breaker", "budget", "cache", "require_confirmation"
)



DEFAULT_NOTICE = "dse: no config.yaml here; using the packaged default (dse init writes one)"
_noticed = False


def find_config(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """`--config`, else `$DSE_CONFIG`, else `./config.yaml`, else `./configs/config.yaml`, else the packaged default.

    A path given by `--config` or `$DSE_CONFIG` is used as it is: a missing one is an error
    when it is read, never a silent fallback.
    """
    if explicit:
        return Path(explicit)
    if environ.get("DSE_CONFIG"):
        return Path(environ["DSE_CONFIG"])
    for candidate in (cwd / "config.yaml", cwd / "configs" / "config.yaml"):
        if candidate.is_file():
            return candidate
    return defaults.config_path()


def _notice_default() -> None:
    """One line on stderr, once per process, when no config of the user's own was found (never on stdout)."""
    global _noticed
    if not _noticed:
        _noticed = True
        print(DEFAULT_NOTICE, file=sys.stderr)


def dotenv_environ(env_file: Path, environ: Mapping[str, str]) -> Mapping[str, str]:
    """`environ` over the variables of `env_file`, if it exists: a variable set (non-empty) in `environ` wins."""
    from_file = read_dotenv(env_file)
    if not from_file:
        return environ
    return {**from_file, **{name: value for name, value in environ.items() if value or name not in from_file}}


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None, *, strict: bool = False) -> Config:
    """Load the effective config; raise InputError(s) naming file, line and key on bad input.

    Sections of other DiSE subsystems are set aside unread (their `${VAR}` too) with one
    warning naming them; `strict` makes that warning an error.
    """
    explicit = str(path) if path else None
    given = os.environ if environ is None else environ
    config_path = find_config(explicit, given, Path.cwd())
    fallback = config_path == defaults.config_path() and not explicit and not given.get("DSE_CONFIG")
    if fallback:
        _notice_default()
    source = read_yaml(config_path)
    # The packaged default stands in for a config in the current directory: its `.env` is there.
    env = dotenv_environ((Path.cwd() if fallback else config_path.parent) / DOTENV, given)
    if source.data is None:
        source.data = {}
    if not isinstance(source.data, dict):
        raise InputError("a config must be a YAML mapping with an `llm:` key", location=Location(str(config_path), 1, 1))
    profile, asked_by = profiles.chosen(given)
    source = profiles.apply(source, profile, asked_by)
    layout = other_layout(source.data)
    if layout is not None:
        raise InputError(
            f"this config uses DiSE's {layout[1]} layout, which dse reads once converted",
            location=source.locate(layout[0]),
            hint=f"dse config import {config_path} -o config.dse.yaml  (it reports every key it maps or drops)",
        )
    foreign = [key for key in source.data if key in FOREIGN_SECTIONS]
    notice = _foreign_notice(source, foreign, strict)
    own = {key: value for key, value in source.data.items() if key not in FOREIGN_SECTIONS}
    expansion = expand(own, env, strict_paths=_STRICT_PLACES)
    problems = [InputError(why, location=source.locate(path)) for path, why in expansion.malformed]
    problems += _unset_outside_backends(source, expansion.missing)
    if problems:
        raise problems[0] if len(problems) == 1 else InputErrors(problems)
    try:
        schema.validate(source, "config", expansion.data)
    except InputError as exc:
        raise _without(exc, {s.value for s in expansion.substituted}) from None
    config = _build(source, expansion.data, expansion.missing, env)
    keys = [key.reveal() for key in config.serve.api_keys]
    secrets = secret_values(expansion.substituted, [*config.backends.values(), *config.implicit.values()], keys)
    redact.remember(secrets)
    warnings = (notice, *config.warnings) if notice else config.warnings
    return replace(
        config, secrets=tuple(Secret(value) for value in sorted(secrets)), warnings=warnings, profile=profile
    )


def _foreign_notice(source: YamlSource, foreign: list[str], strict: bool) -> str | None:
    """The one warning naming DiSE sections dse does not use; under `strict`, an error at the first."""
    if not foreign:
        return None
    message = f"not used by dse: {', '.join(foreign)} (sections of other DiSE subsystems, left unread)"
    if strict:
        raise InputError(message, location=source.locate((foreign[0],)), hint="remove them, or drop --strict")
    return f"{source.locate((foreign[0],))}: {message}"


def _without(error: InputError, values: set[str]) -> InputError:
    """A schema error never quotes a value that came from the environment: it may be a key in the wrong place."""
    redactor = Redactor(values)
    errors = error.errors if isinstance(error, InputErrors) else [error]
    clean = [InputError(redactor.text(e.message), location=e.location, hint=e.hint and redactor.text(e.hint)) for e in errors]
    return clean[0] if len(clean) == 1 else InputErrors(clean)


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
    for name, block in llm.items():
        if name not in _RESERVED_LLM_KEYS and isinstance(block, dict):
            errors += _url_errors(source, block_paths[name], block, missing)

    backends: dict[str, BackendConfig] = {}
    for name, block in llm.items():
        if name in _RESERVED_LLM_KEYS:
            continue
        path = block_paths[name]
        block_missing = sorted({v for p, vs in missing.items() if p[: len(path)] == path for v in vs})
        backends[name] = _backend(name, block or {}, block_missing, source.locate(path), env)

    defaults_raw = llm.get("global_defaults") or {}
    defaults = GlobalDefaults(**{k: defaults_raw.get(k) for k in GlobalDefaults.__dataclass_fields__})
    defaults = _embeddings(source, data.get("embeddings") or {}, backends, defaults, missing, env)
    tools = {
        name: _tool(name, raw or {}, source)
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
    task_routing = _task_routing(data.get("task_routing") or {})
    references += [(route.backend, ("task_routing", task, i)) for task, routes in task_routing.items() for i, route in enumerate(routes)]
    warnings += [
        f"{source.locate(('tools', tool.name, 'task'))}: {unrouted_task(tool.task, task_routing)}"
        for tool in tools.values()
        if tool.task and tool.task not in task_routing
    ]
    for name, key_path in references:
        if name in backends:
            continue
        if is_backend_type(name):
            backends[name] = replace(_backend(name, {}, [], source.locate(key_path), env), declared=False)
            continue
        known = sorted(set(backends) | set(type_names()))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        errors.append(
            InputError(
                f"unknown backend {name!r}",
                location=source.locate(key_path),
                hint=f"did you mean {close[0]!r}?" if close else f"declare `{dotted(('llm', name))}:` with a `type:` ({', '.join(type_names())})",
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
        workflows=data.get("workflows") or {},
        cluster=(data.get("executor") or {}).get("cluster"),
        budget=_budget(llm.get("budget")),
        pricing=_prices(data.get("pricing")),
        cache=cache_settings(llm.get("cache")),
        confirm_above=(llm.get("require_confirmation") or {}).get("above_tokens"),
        serve=_serve(data.get("serve") or {}, missing),
        task_routing=task_routing,
        implicit={
            t: replace(_backend(t, {}, [], Location(source.file), env), declared=False) for t in type_names() if t not in backends
        },
    )


def _url_errors(source: YamlSource, path: KeyPath, block: Mapping[str, Any], missing: Mapping[KeyPath, list[str]]) -> list[InputError]:
    """Every server URL of one backend block that the HTTP client could not use, located.

    Checked at load so that a typo fails `dse validate` instead of the third retry of a run. A
    URL built from an unset variable is not checked: the backend is unavailable, with the reason.
    """
    urls: list[tuple[KeyPath, Any]] = [((*path, key), block[key]) for key in ("base_url", "endpoint") if block.get(key) is not None]
    endpoints = block.get("endpoints")
    lists = {(*path, "endpoints"): endpoints} if isinstance(endpoints, list) else {
        (*path, "endpoints", role): items for role, items in (endpoints or {}).items()
    }
    for list_path, items in lists.items():
        for i, item in enumerate(items):
            urls.append(((*list_path, i, "url"), item.get("url")) if isinstance(item, dict) else ((*list_path, i), item))
    for role, deployment in (block.get("deployments") or {}).items():
        if deployment.get("endpoint") is not None:
            urls.append(((*path, "deployments", role, "endpoint"), deployment["endpoint"]))
    errors = []
    for key_path, url in urls:
        problem = None if key_path in missing else url_problem(url)
        if problem:
            default = key_path[-1] == "base_url" and not url
            hint = "leave base_url out, or write null, for the protocol's default URL" if default else "write it as http(s)://HOST[:PORT][/PATH], e.g. http://localhost:11434"
            errors.append(InputError(f"invalid URL: {problem}", location=source.locate(key_path), hint=hint))
    return errors


def url_problem(url: object) -> str | None:
    """Why the HTTP client cannot use `url` as a server address, or None when it can.

    The value itself is never quoted: a URL may carry a password.
    """
    if not isinstance(url, str) or not url:
        return "it is empty"
    if any(c.isspace() for c in url):
        return "it contains whitespace"
    if "://" not in url:
        return "it does not start with http:// or https://"
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        return f"it cannot be parsed ({str(exc).split(':')[0]})"
    if parsed.scheme not in ("http", "https"):
        return f"the scheme must be http or https, not {parsed.scheme!r}"
    if not parsed.host:
        return "it has no host"
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is outside 1-65535"
    return None


def _embeddings(
    source: YamlSource,
    section: dict[str, Any],
    backends: dict[str, BackendConfig],
    defaults: GlobalDefaults,
    missing: dict[KeyPath, list[str]],
    env: Mapping[str, str],
) -> GlobalDefaults:
    """DiSE's `embeddings:` section: `backend` is the embedding backend, each entry that backend's model.

    An entry fills in the model (and vector size) of a backend declared under `llm:`. The
    chosen backend may be declared only here, with its key and URL; an unset variable in its
    entry then makes it unavailable, as in a backend block. Entries for backends neither
    declared nor chosen are DiSE's alternatives, left unread.
    """
    chosen = section.get("backend")
    if chosen and chosen not in backends and not is_backend_type(chosen):
        close = difflib.get_close_matches(chosen, sorted(set(backends) | set(type_names())), n=1, cutoff=0.5)
        raise InputError(
            f"unknown embedding backend {chosen!r}",
            location=source.locate(("embeddings", "backend")),
            hint=f"did you mean {close[0]!r}?" if close else "name a backend declared under llm:, or a backend type",
        )
    for name, entry in section.items():
        if name == "backend" or not isinstance(entry, dict) or (name not in backends and name != chosen):
            continue
        path: KeyPath = ("embeddings", name)
        placed = [key for key in ("api_key", "base_url") if key in entry]
        if name in backends and placed:
            raise InputError(
                f"embeddings.{name}.{placed[0]} is not read: backend {name!r} is declared under llm:",
                location=source.locate((*path, placed[0])),
                hint=f"set it in llm.{name}",
            )
        wrong = url_problem(entry["base_url"]) if "base_url" in entry and (*path, "base_url") not in missing else None
        if wrong:
            raise InputError(wrong, location=source.locate((*path, "base_url")))
        if name not in backends:
            if not is_backend_type(name):
                raise InputError(
                    f"embedding backend {name!r} is neither declared under llm: nor a backend type",
                    location=source.locate(path),
                    hint=f"declare llm.{name} with a `type:`",
                )
            unset = sorted({v for p, vs in missing.items() if p[:2] == path for v in vs})
            block = {key: entry[key] for key in ("api_key", "base_url") if key in entry}
            backends[name] = _backend(name, block, unset, source.locate(path), env)
        current = backends[name]
        backends[name] = replace(
            current,
            embedding_model=current.embedding_model or entry.get("model") or entry.get("deployment"),
            embedding_dimensions=entry.get("dimensions"),
        )
    if chosen and defaults.default_embedding_backend not in (None, chosen):
        raise InputError(
            f"embeddings.backend is {chosen!r} but llm.global_defaults.default_embedding_backend is "
            f"{defaults.default_embedding_backend!r}",
            location=source.locate(("embeddings", "backend")),
            hint="they mean the same: keep one",
        )
    return replace(defaults, default_embedding_backend=defaults.default_embedding_backend or chosen)


def _unset_outside_backends(source: YamlSource, missing: dict[KeyPath, list[str]]) -> list[InputError]:
    """An unset variable inside a backend block only disables that backend; anywhere else it is an error."""
    errors = []
    for key_path, names in missing.items():
        in_block = len(key_path) >= 2 and (
            (key_path[0] == "llm" and key_path[1] not in _RESERVED_LLM_KEYS)
            or key_path[:2] == ("serve", "api_keys")
            or (key_path[0] == "embeddings" and key_path[-1] in ("api_key", "base_url"))
        )
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
    """A block with what its type declares filled in, so `backend: anthropic` alone means what it says.

    The vendor's standard key variable (`OPENAI_API_KEY`) is read only for the vendor's own URL:
    a block pointed at another server with no `api_key` of its own sends no key at all.
    """
    btype = raw.get("type", name)
    kind = backend_type(btype)
    own_server = raw.get("base_url") in (None, kind.default_url)
    key_env = kind.key_env if own_server else None
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
        budget=_budget(raw.get("budget")),
        rate_limit=RateLimit(**raw["rate_limit"]) if raw.get("rate_limit") else None,
        confirm_above=(raw.get("require_confirmation") or {}).get("above_tokens"),
        cache=cache_settings(raw.get("cache")),
        pricing=_prices(raw.get("pricing")),
    )


def _budget(raw: Mapping[str, Any] | None) -> Budget | None:
    return Budget(**raw) if raw else None


def _serve(raw: Mapping[str, Any], missing: Mapping[KeyPath, list[str]]) -> ServeSettings:
    """`serve:` with its defaults; a key whose `${VAR}` is unset, or that is empty, is left out and said in `unset_keys`."""
    unset = sorted({f"{name} is not set" for path, names in missing.items() if path[:2] == ("serve", "api_keys") for name in names})
    unset_at = {path[2] for path in missing if path[:2] == ("serve", "api_keys") and len(path) > 2}
    given = list(enumerate(raw.get("api_keys") or ()))
    unset += [f"serve.api_keys[{i}] is an empty key" for i, key in given if i not in unset_at and not key]
    keys = tuple(Secret(key) for i, key in given if i not in unset_at and key)
    settings = {k: raw[k] for k in ("host", "port", "directives", "health_interval", "max_body_bytes", "drain_timeout") if k in raw}
    return ServeSettings(api_keys=keys, unset_keys=tuple(unset), **settings)


def _prices(raw: Mapping[str, Any] | None) -> dict[str, Price]:
    """`pricing:` maps a model name to USD per million tokens."""
    return {model: Price(**price) for model, price in (raw or {}).items()}



def _endpoints(raw: Any) -> dict[str | None, tuple[Endpoint, ...]]:
    """A list applies to every role (key None); a mapping gives each role its own list."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {None: tuple(_endpoint(item) for item in raw)}
    return {role: tuple(_endpoint(item) for item in items) for role, items in raw.items()}


def _endpoint(item: str | dict[str, Any]) -> Endpoint:
    return Endpoint(item) if isinstance(item, str) else Endpoint(**item)


def _task_routing(raw: Mapping[str, list[Any]]) -> dict[str, tuple[TaskRoute, ...]]:
    """`task_routing:` as written, in order; a bare name is an entry without a model."""
    return {task: tuple(_task_route(item) for item in items) for task, items in raw.items()}


def _task_route(item: str | Mapping[str, str]) -> TaskRoute:
    spec = {"backend": item} if isinstance(item, str) else item
    return TaskRoute(backend=spec["backend"], model=spec.get("model"))


def _tool(name: str, raw: dict[str, Any], source: YamlSource) -> ToolConfig:
    """A tool, with DiSE's spellings of its fields read as what DiSE uses them for."""
    llm = raw.get("llm") or {}
    path: KeyPath = ("tools", name)
    length = raw.get("max_output_length")
    for key in ("input_schema", "output_schema"):
        wrong = user_schema.problem(raw[key]) if raw.get(key) is not None else None
        if wrong:
            raise InputError(wrong, location=source.locate((*path, key)))
    return ToolConfig(
        name=name,
        type=raw.get("type", "llm"),
        description=raw.get("description"),
        backend=_one_of(source, path, raw, "backend", "backend"),
        model=llm.get("model"),
        model_key=llm.get("model_key"),
        temperature=llm.get("temperature"),
        max_tokens=llm.get("max_tokens") or (OUTPUT_TOKENS[word(length)] if isinstance(length, str) else length),
        timeout=llm.get("timeout"),
        system=_one_of(source, path, raw, "system", "system_prompt"),
        prompt=_one_of(source, path, raw, "prompt", "prompt_template"),
        location=source.locate(path),
        display_name=raw.get("name"),
        tags=tuple(raw.get("tags") or ()),
        tiers={kind: word(raw[f"{kind}_tier"]) for kind in TIER_WEIGHTS if raw.get(f"{kind}_tier")},
        input_schema=raw.get("input_schema"),
        output_schema=raw.get("output_schema"),
        cache=cache_settings(raw.get("cache")),
        task=raw.get("task"),
    )


def _one_of(source: YamlSource, tool: KeyPath, raw: dict[str, Any], own: str, dise: str) -> str | None:
    """A field dse and DiSE spell differently (`system`, `llm.system_prompt`): either, never both.

    DiSE's templates use Python's `{name}`; they are turned into the Jinja dse renders.
    """
    theirs = (raw.get("llm") or {}).get(dise)
    if raw.get(own) is not None and theirs is not None:
        raise InputError(
            f"tool {tool[-1]!r} sets both `{own}` and `llm.{dise}`, which mean the same",
            location=source.locate((*tool, "llm", dise)),
            hint="keep one of them",
        )
    if theirs is None:
        return None if raw.get(own) is None else str(raw[own])
    if own == "backend":
        return str(theirs)
    return format_to_jinja(str(theirs), source.locate((*tool, "llm", dise)))
