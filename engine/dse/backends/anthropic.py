"""The Anthropic Messages protocol, spoken through the official `anthropic` async SDK.

Anthropic differs from OpenAI in ways the engine must not see: system prompts travel in their
own parameter, `max_tokens` is required, the answer is a list of content blocks, and a busy
server says 529 (overloaded), which is handled like a 429, and tool calls and their results are
content blocks of a turn. `temperature` and `top_p` are not sent: the API version this SDK
speaks rejects every sampling parameter, even at its default, and the SDK no longer has them;
nor has Anthropic a seed. So the type takes stop sequences and tools only. llama.cpp serves
this protocol too, on the same `/v1/messages` path. SDK retries are off: the router owns retries.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from itertools import groupby
from typing import TYPE_CHECKING, Any

from ..config.model import BackendConfig
from ..errors import BadRequest
from ._errors import ErrorContext
from ._fields import ToolCallParts, call_arguments, check_request
from ._http import DEFAULT_TIMEOUT, HEALTH_TIMEOUT, probe_sdk, server_root
from .registry import CHAT_AND_STREAM, JSON_SCHEMA, STOP, TOOLS, BackendType, backend_type
from .types import (
    LENGTH,
    ChatRequest,
    ChatResponse,
    EmbedResponse,
    Health,
    Message,
    ModelEntry,
    StreamChunk,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import MessageDeltaUsage
    from anthropic.types import Usage as MessageUsage

# The API refuses a request without `max_tokens`; this is the cap when a step sets none.
DEFAULT_MAX_TOKENS = 1024
# Stop reasons that mean the answer was cut short, reported as every adapter reports it.
_CUT_SHORT = frozenset({"max_tokens", "model_context_window_exceeded"})
# OpenAI's `tool_choice` words, as Anthropic spells them; any other value names the one tool to call.
_TOOL_MODES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


class AnthropicBackend:
    """Chat and streaming over `/v1/messages`; Anthropic has no embeddings, so `embed` says where to go instead."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind: BackendType = backend_type(config.type)
        self._clients: dict[str, AsyncAnthropic] = {}

    def connect(self, endpoint: str) -> None:
        self._client(endpoint)

    def _client(self, endpoint: str) -> AsyncAnthropic:
        client = self._clients.get(endpoint)
        if client is None:
            from anthropic import AsyncAnthropic

            client = AsyncAnthropic(
                base_url=server_root(endpoint),
                api_key=self.config.api_key.reveal() if self.config.api_key else "not-needed",
                max_retries=0,
                timeout=self.config.timeout or DEFAULT_TIMEOUT,
                default_headers=dict(self.config.headers) or None,
            )
            self._clients[endpoint] = client
        return client

    def _context(self, endpoint: str, model: str | None = None) -> ErrorContext:
        hint = f"check the model id {model!r}" if model else f"check the URL {endpoint}"
        return ErrorContext.of(self.config, endpoint, hint)

    def _answer_tool(self, request: ChatRequest) -> str | None:
        """The name of the tool whose input is the answer, when a JSON Schema constrains it.

        Forcing one tool is how Anthropic holds a model to a schema. A tool's input is always an
        object, so a schema of anything else is left to the step's check and repair, and so is
        the answer of a call that offers tools of its own: forcing one would forbid calling them.
        """
        wanted = request.json_output
        if request.tools or wanted is None or wanted.schema is None or JSON_SCHEMA not in self.kind.structured_output:
            return None
        return wanted.name if wanted.schema.get("type") == "object" else None

    def _message_args(self, request: ChatRequest, endpoint: str) -> dict[str, Any]:
        check_request(request, self.kind, self.name, endpoint)
        args: dict[str, Any] = {
            "model": request.model,
            "messages": _turns(request.messages),
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        }
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        if system:
            args["system"] = system
        if request.stop:
            args["stop_sequences"] = list(request.stop)
        if request.timeout is not None:
            args["timeout"] = request.timeout
        if request.tools:
            args["tools"] = [_tool(spec) for spec in request.tools]
        if request.tool_choice is not None:
            args["tool_choice"] = _TOOL_MODES.get(request.tool_choice) or {"type": "tool", "name": request.tool_choice}
        tool = self._answer_tool(request)
        if tool is not None:
            schema = dict((request.json_output and request.json_output.schema) or {})
            args["tools"] = [{"name": tool, "description": "Give your answer as this tool's input.", "input_schema": schema}]
            args["tool_choice"] = {"type": "tool", "name": tool}
        return args

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse:
        import anthropic

        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        try:
            message = await self._client(endpoint).messages.create(**self._message_args(request, endpoint))
        except anthropic.APIError as exc:
            raise context.from_sdk(exc, anthropic) from None
        tool = self._answer_tool(request)
        answers = [json.dumps(block.input) for block in message.content if block.type == "tool_use" and block.name == tool]
        calls = tuple(
            ToolCall(block.id, block.name, json.dumps(block.input))
            for block in message.content
            if block.type == "tool_use" and block.name != tool
        )
        return ChatResponse(
            text=answers[0] if answers else "".join(block.text for block in message.content if block.type == "text"),
            model=message.model or request.model,
            backend=self.name,
            endpoint=endpoint,
            usage=Usage(_prompt_tokens(message.usage), message.usage.output_tokens, message.usage.cache_read_input_tokens or 0),
            latency=time.perf_counter() - started,
            finish_reason=_finish(message.stop_reason, calls),
            tool_calls=calls,
        )

    async def stream(self, request: ChatRequest, endpoint: str) -> AsyncIterator[StreamChunk]:
        """Text deltas, then a closing chunk with whole tool calls; only `message_stop` proves the answer is complete.

        Input tokens arrive in `message_start`, output tokens in `message_delta`; a tool call's
        id and name in its block's start, its input in `input_json_delta` pieces. The SDK lets
        a dropped connection surface as its transport's own exception, caught here as well.
        """
        import anthropic
        import httpx2

        context = self._context(endpoint, request.model)
        started = time.perf_counter()
        received = 0
        prompt_tokens = completion_tokens = 0
        finish: str | None = None
        complete = False
        tool = self._answer_tool(request)
        calls = ToolCallParts()
        try:
            events = await self._client(endpoint).messages.create(**self._message_args(request, endpoint), stream=True)
            async with events:
                async for event in events:
                    received += 1
                    if event.type == "message_start":
                        prompt_tokens = _prompt_tokens(event.message.usage)
                        completion_tokens = event.message.usage.output_tokens
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta" and event.delta.text:
                        yield StreamChunk(event.delta.text, elapsed=time.perf_counter() - started)
                    elif event.type == "content_block_start" and event.content_block.type == "tool_use" and event.content_block.name != tool:
                        calls.add(event.index, id=event.content_block.id, name=event.content_block.name)
                    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta" and event.index in calls:
                        calls.add(event.index, arguments=event.delta.partial_json)
                    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta" and tool:
                        # The answer tool's input, as the JSON text it is: the answer of a constrained call.
                        if event.delta.partial_json:
                            yield StreamChunk(event.delta.partial_json, elapsed=time.perf_counter() - started)
                    elif event.type == "message_delta":
                        finish = event.delta.stop_reason or finish
                        completion_tokens = event.usage.output_tokens
                        prompt_tokens = _prompt_tokens(event.usage) or prompt_tokens
                    elif event.type == "message_stop":
                        complete = True
        except anthropic.APIError as exc:
            raise context.from_sdk(exc, anthropic, received=received) from None
        except httpx2.HTTPError as exc:
            timed_out = isinstance(exc, httpx2.TimeoutException)
            raise context.transport(exc, timed_out=timed_out, received=received) from None
        if not complete:
            raise context.cut_off(received)
        usage, whole = Usage(prompt_tokens, completion_tokens), calls.calls()
        elapsed = time.perf_counter() - started
        yield StreamChunk("", finish_reason=_finish(finish, whole), usage=usage, elapsed=elapsed, tool_calls=whole)

    async def embed(self, texts: Sequence[str], model: str, endpoint: str) -> EmbedResponse:
        raise BadRequest(
            "Anthropic offers no embedding models; use openai or ollama for embeddings",
            backend=self.name,
            endpoint=endpoint,
        )

    async def health(self, endpoint: str) -> Health:
        """A GET on `/v1/models`: cheap, served by Anthropic and llama.cpp alike, and 401 exposes a bad key."""
        import anthropic

        models = self._client(endpoint).models.list(limit=1, timeout=HEALTH_TIMEOUT)
        return await probe_sdk(endpoint, models, anthropic, key_env=self.config.api_key_env)

    async def list_models(self, endpoint: str) -> list[ModelEntry]:
        import anthropic

        try:
            return [
                ModelEntry(name=model.id, context_window=model.max_input_tokens)
                async for model in self._client(endpoint).models.list()
            ]
        except anthropic.APIError as exc:
            raise self._context(endpoint).from_sdk(exc, anthropic) from None

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        """The Models API's `max_input_tokens`; None where the server has no such page (llama.cpp) or omits it."""
        import anthropic

        try:
            info = await self._client(endpoint).models.retrieve(model)
        except anthropic.NotFoundError:
            return None
        except anthropic.APIError as exc:
            raise self._context(endpoint, model).from_sdk(exc, anthropic) from None
        return info.max_input_tokens

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _finish(stop_reason: str | None, calls: tuple[ToolCall, ...] = ()) -> str | None:
    """Anthropic's stop reason, with a cut-short answer and a stop to call tools called what every adapter calls them.

    A stop for the answer tool of a JSON call is no client's tool call: it stays `tool_use`.
    """
    if stop_reason == "tool_use" and calls:
        return "tool_calls"
    return LENGTH if stop_reason in _CUT_SHORT else stop_reason


