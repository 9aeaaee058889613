"""Wire-protocol adapters: each speaks one protocol and answers in the engine's own types.

Three adapters cover every backend type: Anthropic's Messages API, Ollama's native API, and
the OpenAI API for everything else (Azure included). The router sees only `Backend`.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Protocol

from ..config.model import BackendConfig
from .anthropic import AnthropicBackend
from .streams import collect
from .ollama import OllamaBackend
from .openai_compat import OpenAICompatBackend
from .types import ChatRequest, ChatResponse, EmbedResponse, Health, Message, ModelEntry, StreamChunk, Usage


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

    async def aclose(self) -> None: ...


_ADAPTERS: dict[str, Callable[[BackendConfig], Backend]] = {
    "anthropic": AnthropicBackend,
    "ollama": OllamaBackend,
}


# The SDK each adapter imports on first use; Ollama's adapter speaks plain httpx.
_SDKS: dict[str, str | None] = {"anthropic": "anthropic", "ollama": None}


def preload_sdks(types: Iterable[str]) -> None:
    """Import the SDKs these backend types need now, so the first call does not pay for it."""
    for module in sorted({_SDKS.get(t, "openai") for t in types} - {None}):  # type: ignore[type-var]
        importlib.import_module(module)


def make_backend(config: BackendConfig) -> Backend:
    """The adapter for a backend block's wire protocol; every other type speaks OpenAI's."""
    return _ADAPTERS.get(config.type, OpenAICompatBackend)(config)


__all__ = [
    "AnthropicBackend",
    "Backend",
    "ChatRequest",
    "ChatResponse",
    "EmbedResponse",
    "Health",
    "Message",
    "ModelEntry",
    "OllamaBackend",
    "OpenAICompatBackend",
    "StreamChunk",
    "Usage",
    "collect",
    "make_backend",
    "preload_sdks",
]
