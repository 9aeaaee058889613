"""The OpenAI-compatible adapter against a real HTTP stub: bodies sent, answers parsed, failures mapped."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from stubs import (
    Reply,
    StubServer,
    call,
    drain,
    openai_chat,
    openai_error,
    openai_stream,
    refused_url,
    sse,
)

from dse.backends import (
    AnthropicBackend,
    ChatRequest,
    Message,
    OllamaBackend,
    OpenAICompatBackend,
    StreamChunk,
    Usage,
    collect,
    make_backend,
)
from dse.config.model import BACKEND_TYPES, AzureDeployment, BackendConfig, Secret
from dse.errors import (
    AuthError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    RateLimited,
)

KEY = "sk-test-NEVER-SHOW-4f2a9c"
REQUEST = ChatRequest(
    model="gpt-test",
    messages=(Message("system", "Be brief."), Message("user", "Say hello")),
    temperature=0.2,
    max_tokens=16,
)
CHAT = "/v1/chat/completions"


def backend(kind: str = "openai", timeout: float = 5.0, **extra: object) -> OpenAICompatBackend:
    settings: dict[str, object] = {"api_key": Secret(KEY), "api_key_env": "OPENAI_API_KEY", "timeout": timeout, **extra}
    config = BackendConfig(name="b", type=kind, **settings)  # type: ignore[arg-type]
    return OpenAICompatBackend(config)


def test_chat_sends_the_request_once_and_parses_the_answer(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_chat("Hello there", model="gpt-test-0613", usage=(11, 3)))
    response = call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert response.text == "Hello there"
    assert response.model == "gpt-test-0613"
    assert response.usage == Usage(11, 3)
    assert response.finish_reason == "stop"
    assert (response.backend, response.endpoint) == ("b", stub.url)
    assert response.latency > 0
    [sent] = stub.requests
    assert sent.path == CHAT
    assert sent.json["model"] == "gpt-test"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent.json["max_tokens"] == 16 and sent.json["temperature"] == 0.2
    assert "stream" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_stream_yields_pieces_in_order_then_the_finish_and_usage(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_stream(["Hel", "lo", "!"], usage=(6, 3), chunk_delay=0.02))
    chunks = call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))
    assert [c.text for c in chunks] == ["Hel", "lo", "!", ""]
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage == Usage(6, 3)
    assert [c.elapsed for c in chunks] == sorted(c.elapsed for c in chunks)
    [sent] = stub.requests
    assert sent.json["stream"] is True and sent.json["stream_options"] == {"include_usage": True}


def test_collect_joins_a_stream_and_measures_time_to_first_token(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_stream(["Hel", "lo"], usage=(6, 2), chunk_delay=0.02))
    response = call(backend(), lambda b: collect(b, REQUEST, stub.url))
    assert response.text == "Hello" and response.usage == Usage(6, 2) and response.finish_reason == "stop"
    assert response.time_to_first_token is not None and 0 < response.time_to_first_token < response.latency
    assert len(stub.requests) == 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_is_rate_limited_with_the_servers_retry_after(stub: StubServer, form: str) -> None:
    retry_after = "2" if form == "seconds" else formatdate(time.time() + 30, usegmt=True)
    stub.route("POST", CHAT, openai_error(429, "slow down", kind="rate_limit_error", headers={"Retry-After": retry_after}))
    with pytest.raises(RateLimited) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert caught.value.retry_after == pytest.approx(2.0 if form == "seconds" else 30.0, abs=1.5)
    assert (caught.value.backend, caught.value.endpoint) == ("b", stub.url)
    assert len(stub.requests) == 1, "SDK retries must be off: the router owns retries"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable_after_one_request(stub: StubServer, status: int) -> None:
    stub.route("POST", CHAT, openai_error(status, "upstream trouble", kind="server_error"))
    with pytest.raises(BackendUnavailable) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert type(caught.value) is BackendUnavailable
    assert str(status) in str(caught.value) and "upstream trouble" in str(caught.value)
    assert len(stub.requests) == 1


def test_an_answer_slower_than_the_timeout_is_a_timeout(stub: StubServer) -> None:
    stub.route("POST", CHAT, Reply(json={}, delay=2.0))
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        call(backend(timeout=0.2), lambda b: b.chat(REQUEST, stub.url))
    assert time.monotonic() - started < 1.5
    assert len(stub.requests) == 1


def test_connection_refused_is_unavailable() -> None:
    url = refused_url()
    with pytest.raises(BackendUnavailable) as caught:
        call(backend(), lambda b: b.chat(REQUEST, url))
    assert caught.value.endpoint == url and caught.value.backend == "b"


def test_a_stream_cut_mid_way_raises_instead_of_ending_as_complete(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_stream(["Hel", "lo", " world"], cut_after=2))
    got: list[StreamChunk] = []
    with pytest.raises(BackendUnavailable, match="broke off"):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url), got))
    assert "".join(c.text for c in got) == "Hel"
    assert all(c.finish_reason is None for c in got), "no closing chunk for a broken stream"


def test_a_stream_that_ends_without_a_finish_reason_raises(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_stream(["Hel"], finish=None, usage=None, done=False))
    with pytest.raises(BackendUnavailable):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))
    with pytest.raises(BackendUnavailable):
        call(backend(), lambda b: collect(b, REQUEST, stub.url))


def test_a_stall_mid_stream_is_a_timeout(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_stream(["a", "b"], chunk_delay=1.0))
    with pytest.raises(BackendTimeout):
        call(backend(timeout=0.2), lambda b: drain(b.stream(REQUEST, stub.url)))


def test_an_error_event_inside_a_stream_is_mapped(stub: StubServer) -> None:
    stub.route("POST", CHAT, sse({"error": {"message": "server overloaded, retry later", "type": "server_error"}}))
    with pytest.raises(BackendUnavailable, match="overloaded"):
        call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))


@pytest.mark.parametrize("status", [401, 403])
def test_a_bad_key_names_the_variable_and_never_the_key(stub: StubServer, status: int) -> None:
    stub.route("POST", CHAT, openai_error(status, f"Incorrect API key provided: {KEY}", kind="invalid_api_key"))
    with pytest.raises(AuthError) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert "OPENAI_API_KEY" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caught.value.message, caught.value.hint or ""):
        assert KEY not in text
    assert len(stub.requests) == 1


def test_other_errors_never_leak_the_key_either(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_error(400, f"bad field near {KEY}"))
    with pytest.raises(BadRequest) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert KEY not in str(caught.value) and "***" in str(caught.value)


def test_an_unknown_model_says_to_check_the_model_id(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_error(404, "The model `gpt-test` does not exist", kind="model_not_found"))
    with pytest.raises(ModelNotFound) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert "check the model id 'gpt-test'" in str(caught.value)


@pytest.mark.parametrize(
    "message",
    [
        "request (3031 tokens) exceeds the available context size (2048 tokens), try increasing it",
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
    ],
)
def test_a_prompt_too_long_is_context_too_long(stub: StubServer, message: str) -> None:
    stub.route("POST", CHAT, openai_error(400, message, kind="exceed_context_size_error"))
    with pytest.raises(ContextTooLong):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))


def test_other_4xx_are_bad_requests(stub: StubServer) -> None:
    stub.route("POST", CHAT, openai_error(422, "temperature must be at most 2"))
    with pytest.raises(BadRequest, match="temperature"):
        call(backend(), lambda b: b.chat(REQUEST, stub.url))


def test_embed_posts_to_v1_embeddings_and_keeps_input_order(stub: StubServer) -> None:
    stub.route(
        "POST",
        "/v1/embeddings",
        Reply(
            json={
                "object": "list",
                "model": "embed-test",
                "data": [
                    {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                    {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
                ],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        ),
    )
    result = call(backend(), lambda b: b.embed(["first", "second"], "embed-test", stub.url))
    assert result.vectors == ((1.0, 0.0), (0.0, 1.0))
    assert result.usage.prompt_tokens == 4 and result.model == "embed-test"
    [sent] = stub.requests
    assert sent.json == {"model": "embed-test", "input": ["first", "second"], "encoding_format": "float"}


def test_list_models_reads_v1_models_and_llamacpp_meta(stub: StubServer) -> None:
    stub.route(
        "GET",
        "/v1/models",
        Reply(
            json={
                "object": "list",
                "data": [
                    {"id": "smollm2", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx": 2048, "size": 96576768}},
                    {"id": "other", "object": "model", "owned_by": "x"},
                ],
            }
        ),
    )
    models = call(backend("llamacpp"), lambda b: b.list_models(stub.url))
    assert [(m.name, m.context_window, m.size_bytes) for m in models] == [("smollm2", 2048, 96576768), ("other", None, None)]


def test_llamacpp_health_reads_health_and_sees_loading(stub: StubServer) -> None:
    stub.route(
        "GET",
        "/health",
        Reply(json={"status": "ok"}),
        Reply(status=503, json={"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}),
    )
    ready = call(backend("llamacpp"), lambda b: b.health(stub.url))
    loading = call(backend("llamacpp"), lambda b: b.health(stub.url + "/v1"))
    assert ready.reachable and ready.ready and not ready.loading and ready.latency is not None
    assert loading.reachable and not loading.ready and loading.loading
    assert len(stub.calls("GET", "/health")) == 2 and len(stub.requests) == 2


def test_health_of_an_unreachable_server_does_not_raise() -> None:
    for kind in ("llamacpp", "openai"):
        health = call(backend(kind), lambda b: b.health(refused_url()))
        assert not health.reachable and not health.ready and health.detail


def test_openai_health_uses_v1_models_and_a_401_is_reachable_but_not_ready(stub: StubServer) -> None:
    stub.route("GET", "/v1/models", Reply(json={"object": "list", "data": []}), openai_error(401, f"bad key {KEY}"))
    ready = call(backend(), lambda b: b.health(stub.url))
    refused = call(backend(), lambda b: b.health(stub.url))
    assert ready.ready
    assert refused.reachable and not refused.ready
    assert "OPENAI_API_KEY" in refused.detail and KEY not in refused.detail


def test_context_limit_comes_from_llamacpp_props_then_slots(stub: StubServer) -> None:
    stub.route("GET", "/props", Reply(json={"default_generation_settings": {"n_ctx": 2048}, "total_slots": 2}))
    assert call(backend("llamacpp"), lambda b: b.context_limit("smollm2", stub.url)) == 2048
    stub.route("GET", "/props", Reply(json={"n_ctx": 4096}))
    assert call(backend("llamacpp"), lambda b: b.context_limit("smollm2", stub.url)) == 4096
    stub.route("GET", "/props", Reply(status=404, json={}))
    stub.route("GET", "/slots", Reply(json=[{"id": 0, "n_ctx": 1024}]))
    assert call(backend("llamacpp"), lambda b: b.context_limit("smollm2", stub.url)) == 1024


def test_context_limit_is_none_where_the_server_does_not_say(stub: StubServer) -> None:
    stub.route("GET", "/props", Reply(status=404, json={}))
    stub.route("GET", "/slots", Reply(status=501, json={"error": {"message": "slots disabled"}}))
    assert call(backend("llamacpp"), lambda b: b.context_limit("smollm2", stub.url)) is None
    requests = len(stub.requests)
    assert call(backend("vllm"), lambda b: b.context_limit("m", stub.url)) is None
    assert len(stub.requests) == requests, "the OpenAI API has no such call: nothing is sent"


def test_openrouter_sends_its_attribution_headers(stub: StubServer) -> None:
    stub.route("POST", "/api/v1/chat/completions", openai_chat())
    headers = {"HTTP-Referer": "https://example.org/dse", "X-Title": "dse"}
    call(backend("openrouter", headers=headers), lambda b: b.chat(REQUEST, stub.url + "/api/v1"))
    [sent] = stub.requests
    assert sent.headers["http-referer"] == "https://example.org/dse" and sent.headers["x-title"] == "dse"


def test_azure_addresses_the_deployment_with_the_api_version(stub: StubServer) -> None:
    path = "/openai/deployments/my-gpt4o/chat/completions"
    stub.route("POST", path, openai_chat("hi from azure"))
    azure = backend(
        "azure",
        api_key_env="AZURE_OPENAI_API_KEY",
        api_version="2024-06-01",
        deployments={"generator": AzureDeployment(deployment="my-gpt4o", api_version="2024-08-01-preview")},
    )
    request = ChatRequest(model="my-gpt4o", messages=(Message("user", "hi"),))
    response = call(azure, lambda b: b.chat(request, stub.url))
    assert response.text == "hi from azure"
    [sent] = stub.requests
    assert sent.query == "api-version=2024-08-01-preview"
    assert sent.headers["api-key"] == KEY


def test_azure_404_says_deployment_name_not_model_name(stub: StubServer) -> None:
    stub.route("POST", "/openai/deployments/gpt-4o/chat/completions", openai_error(404, "DeploymentNotFound"))
    request = ChatRequest(model="gpt-4o", messages=(Message("user", "hi"),))
    with pytest.raises(ModelNotFound, match="deployment name 'gpt-4o' \\(not the model name\\)"):
        call(backend("azure", api_version="2024-10-21"), lambda b: b.chat(request, stub.url))


def test_every_backend_type_gets_an_adapter() -> None:
    expected = {"anthropic": AnthropicBackend, "ollama": OllamaBackend}
    for kind in BACKEND_TYPES:
        adapter = make_backend(BackendConfig(name=kind, type=kind))
        assert type(adapter) is expected.get(kind, OpenAICompatBackend), kind
        assert adapter.name == kind
