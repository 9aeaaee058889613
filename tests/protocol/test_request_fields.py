"""A client's own request fields (top_p, seed, stop, tools) through every adapter, against real HTTP stubs.

Each protocol gets the fields in its own shape, tool calls come back whole from answers and
from streams pieced together the way each vendor streams them, and a field a backend type
does not take is refused before anything is sent. The response cache neither answers nor keeps
a call that offers tools.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from stubs import (
    StubServer,
    anthropic_message,
    anthropic_tool_stream,
    anthropic_tool_use,
    call,
    drain,
    ollama_chat,
    ollama_tool_calls,
    ollama_tool_stream,
    openai_chat,
    openai_stream,
    openai_tool_calls,
    openai_tool_stream,
)
from wire import WIRES, Wire, anthropic_backend, ollama_backend, openai_backend

from dse.backends import ChatOptions, ChatRequest, Message, StreamChunk, ToolCall, ToolSpec
from dse.backends.types import JsonOutput
from dse.errors import BadRequest

WEATHER = ToolSpec(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolSpec("get_time")
PARIS = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
ROME = ToolCall("call_2", "get_weather", '{"city": "Rome"}')
# A conversation that has been through one round of tool calls: the model asked for two, both answered.
ROUND = (
    Message("system", "Be brief."),
    Message("user", "Weather in Paris and Rome?"),
    Message("assistant", "", tool_calls=(PARIS, ROME)),
    Message("tool", "18C, sunny", tool_call_id="call_1"),
    Message("tool", "24C, cloudy", tool_call_id="call_2"),
    Message("user", "Which is warmer?"),
)


def asking(model: str, **fields: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=(Message("user", "Weather in Paris?"),), **fields)


def streamed(adapter: Any, request: ChatRequest, url: str) -> list[StreamChunk]:
    return call(adapter, lambda b: drain(b.stream(request, url)))


# ---- OpenAI-compatible (llama.cpp) ------------------------------------------------------------

OPENAI_CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_openai_sends_sampling_fields_tools_and_tool_turns_in_its_shape(stub: StubServer, choice: str, sent: object) -> None:
    stub.route("POST", OPENAI_CHAT, openai_chat())
    request = ChatRequest(
        model="m", messages=ROUND, top_p=0.9, seed=7, stop=("END",), tools=(WEATHER, CLOCK), tool_choice=choice
    )
    call(openai_backend("llamacpp"), lambda b: b.chat(request, stub.url))
    body = stub.requests[-1].json
    assert (body["top_p"], body["seed"], body["stop"], body["tool_choice"]) == (0.9, 7, ["END"], sent)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": WEATHER.description, "parameters": dict(WEATHER.parameters)}},
        {"type": "function", "function": {"name": "get_time"}},
    ]
    assert body["messages"][2:5] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ],
        },
        {"role": "tool", "content": "18C, sunny", "tool_call_id": "call_1"},
        {"role": "tool", "content": "24C, cloudy", "tool_call_id": "call_2"},
    ]


def test_openai_sends_no_optional_field_a_request_leaves_unset(stub: StubServer) -> None:
    stub.route("POST", OPENAI_CHAT, openai_chat())
    call(openai_backend("llamacpp"), lambda b: b.chat(asking("m"), stub.url))
    assert not {"top_p", "seed", "stop", "tools", "tool_choice"} & set(stub.requests[-1].json)


def test_openai_chat_reads_the_tool_calls_of_an_answer(stub: StubServer) -> None:
    stub.route("POST", OPENAI_CHAT, openai_tool_calls([("call_a", "get_weather", ['{"city": "Paris"}']), ("call_b", "get_time", [])]))
    response = call(openai_backend("llamacpp"), lambda b: b.chat(asking("m", tools=(WEATHER, CLOCK)), stub.url))
    assert response.tool_calls == (ToolCall("call_a", "get_weather", '{"city": "Paris"}'), ToolCall("call_b", "get_time", "{}"))
    assert (response.text, response.finish_reason) == ("", "tool_calls")


def test_openai_stream_gathers_tool_call_pieces_by_index_onto_the_closing_chunk(stub: StubServer) -> None:
    pieces = [("call_a", "get_weather", ['{"ci', 'ty": ', '"Paris"}']), ("call_b", "get_weather", ['{"city"', ': "Rome"}'])]
    stub.route("POST", OPENAI_CHAT, openai_tool_stream(pieces))
    chunks = streamed(openai_backend("llamacpp"), asking("m", tools=(WEATHER,)), stub.url)
    *pieces_before, closing = chunks
    assert all(not c.tool_calls and c.finish_reason is None for c in pieces_before)
    assert closing.finish_reason == "tool_calls"
    assert closing.tool_calls == (
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_weather", '{"city": "Rome"}'),
    )
    assert json.loads(closing.tool_calls[1].arguments) == {"city": "Rome"}


def test_openai_stream_of_plain_text_closes_with_no_tool_calls(stub: StubServer) -> None:
    stub.route("POST", OPENAI_CHAT, openai_stream(["Hel", "lo"]))
    chunks = streamed(openai_backend("llamacpp"), asking("m"), stub.url)
    assert "".join(c.text for c in chunks) == "Hello" and chunks[-1].tool_calls == ()


# ---- Anthropic --------------------------------------------------------------------------------

MESSAGES = "/v1/messages"


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
def test_anthropic_sends_tools_choice_and_stop_in_its_own_shape(stub: StubServer, choice: str, sent: object) -> None:
    stub.route("POST", MESSAGES, anthropic_message())
    request = asking("claude-test", stop=("END",), tools=(WEATHER, CLOCK), tool_choice=choice)
    call(anthropic_backend(), lambda b: b.chat(request, stub.url))
    body = stub.requests[-1].json
    assert (body["stop_sequences"], body["tool_choice"]) == (["END"], sent)
    assert body["tools"] == [
        {"name": "get_weather", "description": WEATHER.description, "input_schema": dict(WEATHER.parameters)},
        {"name": "get_time", "input_schema": {"type": "object"}},
    ]


def test_anthropic_turns_tool_calls_into_tool_use_blocks_and_merges_their_results(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_message())
    request = ChatRequest(model="claude-test", messages=replace_content(ROUND, 2, "Let me look."), tools=(WEATHER,))
    call(anthropic_backend(), lambda b: b.chat(request, stub.url))
    body = stub.requests[-1].json
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C, cloudy"},
            ],
        },
        {"role": "user", "content": "Which is warmer?"},
    ]


def replace_content(messages: tuple[Message, ...], index: int, content: str) -> tuple[Message, ...]:
    return tuple(replace(m, content=content) if i == index else m for i, m in enumerate(messages))


def test_anthropic_chat_reads_tool_use_blocks_as_tool_calls(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_tool_use([("toolu_1", "get_weather", ['{"city": "Paris"}'])], text="Checking."))
    response = call(anthropic_backend(), lambda b: b.chat(asking("claude-test", tools=(WEATHER,)), stub.url))
    assert response.tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)
    assert (response.text, response.finish_reason) == ("Checking.", "tool_calls")


def test_anthropic_stream_gathers_input_json_deltas_into_whole_calls(stub: StubServer) -> None:
    calls = [("toolu_1", "get_weather", ['{"city":', ' "Paris"}']), ("toolu_2", "get_time", [])]
    stub.route("POST", MESSAGES, anthropic_tool_stream(calls, text=["Let me ", "check."]))
    chunks = streamed(anthropic_backend(), asking("claude-test", tools=(WEATHER, CLOCK)), stub.url)
    assert "".join(c.text for c in chunks) == "Let me check.", "a tool's input is never streamed as text"
    assert all(not c.tool_calls for c in chunks[:-1])
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), ToolCall("toolu_2", "get_time", "{}"))


def test_anthropic_client_tools_are_not_overridden_by_a_forced_answer_tool(stub: StubServer) -> None:
    """A JSON call forces its answer tool; a call with tools of its own must leave the model free to call them."""
    stub.route("POST", MESSAGES, anthropic_message())
    request = asking("claude-test", tools=(WEATHER,), json_output=JsonOutput({"type": "object"}, "answer"))
    call(anthropic_backend(), lambda b: b.chat(request, stub.url))
    body = stub.requests[-1].json
    assert [t["name"] for t in body["tools"]] == ["get_weather"] and "tool_choice" not in body


# ---- Ollama -----------------------------------------------------------------------------------

OLLAMA_CHAT = "/api/chat"


def test_ollama_sends_options_tools_and_tool_turns_in_its_shape(stub: StubServer) -> None:
    stub.route("POST", OLLAMA_CHAT, ollama_chat())
    request = ChatRequest(model="llama3", messages=ROUND, top_p=0.5, seed=3, stop=("END",), tools=(WEATHER,), tool_choice="auto")
    call(ollama_backend(), lambda b: b.chat(request, stub.url))
    body = stub.requests[-1].json
    assert body["options"] == {"top_p": 0.5, "seed": 3, "stop": ["END"]}
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": WEATHER.description, "parameters": dict(WEATHER.parameters)}}]
    assert body["messages"][2:5] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            ],
        },
        {"role": "tool", "content": "18C, sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "24C, cloudy", "tool_name": "get_weather"},
    ]


def test_ollama_chat_reads_tool_calls_and_numbers_the_ids_it_does_not_give(stub: StubServer) -> None:
    stub.route("POST", OLLAMA_CHAT, ollama_tool_calls([("get_weather", {"city": "Paris"}), ("get_time", {})]))
    response = call(ollama_backend(), lambda b: b.chat(asking("llama3", tools=(WEATHER, CLOCK)), stub.url))
    assert response.tool_calls == (ToolCall("call_0", "get_weather", '{"city": "Paris"}'), ToolCall("call_1", "get_time", "{}"))
    assert response.finish_reason == "tool_calls"


def test_ollama_stream_puts_the_calls_on_the_closing_chunk(stub: StubServer) -> None:
    stub.route("POST", OLLAMA_CHAT, ollama_tool_stream([("get_weather", {"city": "Rome"})]))
    chunks = streamed(ollama_backend(), asking("llama3", tools=(WEATHER,)), stub.url)
    assert (chunks[-1].finish_reason, chunks[-1].tool_calls) == ("tool_calls", (ToolCall("call_0", "get_weather", '{"city": "Rome"}'),))


@pytest.mark.parametrize("choice", ["required", "none", "get_weather"])
def test_ollama_refuses_a_tool_choice_it_cannot_honour_before_sending(stub: StubServer, choice: str) -> None:
    with pytest.raises(BadRequest, match=f"cannot honour tool_choice '{choice}'"):
        call(ollama_backend(), lambda b: b.chat(asking("llama3", tools=(WEATHER,), tool_choice=choice), stub.url))
    assert stub.requests == []


# ---- Fields a type does not take --------------------------------------------------------------

FIELDS = {
    "top_p": {"top_p": 0.9},
    "seed": {"seed": 1},
    "stop": {"stop": ("END",)},
    "tools": {"tools": (WEATHER,)},
}


def test_anthropic_declares_only_the_fields_its_sdk_sends() -> None:
    assert anthropic_backend().kind.request_fields == {"stop", "tools"}


@pytest.mark.parametrize("field", ["top_p", "seed"])
@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
def test_anthropic_refuses_sampling_fields_before_anything_is_sent(stub: StubServer, field: str, streaming: bool) -> None:
    request = asking("claude-test", **FIELDS[field])
    action = (lambda b: drain(b.stream(request, stub.url))) if streaming else (lambda b: b.chat(request, stub.url))
    with pytest.raises(BadRequest, match=f"backend 'claude' \\(type anthropic\\) does not take {field}"):
        call(anthropic_backend(), action)
    assert stub.requests == []


@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_every_adapter_refuses_a_field_its_type_does_not_declare(stub: StubServer, wire: Wire, field: str) -> None:
    """One check serves every adapter: a type that declared nothing takes none of the fields."""
    adapter = wire.make()
    adapter.kind = replace(adapter.kind, request_fields=frozenset())
    request = replace(wire.request, **FIELDS[field])
    with pytest.raises(BadRequest, match=f"does not take {field}") as caught:
        call(adapter, lambda b: b.chat(request, stub.url))
    assert caught.value.backend == adapter.name and adapter.kind.name in str(caught.value)
    assert stub.requests == []


@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
@pytest.mark.parametrize("arguments", ["[1, 2]", "{not json"])
def test_tool_call_arguments_that_are_no_object_are_refused_before_sending(stub: StubServer, wire: Wire, arguments: str) -> None:
    """Anthropic and Ollama carry arguments as an object; one check keeps every protocol to that."""
    broken = Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", arguments),))
    request = replace(wire.request, messages=(*wire.request.messages, broken, Message("tool", "x", tool_call_id="call_1")))
    with pytest.raises(BadRequest, match="arguments of tool call 'call_1' \\(get_weather\\) are not a JSON object"):
        call(wire.make(), lambda b: b.chat(request, stub.url))
    assert stub.requests == []


def test_a_conversation_with_tool_turns_needs_a_type_that_takes_tools(stub: StubServer) -> None:
    adapter = openai_backend("llamacpp")
    adapter.kind = replace(adapter.kind, request_fields=frozenset({"stop"}))
    with pytest.raises(BadRequest, match="does not take tools"):
        call(adapter, lambda b: b.chat(ChatRequest(model="m", messages=ROUND), stub.url))
    assert stub.requests == []


# ---- The response cache -----------------------------------------------------------------------


def cached_calls(stub: StubServer, tmp_path: Path, options: ChatOptions, *, streaming: bool, times: int = 2) -> int:
    """`times` identical calls through the response cache in front of a real router; returns the answers it kept."""
    from dse.config import load_config
    from dse.routing import Intent, Router
    from dse.spend import CachedCaller, ResponseCache

    path = tmp_path / "config.yaml"
    path.write_text(f"llm:\n  backend: s\n  cache: on\n  s: {{type: llamacpp, base_url: '{stub.url}', models: {{generator: m}}}}\n")
    config = load_config(path, environ={})
    cache = ResponseCache(tmp_path / "cache.db")

    async def main() -> None:
        router = Router(config)
        caller = CachedCaller(router, cache)
        target = replace(router.resolver.resolve(Intent("a", model_key="generator")).target, temperature=0.0)
        try:
            for _ in range(times):
                if streaming:
                    await drain(caller.stream(target, [Message("user", "Weather in Paris?")], options=options))
                else:
                    await caller.chat(target, [Message("user", "Weather in Paris?")], options=options)
        finally:
            await router.aclose()

    asyncio.run(main())
    try:
        return cache.stats().entries
    finally:
        cache.close()


PARIS_CALL = [("call_a", "get_weather", ['{"city": "Paris"}'])]
CACHE_CASES = {
    "tools offered, a call answered": (ChatOptions(tools=(WEATHER,)), openai_tool_calls(PARIS_CALL), openai_tool_stream(PARIS_CALL)),
    "tools offered, text answered": (ChatOptions(tools=(WEATHER,)), openai_chat("sunny"), openai_stream(["sunny"])),
    "no tools offered, a call answered anyway": (ChatOptions(), openai_tool_calls(PARIS_CALL), openai_tool_stream(PARIS_CALL)),
}


@pytest.mark.parametrize("case", sorted(CACHE_CASES))
@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
def test_tool_calls_are_never_answered_from_the_cache_nor_kept(stub: StubServer, tmp_path: Path, case: str, streaming: bool) -> None:
    """A tool call asks the client to act now: answered from the cache, the action would be skipped or stale."""
    options, whole, stream = CACHE_CASES[case]
    stub.route("POST", OPENAI_CHAT, stream if streaming else whole)
    kept = cached_calls(stub, tmp_path, options, streaming=streaming)
    sent = stub.calls("POST", OPENAI_CHAT)
    assert (len(sent), kept) == (2, 0), "both calls reached the server and nothing was kept"
    assert all(len(r.json.get("tools", ())) == len(options.tools) for r in sent), "the options reached the wire"


def test_options_are_part_of_the_cache_key(stub: StubServer, tmp_path: Path) -> None:
    stub.route("POST", OPENAI_CHAT, openai_chat("sunny"))
    assert cached_calls(stub, tmp_path, ChatOptions(seed=1), streaming=False) == 1
    assert len(stub.requests) == 1, "the same options: the second call was a hit"
    assert cached_calls(stub, tmp_path, ChatOptions(seed=2), streaming=False, times=1) == 2
    assert [r.json["seed"] for r in stub.requests] == [1, 2], "other options: a miss, sent with its own seed"
