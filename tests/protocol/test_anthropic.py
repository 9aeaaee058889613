"""The Anthropic adapter against a real HTTP stub: system placement, max_tokens, no embeddings, the models API.

Failures every protocol maps the same way, Anthropic's 529 and its in-stream error events among
them, are in test_failures_every_protocol.py; the Anthropic row they run with is `wire.ANTHROPIC`.
"""

from __future__ import annotations

import pytest
from stubs import Reply, StubServer, anthropic_error, anthropic_message, call
from wire import ANTHROPIC
from wire import anthropic_backend as backend

from dse.backends import ChatRequest, Message, Usage
from dse.errors import BadRequest

KEY, REQUEST, MESSAGES = ANTHROPIC.key, ANTHROPIC.request, ANTHROPIC.chat_path


def test_chat_puts_system_in_its_own_parameter_and_defaults_max_tokens(stub: StubServer) -> None:
    reply = anthropic_message(usage=(12, 4))
    reply.json["content"] = [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]
    reply.json["usage"]["cache_read_input_tokens"] = 30
    stub.route("POST", MESSAGES, reply)
    response = call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert response.text == "Hello there"
    assert response.usage == Usage(42, 4, 30), "cached prompt tokens are still prompt tokens, and counted as cached (billed at the cached price)"
    assert response.finish_reason == "end_turn"
    assert (response.model, response.backend, response.endpoint) == ("claude-stub", "claude", stub.url)
    [sent] = stub.requests
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Say hello"}]
    assert sent.json["max_tokens"] == 1024
    assert "temperature" not in sent.json, "the API version the SDK speaks rejects sampling parameters"
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))


def test_chat_sends_the_requests_max_tokens_and_no_system_when_there_is_none(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_message())
    request = ChatRequest(model="claude-test", messages=(Message("user", "hi"),), max_tokens=64, stop=("END",))
    call(backend(), lambda b: b.chat(request, stub.url + "/v1"))
    [sent] = stub.requests
    assert sent.path == MESSAGES, "a base_url ending in /v1 is not doubled"
    assert sent.json["max_tokens"] == 64 and sent.json["stop_sequences"] == ["END"] and "system" not in sent.json


def test_embed_says_where_embeddings_come_from_without_a_request(stub: StubServer) -> None:
    with pytest.raises(BadRequest, match="Anthropic offers no embedding models; use openai or ollama for embeddings"):
        call(backend(), lambda b: b.embed(["text"], "claude-test", stub.url))
    assert stub.requests == []


def test_health_gets_v1_models_and_any_answer_is_reachable(stub: StubServer) -> None:
    stub.route("GET", "/v1/models", Reply(json={"data": []}), anthropic_error(401, "bad key", kind="authentication_error"))
    ready = call(backend(), lambda b: b.health(stub.url))
    refused = call(backend(), lambda b: b.health(stub.url))
    assert ready.reachable and ready.ready
    assert refused.reachable and not refused.ready and "ANTHROPIC_API_KEY" in refused.detail
    assert stub.requests[0].path == "/v1/models" and "anthropic-version" in stub.requests[0].headers


def test_list_models_and_context_limit_read_the_models_api(stub: StubServer) -> None:
    info = {
        "type": "model",
        "id": "claude-test",
        "display_name": "Claude Test",
        "created_at": "2025-01-01T00:00:00Z",
        "max_input_tokens": 200000,
    }
    stub.route("GET", "/v1/models", Reply(json={"data": [info], "has_more": False, "first_id": "claude-test", "last_id": "claude-test"}))
    stub.route("GET", "/v1/models/claude-test", Reply(json=info))
    models = call(backend(), lambda b: b.list_models(stub.url))
    assert [(m.name, m.context_window) for m in models] == [("claude-test", 200000)]
    assert call(backend(), lambda b: b.context_limit("claude-test", stub.url)) == 200000
    assert call(backend(), lambda b: b.context_limit("unknown", stub.url)) is None
