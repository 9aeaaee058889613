"""Ollama's native API over `httpx`: `/api/chat`, `/api/embed`, and what the server knows about its models.

The native API rather than Ollama's OpenAI shim, because only it tells which models are loaded
and how much VRAM they hold (`/api/ps`), and the context window a model really runs with
(`/api/show`). Streams are newline-delimited JSON ending in a `done: true` line. Ollama calls
tools, but has no `tool_choice` (the model always decides) and gives calls no ids where it is
older than the caller: ids `call_<n>` are made up for them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from ..config.model import BackendConfig
from ..errors import BadRequest
from ._errors import ErrorContext
from ._fields import call_arguments, check_request, function_tools
from ._http import DEFAULT_TIMEOUT, fetch, gather_report, not_ready, probe, response_body, server_root
from .registry import JSON_OBJECT, JSON_SCHEMA, STRUCTURED, BackendType, backend_type
from .types import (
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
    Usage,
)


class OllamaBackend:
    """Every endpoint of one Ollama backend, through one `httpx` client."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind: BackendType = backend_type(config.type)
        self._http: httpx.AsyncClient | None = None

    def connect(self, endpoint: str) -> None:
        """One client serves every endpoint."""
        self._client

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(headers=self.kind.auth_headers(self.config))
        return self._http

    def _timeout(self, request_timeout: float | None = None) -> float:
        """A step's own timeout, else the backend's: a first call may wait for Ollama to load the model."""
        return request_timeout or self.config.timeout or DEFAULT_TIMEOUT

    def _context(self, endpoint: str, model: str | None = None) -> ErrorContext:
        hint = f"ollama pull {model}" if model else f"check the URL {endpoint}"
        return ErrorContext.of(self.config, endpoint, hint)

    async def _call(
        self,
        method: str,
        endpoint: str,
        path: str,
        context: ErrorContext,
        payload: object = None,
        timeout: float | None = None,
    ) -> Any:
        """One request whose whole answer is JSON; every failure comes back as a `BackendError`."""
        url = f"{server_root(endpoint)}{path}"
        try:
            response = await self._client.request(method, url, json=payload, timeout=self._timeout(timeout))
        except httpx.HTTPError as exc:
            raise context.transport(exc, timed_out=isinstance(exc, httpx.TimeoutException)) from None
        if response.status_code >= 400:
            raise context.from_status(response.status_code, response_body(response), response.headers)
        try:
            return response.json()
        except ValueError:
            raise context.malformed(f"{path} answered with something that is not JSON") from None

    def _chat_payload(self, request: ChatRequest, stream: bool, endpoint: str) -> dict[str, Any]:
        check_request(request, self.kind, self.name, endpoint)
        if request.tool_choice not in (None, "auto"):
            raise BadRequest(
                f"backend {self.name!r} (type ollama) cannot honour tool_choice {request.tool_choice!r}: Ollama lets the model decide",
                backend=self.name,
                endpoint=endpoint,
                hint="leave tool_choice out or set it to auto",
            )
        sampling = {
            "temperature": request.temperature,
            "num_predict": request.max_tokens,
            "top_p": request.top_p,
            "seed": request.seed,
            "stop": list(request.stop) or None,
        }
        options = {name: value for name, value in sampling.items() if value is not None}
        payload: dict[str, Any] = {"model": request.model, "messages": _messages(request.messages), "stream": stream}
        if options:
            payload["options"] = options
        if request.tools:
            payload["tools"] = function_tools(request.tools)
        wanted, able = request.json_output, self.kind.structured_output
        if wanted is not None and wanted.schema is not None and JSON_SCHEMA in able:
            payload["format"] = dict(wanted.schema)  # Ollama 0.5+ turns it into a grammar
        elif wanted is not None and wanted.schema is None and JSON_OBJECT in able:
            payload["format"] = "json"
        return payload

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse:
        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        payload = self._chat_payload(request, stream=False, endpoint=endpoint)
        answer = await self._call("POST", endpoint, "/api/chat", context, payload, request.timeout)
        if not isinstance(answer, dict) or not isinstance(answer.get("message"), dict):
            raise context.malformed("/api/chat answered without a message")
        calls = _tool_calls(answer["message"])
        return ChatResponse(
            text=str(answer["message"].get("content") or ""),
            model=str(answer.get("model") or request.model),
            backend=self.name,
            endpoint=endpoint,
            usage=_usage(answer),
            latency=time.perf_counter() - started,
            finish_reason="tool_calls" if calls else answer.get("done_reason"),
            tool_calls=calls,
        )

    async def stream(self, request: ChatRequest, endpoint: str) -> AsyncIterator[StreamChunk]:
        """One chunk per line with text, then a closing chunk from the `done: true` line; no such line, no answer.

        Ollama sends each tool call whole, on a line of its own before the last: they are all put on the closing chunk.
        """
        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        url = f"{server_root(endpoint)}/api/chat"
        payload = self._chat_payload(request, stream=True, endpoint=endpoint)
        last: dict[str, Any] = {}
        calls: tuple[ToolCall, ...] = ()
        async for event in self._ndjson(url, payload, self._timeout(request.timeout), context, lambda e: bool(e.get("done"))):
            said = event.get("message") or {}
            calls += _tool_calls(said, first=len(calls))
            text = said.get("content")
            if text:
                yield StreamChunk(str(text), elapsed=time.perf_counter() - started)
            last = event
        finish = "tool_calls" if calls else (last.get("done_reason") or "stop")
        elapsed = time.perf_counter() - started
        yield StreamChunk("", finish_reason=finish, usage=_usage(last), elapsed=elapsed, tool_calls=calls)

    async def _ndjson(
        self, url: str, payload: Mapping[str, Any], timeout: float, context: ErrorContext, last: Callable[[dict[str, Any]], bool]
    ) -> AsyncIterator[dict[str, Any]]:
        """The NDJSON events of one streamed request, up to the one `last` accepts; a stream that ends before it was cut off."""
        received = 0
        try:
            async with self._client.stream("POST", url, json=payload, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise context.from_status(response.status_code, response_body(response), response.headers)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    received += 1
                    event = _parse_line(line, context)
                    yield event
                    if last(event):
                        return
        except httpx.HTTPError as exc:
            raise context.transport(exc, timed_out=isinstance(exc, httpx.TimeoutException), received=received) from None
        raise context.cut_off(received)

    async def embed(self, texts: Sequence[str], model: str, endpoint: str) -> EmbedResponse:
        context = self._context(endpoint, model)
        started = time.perf_counter()
        answer = await self._call("POST", endpoint, "/api/embed", context, {"model": model, "input": list(texts)})
        vectors = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise context.malformed(f"/api/embed answered with no vector for each of the {len(texts)} texts")
        return EmbedResponse(
            vectors=tuple(tuple(float(x) for x in vector) for vector in vectors),
            model=str(answer.get("model") or model),
            backend=self.name,
            endpoint=endpoint,
            usage=Usage(prompt_tokens=int(answer.get("prompt_eval_count") or 0)),
            latency=time.perf_counter() - started,
        )

    async def health(self, endpoint: str) -> Health:
        url = f"{server_root(endpoint)}/api/version"
        return await probe(self._client, endpoint, url, key_env=self.config.api_key_env)

    async def list_models(self, endpoint: str) -> list[ModelEntry]:
        """Installed models (`/api/tags`), marked loaded with their VRAM and context where `/api/ps` lists them."""
        context = self._context(endpoint)
        tags = await self._call("GET", endpoint, "/api/tags", context)
        running = await self._call("GET", endpoint, "/api/ps", context)
        loaded = {str(m.get("name") or m.get("model")): m for m in _models(running)}
        entries = []
        for model in _models(tags):
            name = str(model.get("name") or model.get("model"))
            live = loaded.pop(name, None)
            entries.append(_entry(name, model, live))
        entries += [_entry(name, live, live) for name, live in loaded.items()]
        return entries

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        """`num_ctx` where the model's parameters set it (Ollama truncates prompts to it), else `*.context_length`."""
        context = self._context(endpoint, model)
        shown = await self._call("POST", endpoint, "/api/show", context, {"model": model})
        if not isinstance(shown, dict):
            return None
        for line in str(shown.get("parameters") or "").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "num_ctx" and value.strip().isdigit():
                return int(value.strip())
        info = shown.get("model_info") or {}
        lengths = [v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)]
        return lengths[0] if lengths else None

    async def report(self, endpoint: str) -> ServerReport:
        """Installed models and their sizes (`/api/tags`), and what is in memory now (`/api/ps`)."""
        return await gather_report(self.kind.auth_headers(self.config), lambda client: self._models_report(client, endpoint))

    async def _models_report(self, client: httpx.AsyncClient, endpoint: str) -> ServerReport:
        root = server_root(endpoint)
        (status, tags), (_, running) = await asyncio.gather(fetch(client, f"{root}/api/tags"), fetch(client, f"{root}/api/ps"))
        if status >= 400:
            return not_ready(endpoint, status, self.config.api_key_env)
        loaded = {
            alias: LoadedModel(ollama_name(m), _int(m.get("size")), _int(m.get("size_vram")))
            for m in _models(running)
            for alias in _aliases(m)
        }
        installed = {alias: _int(m.get("size")) for m in _models(tags) for alias in _aliases(m)}
        sizes = {name: size for name, size in installed.items() if size}
        models = frozenset(installed) | frozenset(loaded) if isinstance(tags, dict) else None
        return ServerReport(models=models, model_sizes=sizes, loaded=loaded)

    async def pull(self, model: str, endpoint: str) -> AsyncIterator[dict[str, Any]]:
        """`/api/pull`'s progress lines as they come; the stream must end on `status: success`, else it was cut off.

        The read timeout applies per line, not to the whole pull: a download of many GiB keeps
        sending progress, and a server that goes silent for that long has stalled.
        """
        url = f"{server_root(endpoint)}/api/pull"
        payload = {"model": model, "stream": True}
        async for event in self._ndjson(url, payload, self._timeout(), self._context(endpoint), lambda e: e.get("status") == "success"):
            yield event

    async def keep_alive(self, model: str, endpoint: str, keep_alive: str | int) -> dict[str, Any]:
        """Load a model for `keep_alive` (a duration such as `30m`), or unload it now with 0: `/api/generate` with no prompt."""
        payload = {"model": model, "keep_alive": keep_alive, "stream": False}
        answer = await self._call("POST", endpoint, "/api/generate", self._context(endpoint, model), payload)
        return answer if isinstance(answer, dict) else {}

    async def running(self, endpoint: str) -> list[dict[str, Any]]:
        """`/api/ps`: the models in memory now, with `size`, `size_vram` and `expires_at`."""
        return _models(await self._call("GET", endpoint, "/api/ps", self._context(endpoint)))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def ollama_name(model: Mapping[str, Any] | str) -> str:
    """`llama3` and `llama3:latest` are one model to Ollama: its full name has a tag."""
    name = model if isinstance(model, str) else str(model.get("name") or model.get("model") or "")
    return name if ":" in name else f"{name}:latest"


