"""Wire-protocol adapters: each speaks one protocol and answers in the engine's own types.

Each protocol module declares the backend types it serves (`registry.BackendType`): Anthropic's
Messages API, Ollama's native API, and the OpenAI API with its server-specific variants (Azure,
llama.cpp, vLLM). The router sees only `Backend`; the balancer asks a `ServerReporter`.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol, runtime_checkable

from ..config.model import BackendConfig
from .anthropic import AnthropicBackend
from .azure import AzureBackend
from .llamacpp import LlamaCppBackend
from .ollama import OllamaBackend
from .openai_compat import OpenAICompatBackend
from .registry import BackendType, backend_type, backend_types, is_backend_type, type_names
from .types import (
    Attempt,
    ChatOptions,
    ChatRequest,
    ChatResponse,
    EmbedResponse,
    Health,
    LoadedModel,
    Message,
    ModelEntry,
    ServerReport,
    StreamChunk,
    ToolCall,
    ToolSpec,
    Usage,
)
from .tgi import TgiBackend
from .vllm import VllmBackend


class Backend(Protocol):
    """What the router needs from an adapter; every failure is raised as a `BackendError` subclass.

    `stream` is an async generator: text chunks, then one closing chunk with empty text that
    carries `finish_reason` and, where the server reports it, `usage`. A stream that breaks off
    before the server's final event raises `BackendUnavailable` instead of ending quietly.
    """

    name: str

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse: ...

    def stream(self, request: ChatRequest, endpoint: str) -> AsyncIterator[StreamChunk]: ...

    async def embed(self, texts: Sequence[str], model: str, endpoint: str) -> EmbedResponse: ...

    async def health(self, endpoint: str) -> Health:
        """Never raises: an unreachable server is `Health(reachable=False, detail=...)`."""
        ...

    async def list_models(self, endpoint: str) -> list[ModelEntry]: ...

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        """The context window the server itself reports for `model`; None when it does not say."""
        ...

    def connect(self, endpoint: str) -> None:
        """Build what calls to `endpoint` use (an SDK client, its TLS context) now, off the event loop.

        Built lazily instead, the first call of a run would stall every other call for the
        30-80 ms an SDK client takes to make.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ServerReporter(Protocol):
    """An adapter for servers that say how loaded they are: what the balancer probes."""

    async def report(self, endpoint: str) -> ServerReport:
        """Never raises: an unreachable server is a report saying so, and what it does not say stays None."""
        ...


def preload_sdks(types: Iterable[str]) -> None:
    """Import the SDKs these backend types need now, so the first call does not pay for it."""
    for module in sorted({sdk for name in types if (sdk := backend_type(name).sdk)}):
        importlib.import_module(module)


def make_backend(config: BackendConfig) -> Backend:
    """The adapter its type declares for a backend block."""
    return backend_type(config.type).adapter(config)


__all__ = [
    "AnthropicBackend",
    "Attempt",
    "AzureBackend",
    "Backend",
    "BackendType",
    "ChatOptions",
    "ChatRequest",
    "ChatResponse",
    "EmbedResponse",
    "Health",
    "LlamaCppBackend",
    "LoadedModel",
    "Message",
    "ModelEntry",
    "OllamaBackend",
    "OpenAICompatBackend",
    "ServerReport",
    "ServerReporter",
    "StreamChunk",
    "TgiBackend",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "VllmBackend",
    "backend_type",
    "backend_types",
    "is_backend_type",
    "make_backend",
    "preload_sdks",
    "type_names",
]