def _turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation as Anthropic takes it: system turns go to their own parameter, and tool
    results become one user turn of `tool_result` blocks, as Anthropic wants every result of
    one assistant turn together."""
    turns: list[dict[str, Any]] = []
    said = (m for m in messages if m.role != "system")
    for results, group in groupby(said, key=lambda m: m.role == "tool"):
        if results:
            turns.append({"role": "user", "content": [_result(m) for m in group]})
        else:
            turns += [_turn(m) for m in group]
    return turns


def _turn(message: Message) -> dict[str, Any]:
    if not message.tool_calls:
        return {"role": message.role, "content": message.content}
    text: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
    return {"role": message.role, "content": text + [_tool_use(call) for call in message.tool_calls]}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call_arguments(call)}


def _result(message: Message) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}


def _tool(spec: ToolSpec) -> dict[str, Any]:
    """A client tool; Anthropic requires an input schema, so a tool without one takes an empty object."""
    tool: dict[str, Any] = {"name": spec.name, "input_schema": dict(spec.parameters) or {"type": "object"}}
    if spec.description:
        tool["description"] = spec.description
    return tool


def _prompt_tokens(usage: MessageUsage | MessageDeltaUsage) -> int:
    """`input_tokens` leaves out the cached part of the prompt; the engine counts the whole prompt."""
    return (usage.input_tokens or 0) + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


TYPES = (
    BackendType(
        "anthropic",
        AnthropicBackend,
        "Anthropic Messages API",
        local=False,
        default_url="https://api.anthropic.com",
        key_env="ANTHROPIC_API_KEY",
        auth_header="x-api-key",
        auth_scheme="",
        capabilities=CHAT_AND_STREAM,
        structured_output=frozenset({JSON_SCHEMA}),
        request_fields=frozenset({STOP, TOOLS}),
        sdk="anthropic",
        directive_words=(r"anthropic(?:'s)?[ \t]+claude", r"anthropic", r"claude"),
        model_pattern=r"claude|(?:opus|haiku|sonnet)$",
        vendor=True,
        default_models={None: "claude-3-5-sonnet-20241022", "triage": "claude-3-haiku-20240307"},
    ),
)
