"""The optional request fields every adapter checks, and the tool-call shapes several protocols share.

A field a backend type does not declare (`BackendType.request_fields`) is refused before
anything is sent: dropping it unsaid would hand a client an answer to a question it did not
ask. So are tool-call arguments that are no JSON object, which only OpenAI would carry (as
text) and every other protocol must parse. Tool calls arrive piecewise in every streaming
protocol; `ToolCallParts` puts them back together the one way each adapter needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..errors import BadRequest
from .registry import SEED, STOP, TOOLS, TOP_P, BackendType
from .types import ChatRequest, ToolCall, ToolSpec


def asked_fields(request: ChatRequest) -> frozenset[str]:
    """The optional fields `request` uses; tool turns in the conversation count as tools."""
    tool_turns = any(m.tool_calls or m.tool_call_id is not None for m in request.messages)
    used = {
        TOP_P: request.top_p is not None,
        SEED: request.seed is not None,
        STOP: bool(request.stop),
        TOOLS: bool(request.tools) or request.tool_choice is not None or tool_turns,
    }
    return frozenset(name for name, present in used.items() if present)


def check_request(request: ChatRequest, kind: BackendType, backend: str, endpoint: str) -> None:
    """Raise `BadRequest` naming every field of `request` that backends of `kind` do not take, or a broken tool call."""
    refused = sorted(asked_fields(request) - kind.request_fields)
    if refused:
        raise BadRequest(
            f"backend {backend!r} (type {kind.name}) does not take {', '.join(refused)}",
            backend=backend,
            endpoint=endpoint,
            hint=f"leave {', '.join(refused)} out, or send the call to a backend whose type takes {'them' if len(refused) > 1 else 'it'}",
        )
    for call in (call for m in request.messages for call in m.tool_calls):
        if not isinstance(_parsed(call.arguments), dict):
            raise BadRequest(f"the arguments of tool call {call.id!r} ({call.name}) are not a JSON object", backend=backend, endpoint=endpoint)


def _parsed(arguments: str) -> object:
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        return None


def function_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as OpenAI and Ollama both take them; an empty description or schema is left out, as both allow."""
    return [{"type": "function", "function": _function(tool)} for tool in tools]


def _function(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.parameters:
        function["parameters"] = dict(tool.parameters)
    return function


def call_arguments(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the object Anthropic and Ollama carry (OpenAI carries JSON text); `check_request` vouched for them."""
    arguments: dict[str, Any] = json.loads(call.arguments or "{}")
    return arguments


class ToolCallParts:
    """Tool calls gathered from stream pieces keyed by their index: id and name come first, arguments in pieces."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def add(self, index: int, *, id: str | None = None, name: str | None = None, arguments: str | None = None) -> None:
        known_id, known_name, pieces = self._calls.get(index, ("", "", []))
        self._calls[index] = (id or known_id, name or known_name, pieces)
        if arguments:
            pieces.append(arguments)

    def __contains__(self, index: int) -> bool:
        return index in self._calls

    def calls(self) -> tuple[ToolCall, ...]:
        """Each call whole, in index order; a call with no argument pieces takes no arguments (`{}`)."""
        return tuple(ToolCall(id, name, "".join(pieces) or "{}") for _, (id, name, pieces) in sorted(self._calls.items()))
