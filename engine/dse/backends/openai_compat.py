"""The OpenAI wire protocol, spoken through the official `openai` async SDK.

One adapter serves every OpenAI-compatible server (OpenAI, LM Studio, vLLM, llama.cpp,
TabbyAPI, Foundry Local, OpenRouter). SDK retries are off: the router owns retries, and two
layers retrying at once is how one failure turns into nine requests. The SDK is imported
lazily so that `dse --help` does not pay for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..config.model import BackendConfig
from ..errors import (
    AuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    RateLimited,
)
from .types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from openai import AsyncOpenAI

_DEFAULT_TIMEOUT = 120.0


def api_base(url: str) -> str:
    """Servers such as llama.cpp and vLLM are given as `http://host:port`; the API lives under /v1."""
    path = urlparse(url).path.rstrip("/")
    return url.rstrip("/") + "/v1" if not path else url.rstrip("/")


class OpenAICompatBackend:
    """Chat over `/v1/chat/completions` on any endpoint of one backend."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self._clients: dict[str, AsyncOpenAI] = {}

    def _client(self, endpoint: str) -> AsyncOpenAI:
        client = self._clients.get(endpoint)
        if client is None:
            from openai import AsyncOpenAI

            key = self.config.api_key.reveal() if self.config.api_key else "not-needed"
            client = AsyncOpenAI(
                base_url=api_base(endpoint),
                api_key=key,
                organization=self.config.organization,
                max_retries=0,
                timeout=self.config.timeout or _DEFAULT_TIMEOUT,
                default_headers=dict(self.config.headers) or None,
            )
            self._clients[endpoint] = client
        return client

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse:
        """One non-streamed completion; vendor errors come back as `BackendError` subclasses."""
        import openai

        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.timeout is not None:
            kwargs["timeout"] = request.timeout
        started = time.perf_counter()
        try:
            completion = await self._client(endpoint).chat.completions.create(**kwargs)
        except openai.APIError as exc:
            raise self._map_error(exc, endpoint) from None
        latency = time.perf_counter() - started
        if not completion.choices:
            raise BackendUnavailable("the server returned no choices", backend=self.name, endpoint=endpoint)
        choice = completion.choices[0]
        usage = completion.usage
        return ChatResponse(
            text=choice.message.content or "",
            model=completion.model or request.model,
            backend=self.name,
            endpoint=endpoint,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            latency=latency,
            finish_reason=choice.finish_reason,
        )

    def _map_error(self, exc: Exception, endpoint: str) -> BackendError:
        """Translate the SDK's exceptions; the message never includes the key."""
        import openai

        where = {"backend": self.name, "endpoint": endpoint}
        if isinstance(exc, openai.APITimeoutError):
            return BackendTimeout("no answer before the timeout", **where)
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnavailable(f"cannot connect to {endpoint}", **where)
        status = getattr(exc, "status_code", None)
        message = _server_message(exc)
        if isinstance(exc, openai.RateLimitError):
            return RateLimited(f"rate limited: {message}", retry_after=_retry_after(exc), **where)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            env = self.config.api_key_env or "the api_key setting"
            return AuthError(f"authentication failed ({status})", hint=f"check {env}", **where)
        if isinstance(exc, openai.NotFoundError):
            return ModelNotFound(f"not found: {message}", **where)
        if isinstance(exc, openai.BadRequestError):
            if "context" in message.lower() and ("length" in message.lower() or "exceed" in message.lower()):
                return ContextTooLong(message, **where)
            return BadRequest(message, **where)
        if status is not None and status >= 500:
            return BackendUnavailable(f"server error {status}: {message}", **where)
        return BackendError(f"{type(exc).__name__}: {message}", **where)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _server_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", exc))


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
