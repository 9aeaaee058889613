"""The gateway's pure parts: reading both protocols, writing what their SDKs parse, naming models, and who may connect.

The HTTP behaviour is tested against a running `dse serve` in tests/protocol/test_gateway*.py
and tests/integration/test_gateway_real.py; here each translation is checked on its own, and
generated bodies show that reading a request either succeeds or is a 400 naming a field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from dse.backends.types import ChatResponse, StreamChunk, ToolCall, Usage
from dse.config import load_config
from dse.errors import InputError
from dse.routing import Resolver
from dse.serve import anthropic_api, openai_api
from dse.serve.metrics import Histogram, Metrics
from dse.serve.names import ModelNames
from dse.serve.problems import Problem
from dse.serve.server import check_access

CALL = ToolCall("call_1", "weather", '{"city": "Oslo"}')


def test_an_openai_request_with_tools_and_tool_turns_reads_into_the_engines_call() -> None:
    call = openai_api.read_chat(
        {
            "model": "generator",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": "END", "max_completion_tokens": 50, "n": 1,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "stream": True, "stream_options": {"include_usage": True},
        }
    )
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "tool"]
    assert call.messages[1].content == "Weather in Oslo?" and call.messages[2].tool_calls == (CALL,)
    assert call.messages[3].tool_call_id == "call_1"
    assert (call.temperature, call.max_tokens, call.stream, call.include_usage) == (0.5, 50, True, True)
    options = call.options
    assert (options.top_p, options.seed, options.stop, options.tool_choice) == (0.9, 7, ("END",), "weather")
    assert [t.name for t in options.tools] == ["weather"] and call.json_output is not None and call.json_output.schema == {"type": "object"}


def test_an_anthropic_request_with_system_blocks_and_tool_results_reads_into_engine_turns() -> None:
    call = anthropic_api.read_messages(
        {
            "model": "generator",
            "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}, {"type": "text", "text": "And tomorrow?"}]},
            ],
            "stop_sequences": ["END"],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
        }
    )
    assert [(m.role, m.content) for m in call.messages] == [
        ("system", "Be brief."), ("user", "Weather in Oslo?"), ("assistant", "Checking."), ("tool", "sunny"), ("user", "And tomorrow?"),
    ]
    assert call.messages[2].tool_calls == (CALL,) and call.messages[3].tool_call_id == "call_1"
    assert (call.max_tokens, call.options.stop, call.options.tool_choice) == (64, ("END",), "required")


RESPONSE = ChatResponse("It is sunny.", "smollm2", "local", "http://e", Usage(12, 4), finish_reason="length", tool_calls=(CALL,))


def test_answers_are_what_each_sdk_parses() -> None:
    openai_answer = ChatCompletion.model_validate(openai_api.chat_answer(RESPONSE, "local:smollm2"))
    choice = openai_answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls and choice.message.tool_calls[0].function.name == "weather"
    assert openai_answer.model == "local:smollm2" and openai_answer.usage and openai_answer.usage.total_tokens == 16
    message = AnthropicMessage.model_validate(anthropic_api.message_answer(RESPONSE, "local:smollm2"))
    assert [block.type for block in message.content] == ["text", "tool_use"] and message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 4


def _sse_data(events: list[bytes]) -> list[Any]:
    return [json.loads(line[6:]) for event in events for line in event.decode().splitlines() if line.startswith("data: {")]


def test_streams_are_event_sequences_each_sdk_parses() -> None:
    chunks = [StreamChunk("It is "), StreamChunk("sunny."), StreamChunk("", finish_reason="stop", usage=Usage(12, 4), tool_calls=(CALL,))]
    writer = openai_api.ChatStream("local:smollm2", include_usage=True)
    events = [event for chunk in chunks for event in writer.events(chunk)]
    assert events[-1] == b"data: [DONE]\n\n"
    parsed = [ChatCompletionChunk.model_validate(data) for data in _sse_data(events)]
    text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
    assert text == "It is sunny." and parsed[-1].usage is not None and parsed[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in parsed if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    messages = anthropic_api.MessageStream("local:smollm2")
    anthropic_events = [TypeAdapter(RawMessageStreamEvent).validate_python(data) for data in _sse_data([e for c in chunks for e in messages.events(c)])]
    kinds = [event.type for event in anthropic_events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == 2, "the text block and the tool_use block"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, width=32) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    ["model", "messages", "max_tokens", "stream", "temperature", "top_p", "stop", "seed", "tools", "tool_choice", "response_format",
     "system", "stop_sequences", "stream_options", "n", "logprobs", "role", "content"]
)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "tool", "system", "x"]) | JSON}, optional={"content": JSON, "tool_calls": JSON, "tool_call_id": JSON})
BODY = st.dictionaries(FIELD_NAMES, JSON | st.lists(MESSAGE, max_size=3), max_size=6) | st.builds(
    lambda extra, messages: {"model": "m", "max_tokens": 5, "messages": messages, **extra},
    st.dictionaries(FIELD_NAMES, JSON, max_size=3),
    st.lists(MESSAGE, min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(BODY)
def test_any_body_either_reads_or_is_a_400_naming_what_is_wrong(body: dict[str, Any]) -> None:
    for read in (openai_api.read_chat, anthropic_api.read_messages):
        try:
            read(body)
        except Problem as problem:
            assert problem.status == 400 and problem.message


def test_an_unknown_model_is_a_404_with_the_closest_names(write: Callable[[str, str], Path]) -> None:
    config = load_config(write("c.yaml", "llm:\n  backend: local\n  local:\n    type: llamacpp\n    base_url: http://127.0.0.1:9\n    models: {generator: smollm2, triage: smollm2}\ntools:\n  reviewer: {type: llm, llm: {model_key: generator}}\n"), environ={})
    names = ModelNames(config, Resolver(config))
    assert {o.name for o in names.offers()} >= {"auto", "generator", "triage", "reviewer", "local:smollm2"}
    assert names.target("generator").role == "generator" and names.target("local:smollm2").backend == "local"
    assert "tool reviewer" in names.target("reviewer").rule and names.target("local").backend == "local"
    with pytest.raises(Problem) as raised:
        names.target("generater")
    assert raised.value.status == 404 and "'generator'" in raised.value.message and raised.value.param == "model"


def test_a_gateway_open_to_the_network_needs_keys_and_every_key_it_names(write: Callable[[str, str], Path]) -> None:
    base = "llm:\n  backend: local\n  local: {type: llamacpp, base_url: 'http://127.0.0.1:9'}\n"
    open_config = load_config(write("a.yaml", base), environ={})
    check_access(open_config, "127.0.0.1")
    with pytest.raises(InputError, match="without serve.api_keys"):
        check_access(open_config, "0.0.0.0")
    keyed = load_config(write("b.yaml", base + "serve:\n  api_keys: ['${GW_KEY}', '${GW_OTHER}']\n"), environ={"GW_KEY": "gw-secret-123456"})
    assert [s.reveal() for s in keyed.secrets] == ["gw-secret-123456"], "a gateway key is a secret: scrubbed from every output"
    short = load_config(write("s.yaml", base + "serve:\n  api_keys: ['a']\n"), environ={})
    assert not short.secrets, "a key shorter than any credential is not scrubbed, or every letter a of every output would be"
    with pytest.raises(InputError, match="GW_OTHER"):
        check_access(keyed, "0.0.0.0")
    blank = load_config(write("c.yaml", base + "serve:\n  api_keys: ['']\n"), environ={})
    with pytest.raises(InputError, match="empty key"):
        check_access(blank, "127.0.0.1")
    with pytest.raises(InputError, match="api_keys"):
        load_config(write("d.yaml", base + "serve:\n  api_keys: [' padded ']\n"), environ={})


def test_metrics_histograms_are_cumulative_and_overhead_is_the_gateways_own_time() -> None:
    histogram = Histogram()
    for seconds in (0.0004, 0.002, 0.002, 100.0):
        histogram.observe(seconds)
    lines = histogram.lines("x", "")
    assert 'x_bucket{le="0.0005"} 1' in lines and 'x_bucket{le="0.0025"} 3' in lines and 'x_bucket{le="+Inf"} 4' in lines
    metrics = Metrics(lambda: {("local", "http://u:pw@h"): 2}, lambda: {"http://u:pw@h": "open"}, lambda text: text.replace("u:pw@", ""))
    metrics.request("/v1/chat/completions", 200, 0.0105, upstream=0.010)
    text = metrics.render()
    assert "dse_overhead_seconds_count 1" in text and "dse_overhead_seconds_sum 0.000500" in text
    assert 'dse_in_flight{backend="local",endpoint="http://h"} 2' in text and 'dse_breaker_state{endpoint="http://h"} 2' in text
    assert "pw" not in text
