"""Both SDK-based adapters against one real llama-server: real text, real token counts, real limits.

llama.cpp speaks the OpenAI protocol and Anthropic's `/v1/messages`, so one small server checks
that what the stubs script is what a real server sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from stubs import call, drain

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


def test_anthropic_messages_chat_and_stream(server: str) -> None:
    response = call(anthropic(), lambda b: b.chat(REQUEST, server))
    assert response.text.strip()
    assert response.usage.prompt_tokens > 5 and 0 < response.usage.completion_tokens <= 16
    assert response.finish_reason in ("end_turn", "max_tokens")
    chunks = call(anthropic(), lambda b: drain(b.stream(REQUEST, server)))
    assert "".join(c.text for c in chunks).strip()
    last = chunks[-1]
    assert last.finish_reason in ("end_turn", "max_tokens")
    assert last.usage is not None and last.usage.prompt_tokens > 5 and last.usage.completion_tokens > 0


def test_anthropic_health_models_and_no_embeddings(server: str) -> None:
    health = call(anthropic(), lambda b: b.health(server))
    assert health.reachable and health.ready
    assert [m.name for m in call(anthropic(), lambda b: b.list_models(server))] == ["smollm2"]
    assert call(anthropic(), lambda b: b.context_limit("smollm2", server)) is None, "llama.cpp has no model pages"
    with pytest.raises(BadRequest, match="no embedding models"):
        call(anthropic(), lambda b: b.embed(["x"], "smollm2", server))
