"""The OpenAI-compatible adapter against a real HTTP stub: bodies sent, answers parsed, per-type quirks.

Failures every protocol maps the same way (timeouts, cut streams, rate limits, bad keys...) are
in test_failures_every_protocol.py; the OpenAI row they run with is `wire.OPENAI`.
"""

from __future__ import annotations

import pytest
from stubs import Reply, StubServer, call, drain, openai_chat, openai_error, refused_url, sse
from wire import OPENAI
from wire import openai_backend as backend

from dse.backends import (
    AnthropicBackend,
    AzureBackend,
    ChatRequest,
    LlamaCppBackend,
    Message,
    OllamaBackend,
    OpenAICompatBackend,
    Usage,
    TgiBackend,
    VllmBackend,
    make_backend,
    type_names,
)
from dse.config.model import AzureDeployment, BackendConfig
from dse.errors import ModelNotFound

KEY, REQUEST, CHAT = OPENAI.key, OPENAI.request, OPENAI.chat_path


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


def test_the_prompt_tokens_read_from_the_vendors_cache_are_counted_in_answers_and_streams(stub: StubServer) -> None:
    """They are billed at the cached-input price, so the ledger must see them however the answer came."""
    usage = {"prompt_tokens": 120, "completion_tokens": 4, "total_tokens": 124, "prompt_tokens_details": {"cached_tokens": 96}}
    answer = openai_chat("Hi").json
    stub.route("POST", CHAT, Reply(json={**answer, "usage": usage}))
    assert call(backend(), lambda b: b.chat(REQUEST, stub.url)).usage == Usage(120, 4, 96)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    stub.route(
        "POST",
        CHAT,
        sse(
            {**chunk, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**chunk, "choices": [], "usage": usage},
            "[DONE]",
        ),
    )
    chunks = call(backend(), lambda b: drain(b.stream(REQUEST, stub.url)))
    assert chunks[-1].usage == Usage(120, 4, 96) and "".join(c.text for c in chunks) == "Hi"


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


def test_llamacpp_health_of_an_unreachable_server_does_not_raise() -> None:
    """llama.cpp's own /health probe; the OpenAI one is in test_failures_every_protocol.py."""
    health = call(backend("llamacpp"), lambda b: b.health(refused_url()))
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


def test_every_backend_type_gets_the_adapter_it_declares() -> None:
    expected = {
        "anthropic": AnthropicBackend,
        "ollama": OllamaBackend,
        "azure": AzureBackend,
        "llamacpp": LlamaCppBackend,
        "vllm": VllmBackend,
        "tgi": TgiBackend,
    }
    for kind in type_names():
        adapter = make_backend(BackendConfig(name=kind, type=kind))
        assert type(adapter) is expected.get(kind, OpenAICompatBackend), kind
        assert adapter.name == kind
