"""The OpenAI wire protocol, spoken through the official `openai` async SDK.

One adapter serves every OpenAI-compatible server; server types with native extras (Azure's
deployments, llama.cpp's `/health` and `/slots`, vLLM's `/metrics`) subclass it in modules of
their own. SDK retries are off: the router owns retries, and two layers retrying at once is how
one failure turns into nine requests. The SDK is imported lazily so that `dse --help` does not
pay for it.

Chat completions, the hot path of every workflow and of `dse serve`, go through the SDK's raw
`post`: it keeps the client's auth, base URL (Azure's deployment paths included), timeouts and
HTTP error classes, but skips the typed-params transform and the pydantic models, which cost
more per call than the rest of the engine. The answer is read here as the JSON it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx

from ..config.model import BackendConfig
from ._errors import ErrorContext
from ._fields import ToolCallParts, check_request, function_tools
from ._http import DEFAULT_TIMEOUT, HEALTH_TIMEOUT, fetch, gather_report, not_ready, probe_sdk
from .registry import JSON_OBJECT, JSON_SCHEMA, STRUCTURED, BackendType, backend_type
from .types import (
    ChatRequest,
    ChatResponse,
    EmbedResponse,
    Health,
    Message,
    ModelEntry,
    ServerReport,
    StreamChunk,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI, RequestOptions

# `tool_choice` values OpenAI takes as they are; any other value names the one tool to call.
_TOOL_MODES = frozenset({"auto", "none", "required"})


def api_base(url: str) -> str:
    """Servers such as llama.cpp and vLLM are given as `http://host:port`; the API lives under /v1."""
    path = urlparse(url).path.rstrip("/")
    return url.rstrip("/") + "/v1" if not path else url.rstrip("/")


class OpenAICompatBackend:
    """Chat, streaming, embeddings and model listing over the OpenAI API, on any endpoint of one backend."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind: BackendType = backend_type(config.type)
        self._clients: dict[str, AsyncOpenAI] = {}
        self._native: httpx.AsyncClient | None = None
        self._contexts: dict[tuple[str, str | None], ErrorContext] = {}

    def _client(self, endpoint: str) -> AsyncOpenAI:
        client = self._clients.get(endpoint)
        if client is None:
            client = self._make_client(endpoint, self._client_options())
            self._clients[endpoint] = client
        return client

    def connect(self, endpoint: str) -> None:
        self._client(endpoint)

    def _client_options(self) -> dict[str, Any]:
        return {
            "api_key": self.config.api_key.reveal() if self.config.api_key else "not-needed",
            "organization": self.config.organization,
            "max_retries": 0,
            "timeout": self.config.timeout or DEFAULT_TIMEOUT,
            "default_headers": dict(self.config.headers) or None,
        }

    def _make_client(self, endpoint: str, options: dict[str, Any]) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=api_base(endpoint), **options)

    def _query(self, model: str) -> dict[str, str]:
        """Query parameters of every request for `model`; Azure pins API versions per deployment here."""
        return {}

    def _missing_model_hint(self, endpoint: str, model: str) -> str:
        return f"check the model id {model!r}; GET {api_base(endpoint)}/models lists what the server has"

    def _context(self, endpoint: str, model: str | None = None) -> ErrorContext:
        """Built once per (endpoint, model): every call needs one, and the hint parses the URL."""
        context = self._contexts.get((endpoint, model))
        if context is None:
            hint = f"check the URL {endpoint}" if model is None else self._missing_model_hint(endpoint, model)
            context = self._contexts[(endpoint, model)] = ErrorContext.of(self.config, endpoint, hint)
        return context

    def _chat_body(self, request: ChatRequest, endpoint: str) -> dict[str, Any]:
        check_request(request, self.kind, self.name, endpoint)
        args: dict[str, Any] = {"model": request.model, "messages": [_message(m) for m in request.messages]}
        sampling = {"temperature": request.temperature, "max_tokens": request.max_tokens, "top_p": request.top_p, "seed": request.seed}
        args.update((name, value) for name, value in sampling.items() if value is not None)
        if request.stop:
            args["stop"] = list(request.stop)
        if request.tools:
            args["tools"] = function_tools(request.tools)
        if request.tool_choice is not None:
            args["tool_choice"] = _tool_choice(request.tool_choice)
        response_format = self._response_format(request)
        if response_format is not None:
            args["response_format"] = response_format
        return args

    def _response_format(self, request: ChatRequest) -> dict[str, Any] | None:
        """`response_format` for a JSON constraint, where this type's servers take one.

        llama.cpp and vLLM compile the schema into a grammar whatever `strict` says; OpenAI holds
        to it only in strict mode, which refuses (400) a schema that is not closed, so `strict`
        is sent only for schemas it takes. OpenAI also refuses `json_object` unless a message
        says "JSON": without that word the answer is left to the step's check and repair.
        """
        wanted, able = request.json_output, self.kind.structured_output
        if wanted is None:
            return None
        if wanted.schema is not None:
            if JSON_SCHEMA not in able:
                return None
            schema = {"name": wanted.name, "schema": dict(wanted.schema), "strict": strict_schema(wanted.schema)}
            return {"type": "json_schema", "json_schema": schema}
        if JSON_OBJECT in able and any("json" in m.content.lower() for m in request.messages):
            return {"type": "json_object"}
        return None

    async def _post_chat(self, request: ChatRequest, endpoint: str, *, stream: bool) -> httpx2.Response:
        """The raw answer to `/chat/completions`; the SDK raises its own errors for failed requests and error statuses."""
        import httpx2

        body = self._chat_body(request, endpoint)
        options: RequestOptions = {"params": self._query(request.model)}
        if request.timeout is not None:
            options["timeout"] = request.timeout
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        client = self._client(endpoint)
        return await client.post("/chat/completions", body=body, options=options, cast_to=httpx2.Response, stream=stream)

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse:
        """One non-streamed completion; vendor errors come back as `BackendError` subclasses."""
        import openai

        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        try:
            response = await self._post_chat(request, endpoint, stream=False)
        except openai.APIError as exc:
            raise context.from_sdk(exc, openai) from None
        completion = _object(response.content, context, "a completion")
        choice = _first_choice(completion)
        if choice is None:
            raise context.malformed("a completion without any choice")
        message = _mapping(choice.get("message"))
        return ChatResponse(
            text=_text(message.get("content")),
            model=_text(completion.get("model")) or request.model,
            backend=self.name,
            endpoint=endpoint,
            usage=_usage(completion.get("usage")) or Usage(),
            latency=time.perf_counter() - started,
            finish_reason=choice.get("finish_reason"),
            tool_calls=_tool_calls(message.get("tool_calls")),
        )

    async def stream(self, request: ChatRequest, endpoint: str) -> AsyncIterator[StreamChunk]:
        """Text deltas as they come, then one closing chunk with the finish reason, usage and whole tool calls.

        A body may end quietly, `[DONE]` or not; a stream without a finish reason was cut off,
        and is raised as such rather than passed on as a short answer. A dropped connection
        surfaces as the SDK transport's own exception, caught here as well.
        """
        import httpx2
        import openai

        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        received = 0
        finish: str | None = None
        usage: Usage | None = None
        calls = ToolCallParts()
        try:
            response = await self._post_chat(request, endpoint, stream=True)
            try:
                async for data in _sse_data(response.aiter_lines()):
                    received += 1
                    event = _object(data, context, "a stream event")
                    if event.get("error"):
                        raise context.from_status(None, event)
                    usage = _usage(event.get("usage")) or usage
                    choice = _first_choice(event)
                    if choice is None:
                        continue
                    finish = choice.get("finish_reason") or finish
                    delta = _mapping(choice.get("delta"))
                    _gather(calls, delta.get("tool_calls"))
                    if delta.get("content"):
                        yield StreamChunk(_text(delta["content"]), elapsed=time.perf_counter() - started)
            finally:
                await response.aclose()
        except openai.APIError as exc:
            raise context.from_sdk(exc, openai, received=received) from None
        except httpx2.HTTPError as exc:
            timed_out = isinstance(exc, httpx2.TimeoutException)
            raise context.transport(exc, timed_out=timed_out, received=received) from None
        if finish is None:
            raise context.cut_off(received)
        elapsed = time.perf_counter() - started
        yield StreamChunk("", finish_reason=finish, usage=usage, elapsed=elapsed, tool_calls=calls.calls())

    async def embed(self, texts: Sequence[str], model: str, endpoint: str) -> EmbedResponse:
        import openai

        context = self._context(endpoint, model)
        started = time.perf_counter()
        try:
            args: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "float"}
            if self.config.embedding_dimensions:
                args["dimensions"] = self.config.embedding_dimensions
            result = await self._client(endpoint).embeddings.create(**args, extra_query=self._query(model))
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
        """A GET on `/v1/models`, where 401 is a bad key, not a dead server."""
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
        """The OpenAI API never says; server types that do override this."""
        return None

    async def report(self, endpoint: str) -> ServerReport:
        """Which models the server offers (`/v1/models`): all a plain OpenAI-compatible server tells."""
        return await gather_report(self.kind.auth_headers(self.config), lambda client: self._models_report(client, endpoint))

    async def _models_report(self, client: httpx.AsyncClient, endpoint: str) -> ServerReport:
        status, listing = await fetch(client, f"{api_base(endpoint)}/models")
        if status >= 400:
            return not_ready(endpoint, status, self.config.api_key_env)
        data = listing.get("data") if isinstance(listing, dict) else None
        models = frozenset(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m) if isinstance(data, list) else None
        return ServerReport(models=models)

    def _native_client(self) -> httpx.AsyncClient:
        """Plain HTTP for a server's native paths, with the same auth the SDK sends."""
        if self._native is None:
            self._native = httpx.AsyncClient(
                timeout=self.config.timeout or DEFAULT_TIMEOUT, headers=self.kind.auth_headers(self.config)
            )
        return self._native

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._native is not None:
            await self._native.aclose()
            self._native = None


