"""The Anthropic Messages format: reading requests, writing messages, event streams and errors.

A request is turned into the engine's turns: `system` becomes a system turn, an assistant's
`tool_use` blocks its tool calls, and a user's `tool_result` blocks one `tool` turn each, so
the same request can go to an OpenAI-protocol backend and back. Writing follows the event
sequence the official `anthropic` SDK reads: message_start, content blocks, message_delta,
message_stop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..backends.types import LENGTH, ChatOptions, ChatResponse, Message, StreamChunk, ToolCall, ToolSpec, Usage
from . import fields
from .call import ChatCall
from .problems import Problem, invalid

_FIELDS = ("model", "messages", "system", "max_tokens", "stream", "temperature", "top_p", "stop_sequences", "tools", "tool_choice")
_HARMLESS: dict[str, Any] = {"metadata": {}}
_STOP_REASONS = {LENGTH: "max_tokens", "tool_calls": "tool_use"}


def read_messages(body: Mapping[str, Any]) -> ChatCall:
    fields.refuse_unknown(body, _FIELDS, _HARMLESS)
    model = fields.model(body)
    max_tokens = fields.integer(body, "max_tokens", 1)
    if max_tokens is None:
        raise invalid("max_tokens is required", "max_tokens")
    turns = [*_system(body.get("system"))]
    for at, item in fields.objects(body.get("messages"), "messages", required=True):
        turns += _turns(item, at)
    tools = _tools(body.get("tools"))
    return ChatCall(
        model=str(model),
        messages=tuple(turns),
        stream=fields.flag(body, "stream"),
        temperature=fields.number(body, "temperature", 0, 1),
        max_tokens=max_tokens,
        options=ChatOptions(
            top_p=fields.number(body, "top_p", 0, 1),
            stop=fields.strings(body, "stop_sequences"),
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice"), tools),
        ),
    )


def _system(raw: Any) -> list[Message]:
    return [] if raw is None else [Message("system", fields.text_parts(raw, "system", "text blocks"))]


def _turns(item: Mapping[str, Any], where: str) -> list[Message]:
    """One Anthropic message as engine turns: tool results become `tool` turns ahead of the user's text."""
    role = fields.text(item, "role", f"{where}.", required=True)
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role must be user or assistant, not {role!r}", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return [Message(str(role), content)]
    if not isinstance(content, list):
        raise invalid(f"{where}.content must be a string or an array of blocks, not {fields.kind_of(content)}", f"{where}.content")
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        block = fields.obj(block, at)
        kind = block.get("type")
        if kind == "text":
            texts.append(fields.text(block, "text", f"{at}.", required=True) or "")
        elif kind == "tool_use" and role == "assistant":
            arguments = fields.obj(block.get("input", {}), f"{at}.input")
            calls.append(ToolCall(fields.text(block, "id", f"{at}.", required=True) or "", fields.text(block, "name", f"{at}.", required=True) or "", json.dumps(arguments)))
        elif kind == "tool_result" and role == "user":
            answer = block.get("content", "")
            results.append(Message("tool", fields.text_parts(answer, f"{at}.content", "text blocks"), tool_call_id=fields.text(block, "tool_use_id", f"{at}.", required=True)))
        else:
            raise invalid(f"{at}: blocks of type {kind!r} are not supported in a {role} message", f"{at}.type")
    text = "".join(texts)
    if role == "assistant":
        return [Message("assistant", text, tuple(calls))]
    return [*results, *([Message("user", text)] if text or not results else [])]


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    specs = []
    for at, tool in fields.objects(raw, "tools"):
        if tool.get("type", "custom") != "custom":
            raise invalid(f"{at}: server tools ({tool.get('type')!r}) are not supported; only client tools", f"{at}.type")
        name = fields.text(tool, "name", f"{at}.", required=True)
        schema = fields.obj(tool.get("input_schema"), f"{at}.input_schema")
        specs.append(ToolSpec(str(name), fields.text(tool, "description", f"{at}.") or "", schema))
    return tuple(specs)


def _tool_choice(raw: Any, tools: Sequence[ToolSpec]) -> str | None:
    if raw is None:
        return None
    choice = fields.obj(raw, "tool_choice")
    kind = choice.get("type")
    plain = {"auto": "auto", "any": "required", "none": "none"}
    if kind in plain:
        return plain[kind]
    if kind == "tool":
        name = fields.text(choice, "name", "tool_choice.", required=True)
        if name not in {tool.name for tool in tools}:
            raise invalid(f"tool_choice names {name!r}, which is not among tools", "tool_choice.name")
        return name
    raise invalid("tool_choice.type must be auto, any, tool or none", "tool_choice.type")


def _stop_reason(reason: str | None, calls: Sequence[ToolCall]) -> str:
    if calls:
        return "tool_use"
    return _STOP_REASONS.get(reason or "", "end_turn")


def _tool_block(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = {"arguments": call.arguments}
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def message_answer(response: ChatResponse, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": response.text}] if response.text or not response.tool_calls else []
    content += [_tool_block(call) for call in response.tool_calls]
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(response.finish_reason, response.tool_calls),
        "stop_sequence": None,
        "usage": _usage(response.usage),
    }


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps({"type": name, **data}, separators=(",", ":")).encode() + b"\n\n"


class MessageStream:
    """Turns the engine's chunks into the Messages API's server-sent events."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False

    def events(self, chunk: StreamChunk) -> Iterator[bytes]:
        if not self._started:
            self._started = True
            message: dict[str, Any] = {
                "id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": self._model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            yield _event("message_start", {"message": message})
            yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        if chunk.text:
            yield _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": chunk.text}})
        if chunk.finish_reason is None:
            return
        yield _event("content_block_stop", {"index": 0})
        for index, call in enumerate(chunk.tool_calls, start=1):
            block = {**_tool_block(call), "input": {}}
            yield _event("content_block_start", {"index": index, "content_block": block})
            yield _event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": call.arguments}})
            yield _event("content_block_stop", {"index": index})
        usage = chunk.usage or Usage()
        delta = {"stop_reason": _stop_reason(chunk.finish_reason, chunk.tool_calls), "stop_sequence": None}
        yield _event("message_delta", {"delta": delta, "usage": _usage(usage)})
        yield _event("message_stop", {})

    @staticmethod
    def failure(problem: Problem) -> bytes:
        return _event("error", {"error": {"type": problem.kind, "message": problem.message}})


def models_answer(names: Sequence[tuple[str, str]]) -> dict[str, Any]:
    data = [{"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"} for name, _owner in names]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def error_body(problem: Problem) -> dict[str, Any]:
    return {"type": "error", "error": {"type": problem.kind, "message": problem.message}}