def _aliases(model: Mapping[str, Any]) -> tuple[str, ...]:
    """Every name a request may use for this model: `llama3:latest` also answers to `llama3`."""
    name = ollama_name(model)
    return (name, name.removesuffix(":latest")) if name.endswith(":latest") else (name,)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_line(line: str, context: ErrorContext) -> dict[str, Any]:
    """One NDJSON event; an `error` line mid-stream is the server giving up, raised as such."""
    try:
        event = json.loads(line)
    except ValueError:
        raise context.malformed(f"a stream line that is not JSON: {line[:80]!r}") from None
    if not isinstance(event, dict):
        raise context.malformed(f"a stream line that is not an object: {line[:80]!r}")
    if event.get("error"):
        raise context.from_status(None, event)
    return event


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Turns in Ollama's shape: call arguments as objects, and a tool result named by its tool,
    which Ollama reads where OpenAI reads the call's id."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    sent: list[dict[str, Any]] = []
    for m in messages:
        turn: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            turn["tool_calls"] = [{"function": {"name": c.name, "arguments": call_arguments(c)}} for c in m.tool_calls]
        if m.tool_call_id in names:
            turn["tool_name"] = names[m.tool_call_id]
        sent.append(turn)
    return sent


def _tool_calls(message: Mapping[str, Any], first: int = 0) -> tuple[ToolCall, ...]:
    """The calls in a message; one without an id gets `call_<n>`, numbered from `first` across the answer."""
    listed = message.get("tool_calls")
    if not isinstance(listed, list):
        return ()
    calls = [c for c in listed if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    return tuple(_tool_call(call, f"call_{first + n}") for n, call in enumerate(calls))


def _tool_call(call: Mapping[str, Any], fallback_id: str) -> ToolCall:
    """Ollama sends the arguments as an object; text is kept as sent, in case a server already encoded it."""
    function = call["function"]
    arguments = function.get("arguments")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCall(str(call.get("id") or fallback_id), str(function.get("name") or ""), text)


def _usage(answer: Mapping[str, Any]) -> Usage:
    return Usage(int(answer.get("prompt_eval_count") or 0), int(answer.get("eval_count") or 0))


def _models(listing: object) -> list[dict[str, Any]]:
    models = listing.get("models") if isinstance(listing, dict) else None
    return [m for m in models or [] if isinstance(m, dict)]


def _entry(name: str, model: Mapping[str, Any], live: Mapping[str, Any] | None) -> ModelEntry:
    return ModelEntry(
        name=name,
        loaded=live is not None,
        size_bytes=model.get("size"),
        vram_bytes=live.get("size_vram") if live else None,
        context_window=live.get("context_length") if live else None,
    )


TYPES = (
    BackendType(
        "ollama",
        OllamaBackend,
        "Ollama native API",
        local=True,
        default_url="http://localhost:11434",
        start_hint="start it with `ollama serve`",
        pull_hint="ollama pull {model}",
        directive_words=(r"ollama",),
        default_models={None: "llama3", "triage": "tinyllama", "generator": "qwen2.5-coder:14b"},
        structured_output=STRUCTURED,
    ),
)