def _message(message: Message) -> dict[str, Any]:
    """One turn in OpenAI's shape; an assistant turn that only calls tools has no content (null)."""
    sent: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        sent["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
        ]
        sent["content"] = message.content or None
    if message.tool_call_id is not None:
        sent["tool_call_id"] = message.tool_call_id
    return sent


def _tool_choice(choice: str) -> str | dict[str, Any]:
    return choice if choice in _TOOL_MODES else {"type": "function", "function": {"name": choice}}


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event before `[DONE]`: all a chat stream carries.

    What follows `[DONE]` is read to the end of the body, so that the connection goes back to
    the pool instead of being closed under a half-read answer.
    """
    data: list[str] = []
    done = False
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            event, data = "\n".join(data), []
            done = done or event == "[DONE]"
            if not done:
                yield event


def _object(text: str | bytes, context: ErrorContext, what: str) -> Mapping[str, Any]:
    """A body that is not a JSON object is the server's fault, raised so the router can fail over, never a crash."""
    try:
        parsed = json.loads(text)
    except ValueError:
        raise context.malformed(f"{what} that is not JSON: {text[:80]!r}") from None
    if not isinstance(parsed, dict):
        raise context.malformed(f"{what} that is not an object: {text[:80]!r}")
    return parsed


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _first_choice(answer: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Every request asks for one choice; a usage-only stream event has none."""
    choices = answer.get("choices")
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None


def _tool_calls(calls: object) -> tuple[ToolCall, ...]:
    """Function calls; OpenAI's custom (free-text) tools are never offered, so none come back."""
    listed = calls if isinstance(calls, list) else []
    wanted = [c for c in listed if isinstance(c, dict) and c.get("type", "function") == "function"]
    functions = [(c, _mapping(c.get("function"))) for c in wanted]
    return tuple(ToolCall(_text(c.get("id")), _text(f.get("name")), _text(f.get("arguments")) or "{}") for c, f in functions)


def _gather(calls: ToolCallParts, pieces: object) -> None:
    """Tool call pieces of one stream delta, keyed by their `index` (by their place in the delta where a server omits it)."""
    for position, piece in enumerate(pieces if isinstance(pieces, list) else []):
        if isinstance(piece, dict):
            index, function = piece.get("index"), _mapping(piece.get("function"))
            key = index if isinstance(index, int) else position
            calls.add(key, id=piece.get("id"), name=function.get("name"), arguments=function.get("arguments"))


def _usage(usage: object) -> Usage | None:
    """Tokens, with the part of the prompt the vendor read from its prompt cache (billed at its cached price)."""
    if not isinstance(usage, dict):
        return None
    cached = _mapping(usage.get("prompt_tokens_details")).get("cached_tokens")
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _count(cached))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def strict_schema(schema: Mapping[str, Any]) -> bool:
    """Whether OpenAI's strict mode takes `schema`: an object at the top, and every object in it
    closed (`additionalProperties: false`) with each of its properties required."""
    return schema.get("type") == "object" and _closed(schema)


