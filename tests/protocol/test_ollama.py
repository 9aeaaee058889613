"""The Ollama adapter against a real HTTP stub: native /api paths, NDJSON streams, `ollama pull` hints."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from stubs import (
    Reply,
    StubServer,
    call,
    drain,
    ndjson,
    ollama_chat,
    ollama_error,
    ollama_stream,
    refused_url,
)

from dse.backends import ChatRequest, Message, ModelEntry, OllamaBackend, StreamChunk, Usage, collect
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

REQUEST = ChatRequest(
    model="llama3",
    messages=(Message("system", "Be brief."), Message("user", "Say hello")),
    temperature=0.1,
    max_tokens=32,
)
CHAT = "/api/chat"


def backend(timeout: float = 5.0, key: str | None = None) -> OllamaBackend:
    return OllamaBackend(
        BackendConfig(
            name="local", type="ollama", timeout=timeout, api_key=Secret(key) if key else None, api_key_env="OLLAMA_API_KEY"
        )
    )


def test_chat_posts_api_chat_with_options_and_reads_the_counts(stub: StubServer) -> None:
    stub.route("POST", CHAT, ollama_chat("Hi!", usage=(21, 3), done_reason="length"))
    response = call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert response.text == "Hi!" and response.usage == Usage(21, 3) and response.finish_reason == "length"
    assert (response.model, response.backend, response.endpoint) == ("llama3", "local", stub.url)
    [sent] = stub.requests
    assert sent.json == {
        "model": "llama3",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        "stream": False,
        "options": {"temperature": 0.1, "num_predict": 32},
    }


def test_stream_reads_ndjson_lines_until_done(stub: StubServer) -> None:
    stub.route("POST", CHAT, ollama_stream(["Hel", "lo"], usage=(8, 2), chunk_delay=0.02))
    chunks = call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage == Usage(8, 2)
    assert all(c.finish_reason is None for c in chunks[:-1])
    [sent] = stub.requests
    assert sent.json["stream"] is True


def test_collect_measures_time_to_first_token(stub: StubServer) -> None:
    stub.route("POST", CHAT, ollama_stream(["Hel", "lo"], chunk_delay=0.02))
    response = call(backend(), lambda b: collect(b, REQUEST, stub.url))
    assert response.text == "Hello" and response.usage == Usage(9, 3)
    assert response.time_to_first_token is not None and 0 < response.time_to_first_token < response.latency


def test_429_is_rate_limited_with_retry_after(stub: StubServer) -> None:
    stub.route("POST", CHAT, Reply(status=429, json={"error": "too many requests"}, headers={"Retry-After": "3"}))
    with pytest.raises(RateLimited) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert caught.value.retry_after == 3.0 and len(stub.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable(stub: StubServer, status: int) -> None:
    stub.route("POST", CHAT, ollama_error(status, "llama runner process has terminated"))
    with pytest.raises(BackendUnavailable, match="runner process") as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert type(caught.value) is BackendUnavailable
    assert (caught.value.backend, caught.value.endpoint) == ("local", stub.url)
    assert len(stub.requests) == 1


def test_a_proxys_html_error_page_is_still_mapped(stub: StubServer) -> None:
    stub.route("POST", CHAT, Reply(status=502, body=b"<html><h1>502 Bad Gateway</h1></html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(BackendUnavailable, match="Bad Gateway"):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert len(stub.calls("POST", CHAT)) == 1


def test_an_answer_slower_than_the_timeout_is_a_timeout(stub: StubServer) -> None:
    stub.route("POST", CHAT, Reply(json={}, delay=2.0))
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        call(backend(timeout=0.2), lambda b: b.chat(REQUEST, stub.url))
    with pytest.raises(BackendTimeout):
        call(backend(timeout=30), lambda b: b.chat(replace(REQUEST, timeout=0.2), stub.url))
    assert time.monotonic() - started < 1.5, "a step's own timeout wins over the backend's"


def test_a_stall_mid_stream_is_a_timeout(stub: StubServer) -> None:
    stub.route("POST", CHAT, ollama_stream(["a", "b"], chunk_delay=1.0))
    with pytest.raises(BackendTimeout):
        call(backend(timeout=0.2), lambda b: drain(b.stream(REQUEST, stub.url)))


def test_connection_refused_is_unavailable() -> None:
    url = refused_url()
    with pytest.raises(BackendUnavailable) as caught:
        call(backend(), lambda b: b.chat(REQUEST, url))
    assert caught.value.endpoint == url


@pytest.mark.parametrize("cut", [{"cut_after": 1}, {"done": False}])
def test_a_stream_without_the_done_line_raises(stub: StubServer, cut: dict[str, object]) -> None:
    stub.route("POST", CHAT, ollama_stream(["Hel", "lo"], **cut))  # type: ignore[arg-type]
    got: list[StreamChunk] = []
    with pytest.raises(BackendUnavailable, match="broke off"):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url), got))
    assert got and all(c.finish_reason is None for c in got)


def test_an_error_line_mid_stream_is_raised(stub: StubServer) -> None:
    line = {"model": "llama3", "message": {"role": "assistant", "content": "Hel"}, "done": False}
    stub.route("POST", CHAT, ndjson(line, {"error": "an error was encountered while running the model"}))
    with pytest.raises(BackendUnavailable, match="running the model"):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))


def test_a_missing_model_says_ollama_pull(stub: StubServer) -> None:
    stub.route("POST", CHAT, ollama_error(404, 'model "llama3" not found, try pulling it first'))
    with pytest.raises(ModelNotFound) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert caught.value.hint == "ollama pull llama3"
    stub.route("POST", CHAT, ollama_error(404, 'model "llama3" not found, try pulling it first'))
    with pytest.raises(ModelNotFound, match="ollama pull llama3"):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))


def test_a_bad_key_names_the_variable_and_never_the_key(stub: StubServer) -> None:
    key = "ollama-key-NEVER-SHOW-12ab"
    stub.route("POST", CHAT, ollama_error(401, f"unauthorized: {key}"))
    with pytest.raises(AuthError) as caught:
        call(backend(key=key), lambda b: b.chat(REQUEST, stub.url))
    assert "OLLAMA_API_KEY" in str(caught.value)
    assert all(key not in text for text in (str(caught.value), repr(caught.value), caught.value.hint or ""))
    assert stub.requests[0].headers["authorization"] == f"Bearer {key}"


def test_a_prompt_too_long_and_other_4xx(stub: StubServer) -> None:
    stub.route("POST", "/api/embed", ollama_error(400, "the input length exceeds the context length"))
    with pytest.raises(ContextTooLong):
        call(backend(), lambda b: b.embed(["x" * 100], "nomic-embed-text", stub.url))
    stub.route("POST", CHAT, ollama_error(400, "invalid message role"))
    with pytest.raises(BadRequest, match="invalid message role"):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))


def test_embed_posts_api_embed(stub: StubServer) -> None:
    stub.route(
        "POST",
        "/api/embed",
        Reply(json={"model": "nomic-embed-text", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 6}),
    )
    result = call(backend(), lambda b: b.embed(["a", "b"], "nomic-embed-text", stub.url))
    assert result.vectors == ((0.1, 0.2), (0.3, 0.4)) and result.usage.prompt_tokens == 6
    assert stub.requests[0].json == {"model": "nomic-embed-text", "input": ["a", "b"]}


def test_list_models_marks_the_loaded_ones_with_vram(stub: StubServer) -> None:
    stub.route(
        "GET",
        "/api/tags",
        Reply(json={"models": [{"name": "llama3:latest", "size": 4_700_000_000}, {"name": "tinyllama:latest", "size": 640_000_000}]}),
    )
    stub.route(
        "GET",
        "/api/ps",
        Reply(json={"models": [{"name": "llama3:latest", "size": 5_100_000_000, "size_vram": 4_900_000_000, "context_length": 8192}]}),
    )
    models = call(backend(), lambda b: b.list_models(stub.url))
    assert models == [
        ModelEntry("llama3:latest", loaded=True, size_bytes=4_700_000_000, vram_bytes=4_900_000_000, context_window=8192),
        ModelEntry("tinyllama:latest", loaded=False, size_bytes=640_000_000),
    ]


def test_health_asks_api_version(stub: StubServer) -> None:
    stub.route("GET", "/api/version", Reply(json={"version": "0.5.7"}))
    ready = call(backend(), lambda b: b.health(stub.url))
    unreachable = call(backend(), lambda b: b.health(refused_url()))
    assert ready.reachable and ready.ready and stub.requests[0].path == "/api/version"
    assert not unreachable.reachable and not unreachable.ready and unreachable.detail


@pytest.mark.parametrize(
    ("shown", "limit"),
    [
        ({"parameters": "stop <|eot_id|>\nnum_ctx 8192", "model_info": {"llama.context_length": 131072}}, 8192),
        ({"parameters": "stop <|eot_id|>", "model_info": {"general.architecture": "llama", "llama.context_length": 131072}}, 131072),
        ({"modelfile": "FROM x"}, None),
    ],
)
def test_context_limit_comes_from_api_show(stub: StubServer, shown: dict[str, object], limit: int | None) -> None:
    stub.route("POST", "/api/show", Reply(json=shown))
    assert call(backend(), lambda b: b.context_limit("llama3", stub.url)) == limit
    assert stub.requests[0].json == {"model": "llama3"}
