"""The three wire protocols as the shared protocol tests see them: one row per adapter.

Failures (timeouts, cut streams, rate limits, bad keys...) must look the same to the router
whichever protocol a backend speaks, so `test_failures_every_protocol.py` runs one test per idea
over these rows. A row says only how its protocol differs: how to build the adapter, where chat
is posted, how its servers answer, stream and fail, and its quirks (Anthropic's 529). What only
one protocol has (body shapes, Azure deployments, llama.cpp's native paths) stays in its own file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

# The SDKs are imported here, once, so that the timing bounds of the shared tests measure the
# adapters and never an SDK's first import (over a second for `anthropic`): the adapters
# import them lazily, inside the first call.
import anthropic  # noqa: F401
import openai  # noqa: F401
from stubs import (
    Reply,
    anthropic_error,
    anthropic_stream,
    ndjson,
    ollama_error,
    ollama_stream,
    openai_error,
    openai_stream,
    sse,
)

from dse.backends import AnthropicBackend, ChatRequest, Message, OllamaBackend, OpenAICompatBackend, make_backend
from dse.config.model import BackendConfig, Secret


Adapter = OpenAICompatBackend | AnthropicBackend | OllamaBackend


class MakeAdapter(Protocol):
    """Builds a protocol's adapter; `key=None` configures none (Ollama's usual setup)."""

    def __call__(self, *, timeout: float = ..., key: str | None = ...) -> Adapter: ...


# (pieces, usage, finish reason, complete, {cut_after, chunk_delay}) -> the protocol's stream.
StreamBuilder = Callable[[Sequence[str], tuple[int, int], str, bool, Mapping[str, Any]], Reply]
# (status, message, the body's error type, headers) -> the protocol's HTTP error answer.
ErrorBuilder = Callable[[int, str, str, Mapping[str, str]], Reply]
# (message, the event's error type) -> a 200 stream carrying an error event.
StreamErrorBuilder = Callable[[str, str], Reply]


@dataclass(frozen=True)
class Wire:
    """What the shared failure tests need to know about one wire protocol."""

    name: str
    make: MakeAdapter
    request: ChatRequest
    chat_path: str
    key: str
    # Where the key may travel: (header, what precedes the key there).
    key_headers: tuple[tuple[str, str], ...]
    build_stream: StreamBuilder
    # Events a stream sends before its first text, so a cut "after the first piece" lands right.
    lead_events: int
    # Finish reasons the protocol's servers send: a normal end first, then a cut at the token cap.
    finishes: tuple[str, ...]
    # Fields a stream request must carry, compared as JSON (so `true` is not `1`).
    stream_sent: Mapping[str, object]
    build_error: ErrorBuilder
    build_stream_error: StreamErrorBuilder
    missing_model_message: str
    missing_model_hint: str
    # The error `type` the protocol's servers put in a body, by status; 400 and 500 stand for their ranges.
    error_types: Mapping[int, str] = field(default_factory=dict)
    # The prompt-too-long answers the protocol's servers give on chat (Ollama truncates instead).
    too_long: tuple[Reply, ...] = ()
    # A busy-server status handled like 429, over HTTP and as a stream event (Anthropic's 529).
    overloaded: int | None = None

    @property
    def backend_name(self) -> str:
        """The name every error must carry: the adapter's own, so it is set in one place."""
        return self.make().name

    @property
    def key_env(self) -> str:
        """The variable a bad-key error must name: the one the adapter is configured with."""
        return str(self.make().config.api_key_env)

    @property
    def rate_limit_statuses(self) -> tuple[int, ...]:
        return (429,) if self.overloaded is None else (429, self.overloaded)

    def error_type(self, status: int) -> str:
        return self.error_types.get(status) or self.error_types.get(500 if status >= 500 else 400, "")

    def stream(
        self,
        pieces: Sequence[str],
        *,
        usage: tuple[int, int] = (7, 3),
        finish: str | None = None,
        complete: bool = True,
        cut_after: int | None = None,
        chunk_delay: float = 0.0,
    ) -> Reply:
        """A streamed answer; `complete=False` leaves out the final event(s), `cut_after` drops the connection."""
        timing = {"cut_after": cut_after, "chunk_delay": chunk_delay}
        return self.build_stream(pieces, usage, finish or self.finishes[0], complete, timing)

    def error(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        """An HTTP error answer as the protocol's servers send it for `status`."""
        return self.build_error(status, message, self.error_type(status), dict(headers or {}))

    def stream_error(self, status: int, message: str) -> Reply:
        """A 200 stream carrying an error event that stands for `status`."""
        return self.build_stream_error(message, self.error_type(status))


OPENAI_KEY = "sk-test-NEVER-SHOW-4f2a9c"
ANTHROPIC_KEY = "sk-ant-test-NEVER-SHOW-77e1"
OLLAMA_KEY = "ollama-key-NEVER-SHOW-12ab"


def openai_backend(
    kind: str = "openai", timeout: float = 5.0, key: str | None = OPENAI_KEY, **extra: object
) -> OpenAICompatBackend:
    """An OpenAI-protocol adapter of any backend type; `extra` is more of the backend block."""
    settings: dict[str, object] = {"api_key_env": "OPENAI_API_KEY", "timeout": timeout, **extra}
    config = BackendConfig(name="b", type=kind, api_key=Secret(key) if key else None, **settings)  # type: ignore[arg-type]
    adapter = make_backend(config)
    assert isinstance(adapter, OpenAICompatBackend), f"{kind} speaks the OpenAI protocol"
    return adapter


def anthropic_backend(timeout: float = 5.0, key: str | None = ANTHROPIC_KEY) -> AnthropicBackend:
    secret = Secret(key) if key else None
    config = BackendConfig(name="claude", type="anthropic", api_key=secret, api_key_env="ANTHROPIC_API_KEY", timeout=timeout)
    return AnthropicBackend(config)


def ollama_backend(timeout: float = 5.0, key: str | None = None) -> OllamaBackend:
    """Keyless by default, as a local Ollama runs; a key is for one behind an authenticating proxy."""
    secret = Secret(key) if key else None
    config = BackendConfig(name="local", type="ollama", timeout=timeout, api_key=secret, api_key_env="OLLAMA_API_KEY")
    return OllamaBackend(config)


def _system_then_user(model: str, temperature: float, max_tokens: int | None = None) -> ChatRequest:
    messages = (Message("system", "Be brief."), Message("user", "Say hello"))
    return ChatRequest(model=model, messages=messages, temperature=temperature, max_tokens=max_tokens)


OPENAI = Wire(
    name="openai",
    make=openai_backend,
    request=_system_then_user("gpt-test", 0.2, max_tokens=16),
    chat_path="/v1/chat/completions",
    key=OPENAI_KEY,
    key_headers=(("authorization", "Bearer "),),
    # Incomplete: no finish chunk, no usage chunk, no `[DONE]`.
    build_stream=lambda pieces, usage, finish, complete, timing: openai_stream(
        pieces, usage=usage if complete else None, finish=finish if complete else None, done=complete, **timing
    ),
    lead_events=1,  # the role chunk
    finishes=("stop", "length"),
    stream_sent={"stream": True, "stream_options": {"include_usage": True}},
    build_error=lambda status, message, kind, headers: openai_error(status, message, kind=kind, headers=headers),
    build_stream_error=lambda message, kind: sse({"error": {"message": message, "type": kind}}),
    missing_model_message="The model `gpt-test` does not exist",
    missing_model_hint="check the model id 'gpt-test'",
    error_types={
        400: "invalid_request_error",
        401: "invalid_api_key",
        403: "invalid_api_key",
        404: "model_not_found",
        429: "rate_limit_error",
        500: "server_error",
    },
    too_long=tuple(
        openai_error(400, message, kind="exceed_context_size_error")
        for message in (
            "request (3031 tokens) exceeds the available context size (2048 tokens), try increasing it",
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        )
    ),
)

ANTHROPIC = Wire(
    name="anthropic",
    make=anthropic_backend,
    request=_system_then_user("claude-test", 0.3),
    chat_path="/v1/messages",
    key=ANTHROPIC_KEY,
    key_headers=(("x-api-key", ""), ("authorization", "Bearer ")),  # SDK versions differ
    # Incomplete: no content_block_stop, message_delta or message_stop.
    build_stream=lambda pieces, usage, finish, complete, timing: anthropic_stream(
        pieces, usage=usage, stop=finish, complete=complete, **timing
    ),
    lead_events=3,  # message_start, content_block_start, ping
    finishes=("end_turn", "max_tokens"),
    stream_sent={"stream": True, "system": "Be brief."},
    build_error=lambda status, message, kind, headers: anthropic_error(status, message, kind=kind, headers=headers),
    build_stream_error=lambda message, kind: sse(("error", {"type": "error", "error": {"type": kind, "message": message}})),
    missing_model_message="model: claude-test",
    missing_model_hint="check the model id 'claude-test'",
    error_types={
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    },
    too_long=(anthropic_error(400, "prompt is too long: 208310 tokens > 200000 maximum"),),
    overloaded=529,
)

_OLLAMA_TEXT_LINE = {"model": "llama3", "message": {"role": "assistant", "content": "Hel"}, "done": False}

OLLAMA = Wire(
    name="ollama",
    make=ollama_backend,
    request=_system_then_user("llama3", 0.1, max_tokens=32),
    chat_path="/api/chat",
    key=OLLAMA_KEY,
    key_headers=(("authorization", "Bearer "),),
    # Incomplete: no `done: true` line.
    build_stream=lambda pieces, usage, finish, complete, timing: ollama_stream(
        pieces, usage=usage, done_reason=finish, done=complete, **timing
    ),
    lead_events=0,
    finishes=("stop", "length"),
    stream_sent={"stream": True},
    # Ollama's error bodies and error lines carry no type: `{"error": message}`, after some text mid-stream.
    build_error=lambda status, message, kind, headers: replace(ollama_error(status, message), headers=headers),
    build_stream_error=lambda message, kind: ndjson(_OLLAMA_TEXT_LINE, {"error": message}),
    missing_model_message='model "llama3" not found, try pulling it first',
    missing_model_hint="ollama pull llama3",
)

WIRES = (OPENAI, ANTHROPIC, OLLAMA)
