"""The OpenAI chat completions and embeddings formats: reading requests, writing answers, streams and errors.

Reading is strict: a field dse cannot honour is a 400 naming it (see `fields.refuse_unknown`).
Writing follows what the official `openai` SDK parses, chunk for chunk, so a client cannot tell
dse from the API it was written for, except by the `model` it names and the `x-dse-*` headers.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..backends.types import LENGTH, ChatOptions, ChatResponse, JsonOutput, Message, StreamChunk, ToolCall, ToolSpec, Usage
from . import fields
from .call import ChatCall
from .problems import Problem, invalid

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_CHAT_FIELDS = (
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "response_format", "tools", "tool_choice",
)
# Sent by many clients at values that change nothing; any other value is refused.
_CHAT_HARMLESS = {
    "n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0, "parallel_tool_calls": True, "store": False,
}
_EMBED_FIELDS = ("model", "input", "encoding_format")


def read_chat(body: Mapping[str, Any]) -> ChatCall:
    fields.refuse_unknown(body, _CHAT_FIELDS, _CHAT_HARMLESS)
    model = fields.model(body)
    messages = tuple(_message(item, at) for at, item in fields.objects(body.get("messages"), "messages", required=True))
    stream = fields.flag(body, "stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        include_usage = fields.flag(fields.obj(stream_options, "stream_options"), "include_usage")
    max_tokens = fields.integer(body, "max_completion_tokens", 1) or fields.integer(body, "max_tokens", 1)
    tools = _tools(body.get("tools"))
    return ChatCall(
        model=str(model),
        messages=messages,
        stream=stream,
        temperature=fields.number(body, "temperature", 0, 2),
        max_tokens=max_tokens,
        options=ChatOptions(
            top_p=fields.number(body, "top_p", 0, 1),
            seed=fields.integer(body, "seed"),
            stop=fields.strings(body, "stop", most=4),
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice"), tools),
        ),
        json_output=_response_format(body.get("response_format")),
        include_usage=include_usage,
    )


def _message(item: Mapping[str, Any], where: str) -> Message:
    role = fields.text(item, "role", f"{where}.", required=True)
    if role not in ROLES:
        raise invalid(f"{where}.role must be one of {', '.join(sorted(ROLES))}, not {role!r}", f"{where}.role")
    raw = item.get("content")  # null: an assistant turn that only calls tools
    content = "" if raw is None else fields.text_parts(raw, f"{where}.content", "content parts")
    calls = _tool_calls(item.get("tool_calls"), f"{where}.tool_calls") if role == "assistant" else ()
    call_id = fields.text(item, "tool_call_id", f"{where}.", required=role == "tool")
    return Message("system" if role == "developer" else str(role), content, calls, call_id)


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    calls = []
    for at, call in fields.objects(raw, where):
        function = fields.obj(call.get("function"), f"{at}.function")
        name = fields.text(function, "name", f"{at}.function.", required=True)
        arguments = fields.text(function, "arguments", f"{at}.function.") or "{}"
        calls.append(ToolCall(fields.text(call, "id", f"{at}.", required=True) or "", str(name), arguments))
    return tuple(calls)


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    specs = []
    for at, tool in fields.objects(raw, "tools"):
        if tool.get("type", "function") != "function":
            raise invalid(f"{at}.type {tool.get('type')!r} is not supported; only function", f"{at}.type")
        function = fields.obj(tool.get("function"), f"{at}.function")
        name = fields.text(function, "name", f"{at}.function.", required=True)
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        fields.obj(parameters, f"{at}.function.parameters")
        specs.append(ToolSpec(str(name), fields.text(function, "description", f"{at}.function.") or "", parameters))
    return tuple(specs)


def _tool_choice(raw: Any, tools: Sequence[ToolSpec]) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise invalid("tool_choice must be auto, none, required or {type: function, function: {name}}", "tool_choice")
        return raw
    choice = fields.obj(raw, "tool_choice")
    name = fields.text(fields.obj(choice.get("function"), "tool_choice.function"), "name", "tool_choice.function.", required=True)
    if name not in {tool.name for tool in tools}:
        raise invalid(f"tool_choice names {name!r}, which is not among tools", "tool_choice")
    return name


def _response_format(raw: Any) -> JsonOutput | None:
    if raw is None:
        return None
    shape = fields.obj(raw, "response_format")
    kind = shape.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonOutput()
    if kind == "json_schema":
        spec = fields.obj(shape.get("json_schema"), "response_format.json_schema")
        schema = spec.get("schema")
        return JsonOutput.named(str(spec.get("name") or "answer"), fields.obj(schema, "response_format.json_schema.schema") if schema is not None else None)
    raise invalid("response_format.type must be text, json_object or json_schema", "response_format.type")


def read_embeddings(body: Mapping[str, Any]) -> tuple[str, list[str], bool]:
    """The model, the texts, and whether the client asked for base64 vectors."""
    fields.refuse_unknown(body, _EMBED_FIELDS, {"user": None})
    model = fields.model(body)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid("input must be a string or a non-empty array of strings (token arrays are not supported)", "input")
    encoding = fields.text(body, "encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format must be float or base64", "encoding_format")
    return str(model), texts, encoding == "base64"


def _finish(reason: str | None, calls: Sequence[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    return "length" if reason == LENGTH else (reason or "stop")


def _calls(calls: Sequence[ToolCall], indexed: bool = False) -> list[dict[str, Any]]:
    return [
        {**({"index": i} if indexed else {}), "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(calls)
    ]


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def chat_answer(response: ChatResponse, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.text if response.text or not response.tool_calls else None}
    if response.tool_calls:
        message["tool_calls"] = _calls(response.tool_calls)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(response.finish_reason, response.tool_calls), "logprobs": None}],
        "usage": _usage(response.usage),
    }


def _data(document: Mapping[str, Any]) -> bytes:
    """One server-sent event of JSON, compact, as OpenAI writes them."""
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


class ChatStream:
    """Turns the engine's chunks into `chat.completion.chunk` server-sent events, ending with `[DONE]`."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self._include_usage = include_usage
        self._started = False

    def _event(self, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        return _data({**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    def events(self, chunk: StreamChunk) -> Iterator[bytes]:
        if not self._started:
            self._started = True
            yield self._event({"role": "assistant", "content": ""})
        if chunk.text:
            yield self._event({"content": chunk.text})
        if chunk.finish_reason is None:
            return
        if chunk.tool_calls:
            yield self._event({"tool_calls": _calls(chunk.tool_calls, indexed=True)})
        yield self._event({}, _finish(chunk.finish_reason, chunk.tool_calls))
        if self._include_usage:
            yield _data({**self._base, "choices": [], "usage": _usage(chunk.usage or Usage())})
        yield b"data: [DONE]\n\n"

    @staticmethod
    def failure(problem: Problem) -> bytes:
        """A failure after the stream began: the status line is gone, so the error travels as an event."""
        return _data(error_body(problem))


def embeddings_answer(vectors: Sequence[Sequence[float]], model: str, prompt_tokens: int, as_base64: bool) -> dict[str, Any]:
    def encoded(vector: Sequence[float]) -> Any:
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else list(vector)

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_answer(names: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """(id, owner) pairs as OpenAI's model list."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": owner} for name, owner in names]}


def error_body(problem: Problem) -> dict[str, Any]:
    return {"error": {"message": problem.message, "type": problem.kind, "param": problem.param, "code": problem.code}}
