"""`output: json` as a constraint on the wire: each protocol carries the step's schema, and an answer that meets it takes one call.

A step's JSON Schema (or a DiSE tool's `output_schema`) goes to the server where its backend type
declares it can hold an answer to one: OpenAI-compatible servers get `response_format` (llama.cpp
and vLLM compile it to a grammar), Ollama gets `format`, Anthropic a single forced tool whose input
is the answer. Types that cannot keep the old path: the answer is checked and repaired once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from stubs import Reply, StubServer, anthropic_message, ollama_chat, openai_chat, openai_stream, sse

from dse.backends import backend_type
from dse.backends.types import JsonOutput
from dse.backends.openai_compat import strict_schema
from dse.backends.registry import JSON_OBJECT, JSON_SCHEMA
from dse.runner import prepare, run_workflow

SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["trivial", "substantive"]}}, "required": ["verdict"]}
ANSWER = '{"verdict": "trivial"}'
JUDGE = (
    "name: judge\nsteps:\n  - id: judge\n    prompt: 'Is renaming a variable trivial? Answer in JSON.'\n"
    f"    output: json\n    output_schema: {json.dumps(SCHEMA)}\n"
    "outputs: {verdict: '{{ steps.judge.output.verdict }}'}\n"
)
ANY_JSON = "name: any\nsteps:\n  - id: judge\n    prompt: 'Give me a JSON object with a verdict.'\n    output: json\n"
PLAIN = "name: plain\nsteps:\n  - id: judge\n    prompt: 'Say hi.'\n"

# type -> (chat path on the stub, a schema-valid answer in that protocol)
PATHS = {
    "llamacpp": ("/v1/chat/completions", openai_chat(ANSWER)),
    "vllm": ("/v1/chat/completions", openai_chat(ANSWER)),
    "openai": ("/v1/chat/completions", openai_chat(ANSWER)),
    "lmstudio": ("/v1/chat/completions", openai_chat(ANSWER)),
    "ollama": ("/api/chat", ollama_chat(ANSWER)),
}


def tool_use(value: Any, name: str = "judge", stop: str = "tool_use") -> Reply:
    """A Messages answer whose only content is a call of the tool `name` with `value` as its input."""
    reply = anthropic_message()
    reply.json["content"] = [{"type": "tool_use", "id": "toolu_stub", "name": name, "input": value}]
    reply.json["stop_reason"] = stop
    return reply


def config(kind: str, url: str) -> str:
    base = url if kind in ("ollama", "anthropic", "llamacpp") else f"{url}/v1"
    return f"llm:\n  backend: target\n  target:\n    type: {kind}\n    api_key: sk-stub\n    base_url: {base}\n    models: {{generator: m}}\n"


def run(write, tmp_path: Path, kind: str, url: str, workflow: str):
    prepared = prepare(write("wf.yaml", workflow), write("config.yaml", config(kind, url)))
    result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    return result


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_a_schema_goes_on_the_wire_and_a_valid_answer_takes_one_call(kind: str, stub: StubServer, write, tmp_path: Path) -> None:
    path, reply = PATHS[kind]
    stub.route("POST", path, reply)
    result = run(write, tmp_path, kind, stub.url, JUDGE)
    step = result.steps["judge"]
    assert result.status == "done", step.error
    assert step.output == {"verdict": "trivial"} and result.outputs == {"verdict": "trivial"}
    (sent,) = stub.calls("POST", path)
    assert step.calls == 1, "no repair call"
    body = sent.json
    if kind == "ollama":
        assert body["format"] == SCHEMA
    else:
        assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "judge", "schema": SCHEMA, "strict": False}}


def test_anthropic_gets_one_forced_tool_and_its_input_is_the_answer(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/messages", tool_use({"verdict": "substantive"}))
    result = run(write, tmp_path, "anthropic", stub.url, JUDGE)
    step = result.steps["judge"]
    assert result.status == "done", step.error
    assert step.output == {"verdict": "substantive"} and step.calls == 1
    (sent,) = stub.calls("POST", "/v1/messages")
    (tool,) = sent.json["tools"]
    assert tool["name"] == "judge" and tool["input_schema"] == SCHEMA
    assert sent.json["tool_choice"] == {"type": "tool", "name": "judge"}
    assert step.finish_reason == "tool_use" and not step.truncated


def test_anthropic_streams_the_tool_input_as_the_answer(stub: StubServer, write, tmp_path: Path) -> None:
    message = {"id": "msg_stub", "type": "message", "role": "assistant", "model": "claude-stub", "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 1}}
    block = {"type": "tool_use", "id": "toolu_stub", "name": "judge", "input": {}}
    stub.route("POST", "/v1/messages", sse(
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}})
          for part in ('{"verdict": ', '"trivial"}')],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 6}}),
        ("message_stop", {"type": "message_stop"}),
    ))
    result = run(write, tmp_path, "anthropic", stub.url, JUDGE.replace("    output: json\n", "    output: json\n    stream: true\n"))
    step = result.steps["judge"]
    assert result.status == "done", step.error
    assert step.output == {"verdict": "trivial"} and step.calls == 1
    assert stub.calls("POST", "/v1/messages")[0].json["tool_choice"]["name"] == "judge"


def test_a_streamed_step_carries_the_constraint_too(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_stream(['{"verdict"', ': "substantive"}']))
    result = run(write, tmp_path, "vllm", stub.url, JUDGE.replace("    output: json\n", "    output: json\n    stream: true\n"))
    assert result.steps["judge"].output == {"verdict": "substantive"} and result.steps["judge"].calls == 1
    (sent,) = stub.calls("POST", "/v1/chat/completions")
    assert sent.json["stream"] is True and sent.json["response_format"]["json_schema"]["schema"] == SCHEMA


@pytest.mark.parametrize(
    ("kind", "path", "reply", "key", "value"),
    [
        ("llamacpp", "/v1/chat/completions", openai_chat(ANSWER), "response_format", {"type": "json_object"}),
        ("ollama", "/api/chat", ollama_chat(ANSWER), "format", "json"),
    ],
)
def test_json_without_a_schema_asks_for_any_json(kind: str, path: str, reply: Reply, key: str, value: Any, stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", path, reply)
    result = run(write, tmp_path, kind, stub.url, ANY_JSON)
    assert result.steps["judge"].output == {"verdict": "trivial"}
    (sent,) = stub.calls("POST", path)
    assert sent.json[key] == value


def test_anthropic_json_without_a_schema_is_not_constrained(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/messages", anthropic_message(ANSWER))
    result = run(write, tmp_path, "anthropic", stub.url, ANY_JSON)
    assert result.steps["judge"].output == {"verdict": "trivial"}
    (sent,) = stub.calls("POST", "/v1/messages")
    assert "tools" not in sent.json and "tool_choice" not in sent.json


def test_a_json_object_constraint_needs_the_word_json_in_a_message(stub: StubServer, write, tmp_path: Path) -> None:
    """OpenAI refuses `json_object` unless a message says JSON; then the check and repair are all there is."""
    stub.route("POST", "/v1/chat/completions", openai_chat(ANSWER))
    run(write, tmp_path, "openai", stub.url, ANY_JSON.replace("Give me a JSON object", "Give me an object"))
    (sent,) = stub.calls("POST", "/v1/chat/completions")
    assert "response_format" not in sent.json


@pytest.mark.parametrize(("kind", "path", "reply"), [("llamacpp", "/v1/chat/completions", openai_chat("hi")), ("ollama", "/api/chat", ollama_chat("hi")), ("anthropic", "/v1/messages", anthropic_message("hi"))])
def test_a_text_step_sends_no_constraint(kind: str, path: str, reply: Reply, stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", path, reply)
    assert run(write, tmp_path, kind, stub.url, PLAIN).steps["judge"].output == "hi"
    (sent,) = stub.calls("POST", path)
    assert not {"response_format", "format", "tools", "tool_choice"} & set(sent.json)


def test_a_type_that_cannot_constrain_keeps_the_check_and_the_repair(stub: StubServer, write, tmp_path: Path) -> None:
    assert not backend_type("tabbyapi").structured_output
    stub.route("POST", "/v1/chat/completions", openai_chat('{"verdict": "maybe"}'), openai_chat(ANSWER))
    result = run(write, tmp_path, "tabbyapi", stub.url, JUDGE)
    step = result.steps["judge"]
    assert step.output == {"verdict": "trivial"} and step.calls == 2, "the answer off the schema was repaired once"
    first, repair = stub.calls("POST", "/v1/chat/completions")
    assert "response_format" not in first.json and "response_format" not in repair.json
    assert "does not match output_schema" in repair.json["messages"][-1]["content"]


def test_the_repair_stays_as_the_safety_net_where_the_server_ignores_the_constraint(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat("Sure: trivial"), openai_chat(ANSWER))
    result = run(write, tmp_path, "llamacpp", stub.url, JUDGE)
    step = result.steps["judge"]
    assert step.output == {"verdict": "trivial"} and step.calls == 2
    first, repair = stub.calls("POST", "/v1/chat/completions")
    assert first.json["response_format"] == repair.json["response_format"], "the repair call is held to the schema too"


def test_a_dise_tools_output_schema_is_the_constraint(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat('{"verdict": "pass"}'))
    tool_schema = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["pass", "fail"]}}, "required": ["verdict"], "additionalProperties": False}
    text = config("openai", stub.url) + f"tools:\n  checker:\n    llm: {{model_key: generator}}\n    prompt: 'Check it.'\n    output_schema: {json.dumps(tool_schema)}\n"
    prepared = prepare(write("wf.yaml", "name: t\nsteps:\n  - id: check\n    tool: checker\n"), write("config.yaml", text))
    result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    assert result.steps["check"].output == {"verdict": "pass"} and result.steps["check"].calls == 1
    (sent,) = stub.calls("POST", "/v1/chat/completions")
    assert sent.json["response_format"]["json_schema"] == {"name": "check", "schema": tool_schema, "strict": True}, "a closed schema is strict"


def test_strict_mode_only_for_schemas_openai_takes_in_it() -> None:
    closed = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    assert strict_schema(closed)
    assert not strict_schema(SCHEMA), "open: additionalProperties not false"
    assert not strict_schema({**closed, "required": []}), "an optional property"
    assert not strict_schema({"type": "array", "items": closed}), "not an object at the top"
    nested = {**closed, "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]}}}
    assert not strict_schema(nested), "an open object inside"
    assert strict_schema({**closed, "properties": {"a": {"type": "array", "items": closed}}})


def test_the_capability_is_declared_with_the_type() -> None:
    able = {kind: backend_type(kind).structured_output for kind in ("openai", "azure", "llamacpp", "vllm", "ollama", "lmstudio", "anthropic", "tabbyapi", "foundry", "openrouter")}
    assert all(JSON_SCHEMA in able[k] and JSON_OBJECT in able[k] for k in ("openai", "azure", "llamacpp", "vllm", "ollama"))
    assert able["lmstudio"] == {JSON_SCHEMA} and able["anthropic"] == {JSON_SCHEMA}
    assert not (able["tabbyapi"] or able["foundry"] or able["openrouter"])


def test_a_long_step_id_becomes_a_name_every_protocol_accepts(stub: StubServer, write, tmp_path: Path) -> None:
    """Step ids are letters, digits, `_` and `-` already; OpenAI and Anthropic also cap a name at 64."""
    stub.route("POST", "/v1/chat/completions", openai_chat(ANSWER))
    long_id = "judge_" + "x" * 70
    run(write, tmp_path, "vllm", stub.url, JUDGE.replace("id: judge", f"id: {long_id}").replace("steps.judge.", f"steps.{long_id}."))
    (sent,) = stub.calls("POST", "/v1/chat/completions")
    assert sent.json["response_format"]["json_schema"]["name"] == long_id[:64]
    assert JsonOutput.named("a b/c").name == "a_b_c" and JsonOutput.named("").name == "answer"
