"""Wire-protocol adapters: each turns a `ChatRequest` into a `ChatResponse` over HTTP."""

from __future__ import annotations

from typing import Protocol

from ..config.model import BackendConfig
from ..errors import BackendUnavailable
from .openai_compat import OpenAICompatBackend
from .types import ChatRequest, ChatResponse, Message, Usage

_OPENAI_COMPATIBLE = frozenset({"openai", "lmstudio", "vllm", "llamacpp", "tabbyapi", "foundry", "openrouter"})


class Backend(Protocol):
    """What the router needs from an adapter: a call on a given endpoint, and a way to close."""

    name: str

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse: ...

    async def aclose(self) -> None: ...


def make_backend(config: BackendConfig) -> Backend:
    """The adapter for a backend block's wire protocol."""
    if config.type in _OPENAI_COMPATIBLE:
        return OpenAICompatBackend(config)
    raise BackendUnavailable(
        f"backend {config.name!r}: the {config.type} protocol adapter is not built yet",
        backend=config.name,
        hint="point this step at an OpenAI-compatible backend (openai, llamacpp, vllm, lmstudio, ...)",
    )


__all__ = ["Backend", "ChatRequest", "ChatResponse", "Message", "Usage", "make_backend"]
