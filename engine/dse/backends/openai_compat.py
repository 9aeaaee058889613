"""The OpenAI wire protocol, spoken through the official `openai` async SDK.

One adapter serves every OpenAI-compatible server (OpenAI, Azure OpenAI, LM Studio, vLLM,
llama.cpp, TabbyAPI, Foundry Local, OpenRouter). SDK retries are off: the router owns retries,
and two layers retrying at once is how one failure turns into nine requests. The SDK is
imported lazily so that `dse --help` does not pay for it.

llama.cpp also answers native paths the OpenAI API lacks (`/health`, `/props`, `/slots`): they
say whether the model is still loading and how much context each slot has, so for that type
they are asked directly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx

from ..config.model import BackendConfig
from ._errors import ErrorContext
from ._http import DEFAULT_TIMEOUT, HEALTH_TIMEOUT, probe, probe_sdk, response_body, server_root
from .types import ChatRequest, ChatResponse, EmbedResponse, Health, ModelEntry, StreamChunk, Usage

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types import CompletionUsage

# A GA version that has chat, embeddings, models and `stream_options`; configs may pin another.
_AZURE_API_VERSION = "2024-10-21"


def api_base(url: str) -> str:
    """Servers such as llama.cpp and vLLM are given as `http://host:port`; the API lives under /v1."""
    path = urlparse(url).path.rstrip("/")
    return url.rstrip("/") + "/v1" if not path else url.rstrip("/")


class OpenAICompatBackend:
    """Chat, streaming, embeddings and model listing over the OpenAI API, on any endpoint of one backend."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self._clients: dict[str, AsyncOpenAI] = {}
        self._native: httpx.AsyncClient | None = None

    @property
    def _llamacpp(self) -> bool:
        return self.config.type == "llamacpp"

    def _client(self, endpoint: str) -> AsyncOpenAI:
        client = self._clients.get(endpoint)
        if client is None:
            options: dict[str, Any] = {
                "api_key": self.config.api_key.reveal() if self.config.api_key else "not-needed",
                "organization": self.config.organization,
                "max_retries": 0,
                "timeout": self.config.timeout or DEFAULT_TIMEOUT,
                "default_headers": dict(self.config.headers) or None,
            }
            if self.config.type == "azure":
                from openai import AsyncAzureOpenAI

                client = AsyncAzureOpenAI(
                    azure_endpoint=endpoint, api_version=self.config.api_version or _AZURE_API_VERSION, **options
                )
            else:
                from openai import AsyncOpenAI

                client = AsyncOpenAI(base_url=api_base(endpoint), **options)
            self._clients[endpoint] = client
        return client

    def _model_args(self, model: str) -> dict[str, Any]:
        """On Azure the model is a deployment, which may pin its own API version over the client's."""
        pinned = next((d.api_version for d in self.config.deployments.values() if d.deployment == model), None)
        if self.config.type == "azure" and pinned:
            return {"model": model, "extra_query": {"api-version": pinned}}
        return {"model": model}

    def _context(self, endpoint: str, model: str | None = None) -> ErrorContext:
        if model is None:
            hint = f"check the URL {endpoint}"
        elif self.config.type == "azure":
            hint = f"check the deployment name {model!r} (not the model name)"
        else:
            hint = f"check the model id {model!r}; GET {api_base(endpoint)}/models lists what the server has"
        return ErrorContext.of(self.config, endpoint, hint)

    def _chat_args(self, request: ChatRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            **self._model_args(request.model),
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.temperature is not None:
            args["temperature"] = request.temperature
        if request.max_tokens is not None:
            args["max_tokens"] = request.max_tokens
        if request.stop:
            args["stop"] = list(request.stop)
        if request.timeout is not None:
            args["timeout"] = request.timeout
        return args

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse:
        """One non-streamed completion; vendor errors come back as `BackendError` subclasses."""
        import openai

        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        try:
            completion = await self._client(endpoint).chat.completions.create(**self._chat_args(request))
        except openai.APIError as exc:
            raise context.from_sdk(exc, openai) from None
        if not completion.choices:
            raise context.malformed("a completion without any choice")
        choice = completion.choices[0]
        return ChatResponse(
            text=choice.message.content or "",
            model=completion.model or request.model,
            backend=self.name,
            endpoint=endpoint,
            usage=_usage(completion.usage) or Usage(),
            latency=time.perf_counter() - started,
            finish_reason=choice.finish_reason,
        )

    async def stream(self, request: ChatRequest, endpoint: str) -> AsyncIterator[StreamChunk]:
        """Text deltas as they come, then one closing chunk with the finish reason and usage.

        The SDK ends quietly when the body ends, `[DONE]` or not; a stream without a finish
        reason was cut off, and is raised as such rather than passed on as a short answer.
        """
        import openai

        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        received = 0
        finish: str | None = None
        usage: Usage | None = None
        try:
            events = await self._client(endpoint).chat.completions.create(
                **self._chat_args(request), stream=True, stream_options={"include_usage": True}
            )
            async with events:
                async for event in events:
                    received += 1
                    usage = _usage(event.usage) or usage
                    if not event.choices:
                        continue
                    choice = event.choices[0]
                    finish = choice.finish_reason or finish
                    if choice.delta is not None and choice.delta.content:
                        yield StreamChunk(choice.delta.content, elapsed=time.perf_counter() - started)
        except openai.APIError as exc:
            raise context.from_sdk(exc, openai, received=received) from None
        if finish is None:
            raise context.cut_off(received)
        yield StreamChunk("", finish_reason=finish, usage=usage, elapsed=time.perf_counter() - started)

    async def embed(self, texts: Sequence[str], model: str, endpoint: str) -> EmbedResponse:
        import openai

        context = self._context(endpoint, model)
        started = time.perf_counter()
        try:
            result = await self._client(endpoint).embeddings.create(
                **self._model_args(model), input=list(texts), encoding_format="float"
            )
        except openai.APIError as exc:
            raise context.from_sdk(exc, openai) from None
        if len(result.data) != len(texts):
            raise context.malformed(f"{len(result.data)} vectors for {len(texts)} texts")
        ordered = sorted(result.data, key=lambda item: item.index)
        return EmbedResponse(
            vectors=tuple(tuple(item.embedding) for item in ordered),
            model=result.model or model,
            backend=self.name,
            endpoint=endpoint,
            usage=Usage(prompt_tokens=result.usage.prompt_tokens) if result.usage else Usage(),
            latency=time.perf_counter() - started,
        )

    async def health(self, endpoint: str) -> Health:
        """llama.cpp: `/health` (503 while loading). Others: `/v1/models`, where 401 is a bad key, not a dead server."""
        if self._llamacpp:
            return await probe(self._native_client(), endpoint, f"{server_root(endpoint)}/health", loading_on_503=True)
        import openai

        models = self._client(endpoint).models.list(timeout=HEALTH_TIMEOUT)
        return await probe_sdk(endpoint, models, openai, key_env=self.config.api_key_env)

    async def list_models(self, endpoint: str) -> list[ModelEntry]:
        """`/v1/models`; llama.cpp adds a `meta` block with the context size and file size, which is kept."""
        import openai

        try:
            page = await self._client(endpoint).models.list()
        except openai.APIError as exc:
            raise self._context(endpoint).from_sdk(exc, openai) from None
        entries = []
        for model in page.data:
            meta = (model.model_extra or {}).get("meta") or {}
            entries.append(ModelEntry(name=model.id, size_bytes=meta.get("size"), context_window=meta.get("n_ctx")))
        return entries

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        """llama.cpp's per-slot context (`/props`, else `/slots`); the OpenAI API itself never says."""
        if not self._llamacpp:
            return None
        context = self._context(endpoint, model)
        root = server_root(endpoint)
        props = await self._native_get(f"{root}/props", context)
        if isinstance(props, dict):
            settings = props.get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx") or props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
        slots = await self._native_get(f"{root}/slots", context)
        if isinstance(slots, list) and slots and isinstance(slots[0], dict) and isinstance(slots[0].get("n_ctx"), int):
            return int(slots[0]["n_ctx"])
        return None

    def _native_client(self) -> httpx.AsyncClient:
        if self._native is None:
            key = self.config.api_key
            self._native = httpx.AsyncClient(
                timeout=self.config.timeout or DEFAULT_TIMEOUT,
                headers={"Authorization": f"Bearer {key.reveal()}"} if key else None,
            )
        return self._native

    async def _native_get(self, url: str, context: ErrorContext) -> object:
        """A llama.cpp native path; None when this server does not have it (404, or disabled: 501)."""
        try:
            response = await self._native_client().get(url)
        except httpx.HTTPError as exc:
            raise context.transport(exc, timed_out=isinstance(exc, httpx.TimeoutException)) from None
        if response.status_code in (404, 501):
            return None
        if response.status_code >= 400:
            raise context.from_status(response.status_code, response_body(response), response.headers)
        return response_body(response)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._native is not None:
            await self._native.aclose()
            self._native = None


def _usage(usage: CompletionUsage | None) -> Usage | None:
    return Usage(usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
