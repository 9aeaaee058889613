"""Both SDK-based adapters against one real llama-server: real text, real token counts, real limits.

llama.cpp speaks the OpenAI protocol and Anthropic's `/v1/messages`, so one small server checks
that what the stubs script is what a real server sends: the same request goes to the real server
and to a StubServer answering with tests/stubs.py's builder, over the same HTTP client, and the
two answers must have the same shape (keys and JSON types), the same stream event sequence and
the same error bodies. A builder that drifts from the protocol fails here, not in production.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from stubs import (
    Reply,
    StubServer,
    anthropic_message,
    anthropic_stream,
    call,
    drain,
    openai_chat,
    openai_error,
    openai_stream,
)

from dse.backends import AnthropicBackend, ChatRequest, LlamaCppBackend, Message
from dse.config.model import BackendConfig, ManagedSettings
from dse.errors import BadRequest, ContextTooLong
from dse.local.servers import LocalCluster

pytestmark = pytest.mark.integration

SETTINGS = ManagedSettings(replicas=1, parallel=2)
REQUEST = ChatRequest(
    model="smollm2",
    messages=(Message("system", "You answer in one short sentence."), Message("user", "Name one fruit.")),
    temperature=0.0,
    max_tokens=16,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = LocalCluster("real", SETTINGS, Path(tmp_path_factory.mktemp("logs")))
    [url] = asyncio.run(cluster.start())
    try:
        yield url
    finally:
        cluster.stop()


def openai() -> LlamaCppBackend:
    return LlamaCppBackend(BackendConfig(name="llama", type="llamacpp", timeout=60))


def anthropic() -> AnthropicBackend:
    return AnthropicBackend(BackendConfig(name="claude-shaped", type="anthropic", timeout=60))


def test_openai_chat_returns_real_text_and_token_counts(server: str) -> None:
    response = call(openai(), lambda b: b.chat(REQUEST, server))
    assert response.text.strip()
    assert response.usage.prompt_tokens > 5 and 0 < response.usage.completion_tokens <= 16
    assert response.finish_reason in ("stop", "length") and response.model == "smollm2"


def test_openai_stream_ends_with_finish_and_usage(server: str) -> None:
    chunks = call(openai(), lambda b: drain(b.stream(REQUEST, server)))
    assert "".join(c.text for c in chunks).strip()
    last = chunks[-1]
    assert last.text == "" and last.finish_reason in ("stop", "length")
    assert last.usage is not None and last.usage.prompt_tokens > 5 and last.usage.completion_tokens == len(chunks) - 1
    assert 0 < chunks[0].elapsed <= last.elapsed


def test_openai_health_models_and_context_limit(server: str) -> None:
    async def ask(backend: LlamaCppBackend) -> tuple:
        return (
            await backend.health(server),
            await backend.list_models(server),
            await backend.context_limit("smollm2", server),
        )

    health, models, limit = call(openai(), ask)
    assert health.reachable and health.ready and not health.loading
    assert [m.name for m in models] == ["smollm2"] and models[0].context_window == SETTINGS.ctx_size
    assert limit == SETTINGS.ctx_size, "each of the parallel slots gets ctx_size tokens"


def test_a_real_prompt_too_long_is_context_too_long(server: str) -> None:
    request = ChatRequest(model="smollm2", messages=(Message("user", "apple " * (SETTINGS.ctx_size + 500)),), max_tokens=4)
    with pytest.raises(ContextTooLong) as caught:
        call(openai(), lambda b: b.chat(request, server))
    assert caught.value.endpoint == server


def test_a_real_prompt_too_long_on_the_messages_api_is_context_too_long(server: str) -> None:
    """llama.cpp answers /v1/messages errors in OpenAI's shape, not Anthropic's: the adapter copes with both."""
    request = ChatRequest(model="smollm2", messages=(Message("user", "apple " * (SETTINGS.ctx_size + 500)),), max_tokens=4)
    with pytest.raises(ContextTooLong):
        call(anthropic(), lambda b: b.chat(request, server))


def test_anthropic_messages_chat_and_stream(server: str) -> None:
    response = call(anthropic(), lambda b: b.chat(REQUEST, server))
    assert response.text.strip()
    assert response.usage.prompt_tokens > 5 and 0 < response.usage.completion_tokens <= 16
    assert response.finish_reason in ("end_turn", "length"), "Anthropic's max_tokens is reported as length"
    chunks = call(anthropic(), lambda b: drain(b.stream(REQUEST, server)))
    assert "".join(c.text for c in chunks).strip()
    last = chunks[-1]
    assert last.finish_reason in ("end_turn", "length")
    assert last.usage is not None and last.usage.prompt_tokens > 5 and last.usage.completion_tokens > 0


def test_anthropic_health_models_and_no_embeddings(server: str) -> None:
    health = call(anthropic(), lambda b: b.health(server))
    assert health.reachable and health.ready
    assert [m.name for m in call(anthropic(), lambda b: b.list_models(server))] == ["smollm2"]
    assert call(anthropic(), lambda b: b.context_limit("smollm2", server)) is None, "llama.cpp has no model pages"
    with pytest.raises(BadRequest, match="no embedding models"):
        call(anthropic(), lambda b: b.embed(["x"], "smollm2", server))


# ---- the stubs against the real server -------------------------------------------------------

# Keys llama.cpp adds to the protocols: its own extensions, which no client may rely on, so the
# stubs leave them out. Everything else a real answer carries, the stub's answer must carry too.
LLAMACPP_ONLY = {"timings", "system_fingerprint", "prompt_tokens_details", "cache_read_input_tokens", "n_prompt_tokens", "n_ctx"}
# Events a protocol allows anywhere and clients skip; Anthropic's API sends `ping`, llama.cpp does not.
OPTIONAL_EVENTS = {"ping"}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name one fruit."}]
OPENAI_BODY = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 4, "temperature": 0}
OPENAI_STREAM_BODY = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}}
ANTHROPIC_BODY = {"model": "smollm2", "system": "Be brief.", "messages": MESSAGES[1:], "max_tokens": 4}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "unused"}


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: Any  # parsed JSON, or for a stream the list of (event name, parsed data or raw text)


def fetch(base: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    """POST `body` and read the answer the way every client does: JSON, or server-sent events."""
    with httpx.Client(base_url=base, timeout=60) as client, client.stream("POST", path, json=body, headers=headers) as reply:
        kind = reply.headers.get("content-type", "").split(";")[0]
        if kind != "text/event-stream":
            reply.read()
            return Answer(reply.status_code, kind, reply.json())
        events: list[tuple[str | None, Any]] = []
        name: str | None = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append((name, data if data == "[DONE]" else json.loads(data)))
                name = None
        return Answer(reply.status_code, kind, events)


def stubbed(reply: Reply, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    with StubServer() as stub:
        stub.route("POST", path, reply)
        return fetch(stub.url, path, body, headers)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def shape_differences(stub: Any, real: Any, where: str = "$") -> list[str]:
    """How `stub` differs from `real` in keys and JSON types; null stands in for any type (optional fields)."""
    stub_type, real_type = json_type(stub), json_type(real)
    if "null" in (stub_type, real_type):
        return []
    if stub_type != real_type:
        return [f"{where}: the stub sends {stub_type}, the real server {real_type}"]
    found: list[str] = []
    if isinstance(stub, dict):
        for key in stub.keys() - real.keys():
            found.append(f"{where}.{key}: the stub sends it, the real server does not")
        for key in real.keys() - stub.keys() - LLAMACPP_ONLY:
            found.append(f"{where}.{key}: the real server sends it, the stub does not")
        for key in stub.keys() & real.keys():
            found += shape_differences(stub[key], real[key], f"{where}.{key}")
    elif isinstance(stub, list) and stub and real:
        for item in stub:
            found += shape_differences(item, real[0], f"{where}[]")
    return found


def assert_same_shape(stub: Answer, real: Answer) -> None:
    assert (stub.status, stub.content_type) == (real.status, real.content_type)
    assert shape_differences(stub.body, real.body) == []


def openai_kind(event: tuple[str | None, Any]) -> str:
    _, data = event
    if data == "[DONE]":
        return "done"
    if not data["choices"]:
        return "usage" if data.get("usage") else "empty"
    choice = data["choices"][0]
    if choice["finish_reason"] is not None:
        return "finish"
    return "role" if "role" in choice["delta"] else "text"


def anthropic_kind(event: tuple[str | None, Any]) -> str:
    name, data = event
    assert name == data["type"], "an Anthropic event is named after its data's type"
    return name


def sequence(events: list[tuple[str | None, Any]], kind: Callable[[tuple[str | None, Any]], str]) -> list[str]:
    """Event kinds in order, a run of text deltas counted once, optional events left out."""
    kinds: list[str] = []
    for event in events:
        k = kind(event)
        if k not in OPTIONAL_EVENTS and not (kinds and k == kinds[-1] and k in ("text", "content_block_delta")):
            kinds.append(k)
    return kinds


def assert_same_stream(stub: Answer, real: Answer, kind: Callable[[tuple[str | None, Any]], str]) -> None:
    assert (stub.status, stub.content_type) == (real.status, real.content_type) == (200, "text/event-stream")
    assert sequence(stub.body, kind) == sequence(real.body, kind)
    real_by_kind = {kind(e): e for e in real.body}
    for event in stub.body:
        if kind(event) in real_by_kind:
            name, data = event
            assert name == real_by_kind[kind(event)][0], kind(event)
            assert shape_differences(data, real_by_kind[kind(event)][1], kind(event)) == []


def test_the_openai_chat_stub_has_the_shape_of_a_real_answer(server: str) -> None:
    path = "/v1/chat/completions"
    real = fetch(server, path, OPENAI_BODY)
    assert_same_shape(stubbed(openai_chat("Apple.", model="smollm2", finish="length"), path, OPENAI_BODY), real)
    assert real.body["object"] == "chat.completion" and real.body["choices"][0]["message"]["role"] == "assistant"


def test_the_openai_stream_stub_sends_the_events_a_real_server_sends(server: str) -> None:
    path = "/v1/chat/completions"
    real = fetch(server, path, OPENAI_STREAM_BODY)
    stub = stubbed(openai_stream(["Ap", "ple"], model="smollm2", finish="length"), path, OPENAI_STREAM_BODY)
    assert sequence(real.body, openai_kind) == ["role", "text", "finish", "usage", "done"]
    assert_same_stream(stub, real, openai_kind)


def test_the_anthropic_message_stub_has_the_shape_of_a_real_answer(server: str) -> None:
    path = "/v1/messages"
    real = fetch(server, path, ANTHROPIC_BODY, ANTHROPIC_HEADERS)
    stub = stubbed(anthropic_message("Apple.", model="smollm2", stop="max_tokens"), path, ANTHROPIC_BODY, ANTHROPIC_HEADERS)
    assert_same_shape(stub, real)
    assert real.body["type"] == "message" and real.body["content"][0]["type"] == "text"


def test_the_anthropic_stream_stub_sends_the_events_a_real_server_sends(server: str) -> None:
    path = "/v1/messages"
    body = {**ANTHROPIC_BODY, "stream": True}
    real = fetch(server, path, body, ANTHROPIC_HEADERS)
    stub = stubbed(anthropic_stream(["Ap", "ple"], model="smollm2", stop="max_tokens"), path, body, ANTHROPIC_HEADERS)
    assert sequence(real.body, anthropic_kind) == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"
    ]
    assert_same_stream(stub, real, anthropic_kind)


def test_the_openai_error_stub_is_the_error_a_real_server_sends_for_a_bad_request(server: str) -> None:
    path = "/v1/chat/completions"
    bad = {"model": "smollm2", "messages": "not a list"}
    real = fetch(server, path, bad)
    stub = stubbed(openai_error(400, "Expected 'messages' to be an array"), path, bad)
    assert_same_shape(stub, real)
    assert stub.body["error"]["type"] == real.body["error"]["type"] == "invalid_request_error"


def test_the_too_long_stub_is_the_error_a_real_server_sends(server: str) -> None:
    """tests/protocol/wire.py scripts llama.cpp's prompt-too-long answer this way; the real one must match it."""
    path = "/v1/chat/completions"
    long = {"model": "smollm2", "messages": [{"role": "user", "content": "apple " * (SETTINGS.ctx_size + 500)}], "max_tokens": 4}
    real = fetch(server, path, long)
    message = "request (3031 tokens) exceeds the available context size (2048 tokens), try increasing it"
    stub = stubbed(openai_error(400, message, kind="exceed_context_size_error"), path, long)
    assert_same_shape(stub, real)
    assert real.body["error"]["type"] == stub.body["error"]["type"]
    pattern = r"request \(\d+ tokens\) exceeds the available context size \(\d+ tokens\), try increasing it"
    assert re.fullmatch(pattern, real.body["error"]["message"]) and re.fullmatch(pattern, message)
    assert real.body["error"]["n_ctx"] == SETTINGS.ctx_size


def test_shape_comparison_catches_a_drifted_stub() -> None:
    """The comparison itself: a renamed key, a wrong type or a dropped key is a difference."""
    real = {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1}, "timings": {}}
    assert shape_differences({"choices": [{"message": {"content": "y"}}], "usage": {"prompt_tokens": 2}}, real) == []
    assert shape_differences({"choices": [{"message": {"text": "y"}}], "usage": {"prompt_tokens": 2}}, real)
    assert shape_differences({"choices": [{"message": {"content": 1}}], "usage": {"prompt_tokens": 2}}, real)
    assert shape_differences({"choices": [{"message": {"content": "y"}}]}, real)