def _closed(schema: object) -> bool:
    if not isinstance(schema, Mapping):
        return True
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, Mapping):
        named = set(properties) if isinstance(properties, Mapping) else set()
        if schema.get("additionalProperties") is not False or set(schema.get("required") or ()) != named:
            return False
    nested: list[object] = [schema.get("items")]
    for key in ("properties", "$defs", "definitions"):
        group = schema.get(key)
        nested += list(group.values()) if isinstance(group, Mapping) else []
    for key in ("anyOf", "prefixItems"):
        group = schema.get(key)
        nested += list(group) if isinstance(group, list) else []
    return all(_closed(part) for part in nested)


TYPES = (
    BackendType(
        "openai",
        OpenAICompatBackend,
        "OpenAI",
        local=False,
        default_url="https://api.openai.com/v1",
        key_env="OPENAI_API_KEY",
        sdk="openai",
        directive_words=(r"open[ \t]?ai", r"open[ \t]?api", r"chat[ \t]?gpt", r"gpt"),
        model_pattern=r"gpt-|o1|o3",
        vendor=True,
        default_models={None: "gpt-4o", "triage": "gpt-4o-mini"},
        structured_output=STRUCTURED,
    ),
    BackendType(
        "openrouter",
        OpenAICompatBackend,
        "OpenAI-compatible",
        local=False,
        default_url="https://openrouter.ai/api/v1",
        key_env="OPENROUTER_API_KEY",
        sdk="openai",
        directive_words=(r"open[ \t]?router",),
        model_pattern=r"[\w.-]+/",
        default_models={None: "anthropic/claude-3.5-sonnet"},
    ),
    BackendType(
        "lmstudio",
        OpenAICompatBackend,
        "OpenAI-compatible",
        local=True,
        default_url="http://localhost:1234/v1",
        sdk="openai",
        start_hint="start the local server in LM Studio (Developer tab)",
        directive_words=(r"lm[ \t-]?studio",),
        structured_output=frozenset({JSON_SCHEMA}),  # LM Studio refuses `json_object`
    ),
    BackendType(
        "tabbyapi",
        OpenAICompatBackend,
        "OpenAI-compatible",
        local=True,
        default_url="http://localhost:5000/v1",
        sdk="openai",
        start_hint="start TabbyAPI (`./start.sh`)",
        directive_words=(r"tabby[ \t]?api", r"tabby"),
    ),
    BackendType(
        "foundry",
        OpenAICompatBackend,
        "OpenAI-compatible",
        local=True,
        default_url="http://localhost:5273/v1",
        sdk="openai",
        start_hint="start Foundry Local (`foundry service start`)",
        directive_words=(r"foundry(?:[ \t]+local)?",),
    ),
)
