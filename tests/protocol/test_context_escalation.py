"""A prompt too long for one server moves to a server with a larger window, over real sockets.

tests/unit/test_router.py covers the decision with scripted adapters; this file checks the whole
path: the adapter maps llama.cpp's real "exceeds the available context size" body to
ContextTooLong, the router asks the failing server for its window (`/props`), and the call lands
on the backend whose window is larger, not on the ordinary fallback. Each stub counts what it got.
"""

from __future__ import annotations

import asyncio

from stubs import Reply, StubServer, openai_chat
from wire import OPENAI

from dse.backends import ChatResponse, Message
from dse.config import load_config
from dse.routing import Intent, Resolver, Router

CHAT = "/v1/chat/completions"
# llama.cpp's answer to a prompt longer than its slot: HTTP 400, type exceed_context_size_error.
TOO_LONG = OPENAI.too_long[0]


def serve_llamacpp(stub: StubServer, n_ctx: int) -> None:
    stub.route("GET", "/health", Reply(json={"status": "ok"}))
    stub.route("GET", "/props", Reply(json={"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": 1}))
    stub.route("GET", "/slots", Reply(json=[{"id": 0, "n_ctx": n_ctx, "is_processing": False}]))


def config_text(small: StubServer, wide: StubServer, spare: StubServer) -> str:
    """`small` is configured as if it had 65536 tokens, but its server says 2048: the server's word decides.

    `spare` is the ordinary fallback, with a window too small to help; `wide` is not a fallback at all,
    so only the larger-context escalation can send the call there.
    """
    return (
        "llm:\n  backend: small\n  fallback_backends: [spare]\n  retry: {attempts: 2, backoff: 0}\n"
        f"  small: {{type: llamacpp, base_url: '{small.url}', models: {{generator: smol}}, context_windows: {{smol: 65536}}}}\n"
        f"  spare: {{type: vllm, base_url: '{spare.url}/v1', models: {{generator: tiny}}, context_windows: {{tiny: 1024}}}}\n"
        f"  wide: {{type: vllm, base_url: '{wide.url}/v1', models: {{generator: roomy}}, context_windows: {{roomy: 32768}}}}\n"
    )


def ask(config_path, backend: str | None = None) -> ChatResponse:
    config = load_config(config_path, environ={})
    resolver = Resolver(config)
    target = resolver.resolve(Intent("s", backend=backend, model_key="generator")).target

    async def main() -> ChatResponse:
        router = Router(config, resolver)
        try:
            return await router.chat(target, [Message("user", "a very long prompt")])
        finally:
            await router.aclose()

    return asyncio.run(main())


def test_context_too_long_moves_to_the_backend_with_a_larger_window(write) -> None:
    with StubServer() as small, StubServer() as wide, StubServer() as spare:
        serve_llamacpp(small, n_ctx=2048)
        small.route("POST", CHAT, TOO_LONG)
        wide.route("POST", CHAT, openai_chat("from the wide window", model="roomy"))
        spare.route("POST", CHAT, openai_chat("from the fallback", model="tiny"))
        response = ask(write("config.yaml", config_text(small, wide, spare)))

        assert (response.text, response.backend) == ("from the wide window", "wide")
        assert len(small.calls("POST", CHAT)) == 1, "a prompt too long is not retried on the same window"
        assert len(wide.calls("POST", CHAT)) == 1
        assert wide.calls("POST", CHAT)[0].json["model"] == "roomy"
        assert spare.requests == [], "the escalation goes before the fallback chain, and skips a window too small"
        assert small.calls("GET", "/props"), "the failing server was asked for its real window"
        assert [a.error_kind for a in response.attempts] == ["ContextTooLong", None]
        assert [a.backend for a in response.attempts] == ["small", "wide"]

