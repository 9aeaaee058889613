"""The typed, validated configuration every other module reads.

Plain frozen dataclasses: once loaded, a config never changes under a running workflow.
Secrets are wrapped so that printing, logging or journaling a config cannot leak them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import Location


class Secret:
    """A string that refuses to be printed; call `reveal()` at the single place it is sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Endpoint:
    """One server that can take calls for a backend role."""

    url: str
    weight: float = 1.0
    max_concurrency: int | None = None
    gpu: int | str | None = None


@dataclass(frozen=True)
class ManagedSettings:
    """How many llama.cpp servers the engine starts itself, and with what."""

    model: str = "smollm2"
    replicas: int = 1
    threads: int = 1
    ctx_size: int = 2048
    parallel: int = 1
    binary: str | None = None
    host: str = "127.0.0.1"
    startup_timeout: float = 60.0
    repeat_penalty: float = 1.1
    embeddings: bool = False


@dataclass(frozen=True)
class Price:
    """USD per million tokens: what the vendor bills for input, output and input read from its prompt cache."""

    input: float
    output: float
    cached_input: float | None = None


@dataclass(frozen=True)
class Budget:
    """Most USD to spend in one run and in one (local) day; None is no limit."""

    per_run: float | None = None
    per_day: float | None = None


@dataclass(frozen=True)
class RateLimit:
    """Calls per minute, tokens per minute and calls per day a backend takes; None is no limit."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None


CACHE_MODES = ("on", "off", "read_only", "write_only")


@dataclass(frozen=True)
class CacheSettings:
    """How a call uses the response cache: `mode`, how long an answer stays fresh, and whether sampled calls are kept.

    A call with a temperature above 0 (or none, so the server samples) is served from and
    written to the cache only with `sampled: true`: the user asked for one answer reused.
    """

    mode: str = "off"
    ttl: float = 7 * 24 * 3600.0
    sampled: bool = False

    @property
    def reads(self) -> bool:
        return self.mode in ("on", "read_only")

    @property
    def writes(self) -> bool:
        return self.mode in ("on", "write_only")


def cache_settings(raw: Any) -> dict[str, Any]:
    """`cache: MODE` is short for `cache: {mode: MODE}`; either way, only what was written, to lay over lower levels."""
    if raw is None:
        return {}
    settings = dict(raw) if isinstance(raw, Mapping) else {"mode": raw}
    if isinstance(settings.get("mode"), bool):
        settings["mode"] = "on" if settings["mode"] else "off"  # YAML 1.1 reads a bare on/off as a boolean
    return settings


@dataclass(frozen=True)
class AzureDeployment:
    deployment: str
    model: str | None = None
    endpoint: str | None = None
    api_version: str | None = None


@dataclass(frozen=True)
class BackendConfig:
    """One backend block of `llm:`; `unavailable` says why it cannot be used, if it cannot.

    `declared` is False for a backend type the config only names (as default, fallback or a
    tool's backend) or never mentions: it has its vendor's defaults and no models of the user's.
    """

    name: str
    type: str
    base_url: str | None = None
    api_key: Secret | None = None
    api_key_env: str | None = None
    organization: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    endpoints: Mapping[str | None, tuple[Endpoint, ...]] = field(default_factory=dict)
    context_windows: Mapping[str, int] = field(default_factory=dict)
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    endpoint: str | None = None
    api_version: str | None = None
    deployment_name: str | None = None
    deployments: Mapping[str, AzureDeployment] = field(default_factory=dict)
    managed: ManagedSettings | None = None
    balancer: Mapping[str, object] = field(default_factory=dict)
    enabled: bool = True
    unavailable: str | None = None
    location: Location | None = None
    declared: bool = True
    budget: Budget | None = None
    rate_limit: RateLimit | None = None
    confirm_above: int | None = None
    cache: Mapping[str, Any] = field(default_factory=dict)
    pricing: Mapping[str, Price] = field(default_factory=dict)

    def endpoints_for(self, role: str | None) -> tuple[Endpoint, ...]:
        """Role-specific endpoints, else the ones for every role, else `base_url` alone."""
        if role is not None and role in self.endpoints:
            return self.endpoints[role]
        deployment = self.deployments.get(role or "")
        if deployment is not None and deployment.endpoint:
            return (Endpoint(deployment.endpoint),)
        if None in self.endpoints:
            return self.endpoints[None]
        url = self.endpoint or self.base_url
        return (Endpoint(url),) if url else ()


@dataclass(frozen=True)
class GlobalDefaults:
    default_backend: str | None = None
    default_embedding_backend: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 3
    cooldown: float = 30.0


@dataclass(frozen=True)
class ToolConfig:
    """A named LLM tool: which model it wants and the prompt it sends."""

    name: str
    type: str = "llm"
    description: str | None = None
    backend: str | None = None
    model: str | None = None
    model_key: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    system: str | None = None
    prompt: str | None = None
    location: Location | None = None
    display_name: str | None = None
    tags: tuple[str, ...] = ()
    tiers: Mapping[str, str] = field(default_factory=dict)
    input_schema: Mapping[str, object] | None = None
    output_schema: Mapping[str, object] | None = None
    cache: Mapping[str, Any] = field(default_factory=dict)
    task: str | None = None
    """A task type (`code_generation`) that `task_routing` may route; see `TaskRoute`."""


@dataclass(frozen=True)
class TaskRoute:
    """One entry of a `task_routing` list: a backend, and the model it serves the task with when given."""

    backend: str
    model: str | None = None

    @property
    def label(self) -> str:
        """How plans and fallback chains name the entry: `openai`, or `openai:gpt-4o` when it pins a model."""
        return f"{self.backend}:{self.model}" if self.model else self.backend


def unrouted_task(task: str, routing: Mapping[str, object]) -> str:
    """The warning for a task name `task_routing` lacks: not an error, as a task may be named before it is routed."""
    close = difflib.get_close_matches(task, list(routing), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"task {task!r} is not in task_routing, so it does not route{hint}"


@dataclass(frozen=True)
class SelectorConfig:
    enabled: bool = True
    weights: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(
            {"context_window": 30, "speed": 25, "cost": 15, "quality": 15, "specialization": 15}
        )
    )
    top_k: int = 3
    models: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeSettings:
    """`serve:`, what `dse serve` binds to and whom it lets in.

    `unset_keys` says which keys of `api_keys` have no value (a `${VAR}` not set, an empty
    string): `dse serve` refuses to start on them rather than open a gateway with fewer keys
    than the config says.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[Secret, ...] = ()
    unset_keys: tuple[str, ...] = ()
    directives: bool = False
    health_interval: float = 15.0
    max_body_bytes: int = 8 * 1024 * 1024
    drain_timeout: int = 30


@dataclass(frozen=True)
class Config:
    """The whole effective configuration, after defaults, expansion and validation."""

    path: str
    backend: str
    fallback_backends: tuple[str, ...]
    defaults: GlobalDefaults
    backends: Mapping[str, BackendConfig]
    tools: Mapping[str, ToolConfig]
    selector: SelectorConfig
    balancer: Mapping[str, object] = field(default_factory=dict)
    retry: RetrySettings = field(default_factory=RetrySettings)
    circuit_breaker: BreakerSettings = field(default_factory=BreakerSettings)
    warnings: tuple[str, ...] = ()
    implicit: Mapping[str, BackendConfig] = field(default_factory=dict)
    secrets: tuple[Secret, ...] = ()
    workflows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cluster: str | None = None
    """`executor.cluster`: where step bodies run unless `dse run --cluster` says otherwise."""
    budget: Budget | None = None
    pricing: Mapping[str, Price] = field(default_factory=dict)
    cache: Mapping[str, Any] = field(default_factory=dict)
    """`llm.cache`, as written: a backend's, a tool's and a step's `cache:` are laid over it."""
    confirm_above: int | None = None
    serve: ServeSettings = field(default_factory=ServeSettings)
    profile: str | None = None
    """The `profiles:` entry merged over the file (`--profile`, `$DSE_PROFILE`), if any."""
    task_routing: Mapping[str, tuple[TaskRoute, ...]] = field(default_factory=dict)
    """`task_routing:`, a task type to the backends that serve it, in order of preference."""

    def find_backend(self, name: str) -> BackendConfig | None:
        """A declared block, or a vendor's defaults when `name` is a backend type nobody declared.

        That is what lets a step say `model: openrouter:anthropic/claude-3.5-sonnet` without an
        `llm.openrouter:` block: the vendor's URL and standard key variable apply.
        """
        return self.backends.get(name) or self.implicit.get(name)

    @property
    def default_backend(self) -> str:
        """`global_defaults.default_backend` retargets every tool; `llm.backend` is the fallback."""
        return self.defaults.default_backend or self.backend
