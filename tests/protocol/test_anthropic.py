"""The Anthropic adapter against a real HTTP stub: system placement, max_tokens, events, 529, no embeddings."""

from __future__ import annotations

import time

import pytest
from stubs import (
    Reply,
    StubServer,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    call,
    drain,
    refused_url,
    sse,
)

from dse.backends import AnthropicBackend, ChatRequest, Message, StreamChunk, Usage, collect
from dse.config.model import BackendConfig, Secret
from dse.errors import (
    AuthError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    RateLimited,
)

KEY = "sk-ant-test-NEVER-SHOW-77e1"
REQUEST = ChatRequest(
    model="claude-test",
    messages=(Message("system", "Be brief."), Message("user", "Say hello")),
    temperature=0.3,
)
MESSAGES = "/v1/messages"


def backend(timeout: float = 5.0) -> AnthropicBackend:
    return AnthropicBackend(
        BackendConfig(name="claude", type="anthropic", api_key=Secret(KEY), api_key_env="ANTHROPIC_API_KEY", timeout=timeout)
    )


def test_chat_puts_system_in_its_own_parameter_and_defaults_max_tokens(stub: StubServer) -> None:
    reply = anthropic_message(usage=(12, 4))
    reply.json["content"] = [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]
    reply.json["usage"]["cache_read_input_tokens"] = 30
    stub.route("POST", MESSAGES, reply)
    response = call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert response.text == "Hello there"
    assert response.usage == Usage(42, 4), "cached prompt tokens are still prompt tokens"
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


def test_stream_yields_text_deltas_then_usage_from_start_and_delta(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_stream(["Hel", "lo"], usage=(9, 2), stop="max_tokens", chunk_delay=0.02))
    chunks = call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].finish_reason == "max_tokens" and chunks[-1].usage == Usage(9, 2)
    assert all(c.finish_reason is None for c in chunks[:-1])
    [sent] = stub.requests
    assert sent.json["stream"] is True and sent.json["system"] == "Be brief."


def test_collect_measures_time_to_first_token(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_stream(["Hel", "lo"], chunk_delay=0.02))
    response = call(backend(), lambda b: collect(b, REQUEST, stub.url))
    assert response.text == "Hello" and response.usage == Usage(7, 3)
    assert response.time_to_first_token is not None and 0 < response.time_to_first_token < response.latency


@pytest.mark.parametrize("status", [429, 529])
def test_429_and_529_overloaded_are_rate_limited_with_retry_after(stub: StubServer, status: int) -> None:
    kind = "rate_limit_error" if status == 429 else "overloaded_error"
    stub.route("POST", MESSAGES, anthropic_error(status, "Overloaded", kind=kind, headers={"retry-after": "7"}))
    with pytest.raises(RateLimited) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert caught.value.retry_after == 7.0
    assert (caught.value.backend, caught.value.endpoint) == ("claude", stub.url)
    assert len(stub.requests) == 1, "SDK retries must be off: the router owns retries"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable_after_one_request(stub: StubServer, status: int) -> None:
    stub.route("POST", MESSAGES, anthropic_error(status, "Internal server error", kind="api_error"))
    with pytest.raises(BackendUnavailable) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert type(caught.value) is BackendUnavailable and str(status) in str(caught.value)
    assert len(stub.requests) == 1


def test_an_overloaded_event_inside_a_stream_is_rate_limited(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, sse(("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})))
    with pytest.raises(RateLimited):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))


def test_an_answer_slower_than_the_timeout_is_a_timeout(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, Reply(json={}, delay=2.0))
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        call(backend(timeout=0.2), lambda b: b.chat(REQUEST, stub.url))
    assert time.monotonic() - started < 1.5 and len(stub.requests) == 1


def test_a_stall_mid_stream_is_a_timeout(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_stream(["a", "b"], chunk_delay=1.0))
    with pytest.raises(BackendTimeout):
        call(backend(timeout=0.2), lambda b: drain(b.stream(REQUEST, stub.url)))


def test_connection_refused_is_unavailable() -> None:
    url = refused_url()
    with pytest.raises(BackendUnavailable) as caught:
        call(backend(), lambda b: b.chat(REQUEST, url))
    assert caught.value.endpoint == url


@pytest.mark.parametrize("cut", [{"cut_after": 4}, {"complete": False}])
def test_a_stream_without_message_stop_raises(stub: StubServer, cut: dict[str, object]) -> None:
    stub.route("POST", MESSAGES, anthropic_stream(["Hel", "lo"], **cut))  # type: ignore[arg-type]
    got: list[StreamChunk] = []
    with pytest.raises(BackendUnavailable, match="broke off"):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url), got))
    assert got and all(c.finish_reason is None for c in got)
    assert "".join(c.text for c in got) in ("Hel", "Hello")


def test_a_bad_key_names_the_variable_and_never_the_key(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_error(401, f"invalid x-api-key {KEY}", kind="authentication_error"))
    with pytest.raises(AuthError) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caught.value.message, caught.value.hint or ""):
        assert KEY not in text


def test_an_unknown_model_is_model_not_found(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_error(404, "model: claude-test", kind="not_found_error"))
    with pytest.raises(ModelNotFound, match="check the model id 'claude-test'"):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))


def test_a_prompt_too_long_is_context_too_long(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_error(400, "prompt is too long: 208310 tokens > 200000 maximum"))
    with pytest.raises(ContextTooLong):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))


def test_other_4xx_are_bad_requests(stub: StubServer) -> None:
    stub.route("POST", MESSAGES, anthropic_error(400, "messages: roles must alternate"))
    with pytest.raises(BadRequest, match="alternate"):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))


def test_embed_says_where_embeddings_come_from_without_a_request(stub: StubServer) -> None:
    with pytest.raises(BadRequest, match="Anthropic offers no embedding models; use openai or ollama for embeddings"):
        call(backend(), lambda b: b.embed(["text"], "claude-test", stub.url))
    assert stub.requests == []


def test_health_gets_v1_models_and_any_answer_is_reachable(stub: StubServer) -> None:
    stub.route("GET", "/v1/models", Reply(json={"data": []}), anthropic_error(401, "bad key", kind="authentication_error"))
    ready = call(backend(), lambda b: b.health(stub.url))
    refused = call(backend(), lambda b: b.health(stub.url))
    unreachable = call(backend(), lambda b: b.health(refused_url()))
    assert ready.reachable and ready.ready
    assert refused.reachable and not refused.ready and "ANTHROPIC_API_KEY" in refused.detail
    assert not unreachable.reachable and unreachable.detail
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
