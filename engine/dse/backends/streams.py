"""A streamed call gathered into one `ChatResponse`, for callers that stream but record whole answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from . import Backend


async def collect(backend: Backend, request: ChatRequest, endpoint: str) -> ChatResponse:
    """Stream, join the text, and keep what only a stream can tell: the time to first token.

    A stream that breaks off raises from the adapter, so a partial text is never returned.
    """
    parts: list[str] = []
    first: float | None = None
    finish: str | None = None
    usage: Usage | None = None
    elapsed = 0.0
    async for chunk in backend.stream(request, endpoint):
        if chunk.text:
            parts.append(chunk.text)
            first = chunk.elapsed if first is None else first
        finish = chunk.finish_reason or finish
        usage = chunk.usage or usage
        elapsed = chunk.elapsed
    return ChatResponse(
        text="".join(parts),
        model=request.model,
        backend=backend.name,
        endpoint=endpoint,
        usage=usage or Usage(),
        latency=elapsed,
        finish_reason=finish,
        time_to_first_token=first,
    )
