"""The Ollama adapter against a real HTTP stub: native /api paths, `ollama pull` hints, what /api/ps and /api/show say.

Failures every protocol maps the same way (NDJSON streams cut off, error lines, timeouts, rate
limits, bad keys...) are in test_failures_every_protocol.py; the Ollama row is `wire.OLLAMA`.
"""

from __future__ import annotations

import pytest
from stubs import Reply, StubServer, call, ollama_chat, ollama_error
from wire import OLLAMA
from wire import ollama_backend as backend

from dse.backends import ModelEntry, Usage
from dse.errors import ContextTooLong, ModelNotFound

REQUEST, CHAT = OLLAMA.request, OLLAMA.chat_path


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


def test_a_missing_model_hint_is_exactly_the_pull_command(stub: StubServer) -> None:
    """The hint is a command to copy; that a 404 says it on chat and on stream is a shared test."""
    stub.route("POST", CHAT, ollama_error(404, OLLAMA.missing_model_message))
    with pytest.raises(ModelNotFound) as caught:
        call(backend(), lambda b: b.chat(REQUEST, stub.url))
    assert caught.value.hint == "ollama pull llama3"


def test_an_embed_input_too_long_is_context_too_long(stub: StubServer) -> None:
    """Ollama truncates chat prompts to the context; only /api/embed refuses an input that does not fit."""
    stub.route("POST", "/api/embed", ollama_error(400, "the input length exceeds the context length"))
    with pytest.raises(ContextTooLong):
        call(backend(), lambda b: b.embed(["x" * 100], "nomic-embed-text", stub.url))


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
    assert ready.reachable and ready.ready and stub.requests[0].path == "/api/version"


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
