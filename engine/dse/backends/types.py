"""The request and response types every adapter speaks, whatever its wire protocol.

The engine never sees a vendor SDK object: each adapter converts to these, so routing,
journaling and printing are written once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: The finish reason every adapter reports for an answer that stopped at its token limit
#: (OpenAI's and llama.cpp's `length`, Ollama's `done_reason: length`, Anthropic's `max_tokens`).
LENGTH = "length"


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may ask to call: its name, what it is for, and a JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for; `arguments` is JSON text, as OpenAI carries it (Anthropic's object is dumped)."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class Message:
    """One turn. An assistant turn may carry `tool_calls`; a `tool` turn answers one of them by `tool_call_id`."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """One chat call, already resolved to a model; the endpoint is chosen later by the balancer."""

    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    stop: tuple[str, ...] = ()
    json_output: JsonOutput | None = None
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None
    """`auto`, `none`, `required`, or the name of the one tool the model must call."""


@dataclass(frozen=True)
class ChatOptions:
    """What one caller asks of a call beyond its target's settings: a gateway client's own request fields.

    Temperature and max_tokens are the target's own (the cache reads them there); these are the
    rest. Unset fields leave the request as the target made it. Which fields a backend type
    honours is its `BackendType.request_fields`; a caller checks that before sending, so
    nothing a client asked for is dropped on the way.
    """

    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None

    def apply(self, request: ChatRequest) -> ChatRequest:
        changes = {name: value for name, value in vars(self).items() if value not in (None, ())}
        return replace(request, **changes) if changes else request


@dataclass(frozen=True)
class JsonOutput:
    """Constrain the answer to JSON: to `schema` where given, else to any JSON object.

    Each adapter maps it onto what its protocol has (OpenAI's `response_format`, Ollama's
    `format`, a forced Anthropic tool) where its backend type declares it can; elsewhere it is
    not sent, and the step's check and repair of the answer are all there is. `name` names the
    schema on the wire, so it is kept to `[A-Za-z0-9_-]{1,64}`.
    """

    schema: Mapping[str, Any] | None = None
    name: str = "answer"

    @classmethod
    def named(cls, name: str, schema: Mapping[str, Any] | None = None) -> JsonOutput:
        """One named after `name` (a step id), in the characters every protocol accepts for it."""
        return cls(schema, re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer")


@dataclass(frozen=True)
class Usage:
    """Tokens as the server counted them; `cached_tokens` is the part of the prompt read from the vendor's prompt cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class ChatResponse:
    """What came back, and from where: the journal and the progress view read these fields."""

    text: str
    model: str
    backend: str
    endpoint: str
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0
    finish_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One try the router made: where, what went wrong, how long it waited before the next.

    `queued` is how long it waited for its turn under the backend's `rate_limit` before it was
    sent; `cost` is what it cost in USD (None: the price is unknown).
    """

    backend: str
    endpoint: str
    error: str | None = None
    error_kind: str | None = None
    waited: float = 0.0
    queued: float = 0.0
    cost: float | None = 0.0


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed answer; the last chunk has `finish_reason` and, where the server tells, `usage`.

    `elapsed` is seconds since the request was sent, so whoever consumes the stream gets the
    time to first token and the latency without timing it a second time.
    """

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    elapsed: float = 0.0
    backend: str | None = None
    endpoint: str | None = None
    attempts: tuple[Attempt, ...] = ()
    cached: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    """On the closing chunk only: the calls the model asked for, each whole (their pieces are gathered by the adapter)."""


@dataclass(frozen=True)
class EmbedResponse:
    vectors: tuple[tuple[float, ...], ...]
    model: str
    backend: str
    endpoint: str
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0


@dataclass(frozen=True)
class Health:
    """What a server says about itself: reachable at all, ready for calls, or still loading a model."""

    endpoint: str
    reachable: bool
    ready: bool
    loading: bool = False
    latency: float | None = None
    detail: str = ""

    @property
    def state(self) -> str:
        """The probe's verdict in words, as `dse status` and `dse plan --check` print it."""
        return "ready" if self.ready else ("loading" if self.loading else ("reachable, not ready" if self.reachable else "unreachable"))


@dataclass(frozen=True)
class ModelEntry:
    """A model a server offers; `loaded` is True where the server says it is in memory now."""

    name: str
    loaded: bool | None = None
    size_bytes: int | None = None
    vram_bytes: int | None = None
    context_window: int | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A model a server holds in memory; `size_vram` below `size` means part of it runs on the CPU."""

    name: str
    size: int | None = None
    size_vram: int | None = None

    @property
    def offloaded(self) -> bool:
        """Partly on the CPU; a model with no VRAM at all runs on a CPU-only host, which is not a shortage."""
        return bool(self.size and self.size_vram and self.size_vram < self.size)


@dataclass(frozen=True)
class ServerReport:
    """What a local server says about itself at one moment, for the balancer; None means it did not say.

    Model names are every name the server answers to (Ollama takes `llama3` for
    `llama3:latest`), so a check is a plain membership test whatever the server type.
    """

    reachable: bool = True
    ready: bool = True
    detail: str = ""
    slots: int | None = None
    busy: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None
    models: frozenset[str] | None = None
    model_sizes: Mapping[str, int] = field(default_factory=dict)
    loaded: Mapping[str, LoadedModel] = field(default_factory=dict)
