"""Router logic: retries, Retry-After, fallbacks, context-window escalation, breakers, stream failover.

Adapters here are scripted in-process so every wait and every attempt can be asserted exactly;
tests/protocol/ covers the same behaviour over real sockets, counting what stub servers receive.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from dse.backends import ChatRequest, ChatResponse, Message, Usage
from dse.backends.types import StreamChunk
from dse.config import load_config
from dse.errors import AuthError, BackendUnavailable, BadRequest, ContextTooLong, RateLimited
from dse.routing import Intent, Resolver
from dse.routing.router import Router

CONFIG = """\
llm:
  backend: primary
  fallback_backends: [secondary]
  retry: {attempts: 3, backoff: 1, max_backoff: 8, max_retry_after: 30}
  circuit_breaker: {failures: 2, cooldown: 60}
  primary:
    type: vllm
    endpoints: [http://p1, http://p2]
    models: {generator: small-model}
  secondary:
    type: vllm
    base_url: http://s1
    models: {generator: other-model}
  big:
    type: vllm
    base_url: http://b1
    models: {generator: qwen2.5-coder:14b}
model_selector:
  models:
    small-model: {context_window: 2048}
    other-model: {context_window: 4096}
"""


class Script:
    """What each endpoint answers, in order (the last answer repeats), and what it was asked."""

    def __init__(self) -> None:
        self.answers: dict[str, list] = defaultdict(list)
        self.calls: list[tuple[str, str]] = []
        self.windows: dict[str, int] = {}

    def next(self, endpoint: str, model: str):
        self.calls.append((endpoint, model))
        queue = self.answers[endpoint]
        answer = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else "ok")
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeBackend:
    def __init__(self, name: str, script: Script) -> None:
        self.name, self.script = name, script

    async def chat(self, request: ChatRequest, endpoint: str) -> ChatResponse:
        text = self.script.next(endpoint, request.model)
        return ChatResponse(text, request.model, self.name, endpoint, Usage(1, 1))

    async def stream(self, request: ChatRequest, endpoint: str) -> AsyncIterator[StreamChunk]:
        parts = self.script.next(endpoint, request.model)
        for part in parts:
            if isinstance(part, Exception):
                raise part
            yield StreamChunk(part)
        yield StreamChunk("", finish_reason="stop", usage=Usage(1, len(parts)))

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        return self.script.windows.get(endpoint)

    async def aclose(self) -> None:
        pass


@pytest.fixture
def setup(write):
    config = load_config(write("config.yaml", CONFIG), environ={})
    script = Script()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    resolver = Resolver(config)
    router = Router(config, resolver, backend_factory=lambda c: FakeBackend(c.name, script), sleep=sleep)
    target = resolver.resolve(Intent("s", model_key="generator")).target
    return router, target, script, waits


def ask(router: Router, target, **kw) -> ChatResponse:
    return asyncio.run(router.chat(target, [Message("user", "hi")], **kw))


def down(url: str) -> BackendUnavailable:
    return BackendUnavailable("connection refused", backend="x", endpoint=url)


def test_success_is_one_request(setup) -> None:
    router, target, script, waits = setup
    response = ask(router, target)
    assert response.text == "ok" and len(script.calls) == 1 and waits == []
    assert len(response.attempts) == 1 and response.attempts[0].error is None


def test_retries_with_exponential_backoff_then_falls_back(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [down("http://p1")]
    script.answers["http://p2"] = [down("http://p2")]
    response = ask(router, target)
    assert response.backend == "secondary" and response.model == "other-model"
    assert [c[0] for c in script.calls].count("http://s1") == 1
    assert len(script.calls) == 4, "3 attempts on the primary, then one on the fallback"
    assert len(waits) == 2 and 0.75 <= waits[0] <= 1.25 and 1.5 <= waits[1] <= 2.5
    kinds = [a.error_kind for a in response.attempts]
    assert kinds == ["BackendUnavailable"] * 3 + [None]


def test_retry_after_is_honoured_exactly(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [RateLimited("slow down", retry_after=7), "ok"]
    script.answers["http://p2"] = [RateLimited("slow down", retry_after=7), "ok"]
    response = ask(router, target)
    assert waits and all(w == 7 for w in waits), "Retry-After wins over the backoff formula"
    assert response.backend == "primary" and len(script.calls) == len(waits) + 1


def test_retry_after_beyond_the_cap_falls_back_at_once(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [RateLimited("quota", retry_after=3600)]
    script.answers["http://p2"] = [RateLimited("quota", retry_after=3600)]
    response = ask(router, target)
    assert waits == [] and response.backend == "secondary" and len(script.calls) == 2


def test_auth_error_is_not_retried_but_falls_back(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [AuthError("bad key")]
    script.answers["http://p2"] = [AuthError("bad key")]
    assert ask(router, target).backend == "secondary"
    assert len(script.calls) == 2 and waits == []


def test_bad_request_fails_at_once(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [BadRequest("malformed")]
    script.answers["http://p2"] = [BadRequest("malformed")]
    with pytest.raises(BadRequest) as info:
        ask(router, target)
    assert len(script.calls) == 1 and len(info.value.attempts) == 1


def test_context_too_long_moves_to_a_larger_window(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [ContextTooLong("too long")]
    script.answers["http://p2"] = [ContextTooLong("too long")]
    response = ask(router, target)
    assert (response.backend, response.model) == ("secondary", "other-model")
    assert waits == [] and [a.error_kind for a in response.attempts] == ["ContextTooLong", None]
    # The fallback chain ends at `secondary`; only the escalation knows `big`, the one window larger still.
    script.answers["http://s1"] = [ContextTooLong("too long")]
    script.calls.clear()
    response = ask(router, target)
    assert (response.backend, response.model) == ("big", "qwen2.5-coder:14b")
    assert [c[0] for c in script.calls][1:] == ["http://s1", "http://b1"], "one request per window, no retries"


def test_the_window_the_server_reports_decides_what_counts_as_larger(setup) -> None:
    """The catalog gives other-model 4096 tokens, but its server runs it with 1024: small-model's 2048 is larger."""
    router, _, script, _ = setup
    target = router.resolver.resolve(Intent("s", backend="secondary", model_key="generator")).target
    script.answers["http://s1"] = [ContextTooLong("too long")]
    script.windows["http://s1"] = 1024
    response = ask(router, target)
    assert (response.backend, response.model) == ("primary", "small-model")
    script.windows.clear()
    router.breakers = type(router.breakers)()
    assert ask(router, target).backend == "big", "by the catalog alone, only the 131072-token model is larger"


def test_everything_failing_raises_the_last_error_with_every_attempt(setup) -> None:
    router, target, script, waits = setup
    for url in ("http://p1", "http://p2", "http://s1"):
        script.answers[url] = [down(url)]
    with pytest.raises(BackendUnavailable) as info:
        ask(router, target)
    assert len(info.value.attempts) == 6 and len(script.calls) == 5
    assert "cooling down" in info.value.attempts[-1].error, "the open breaker spares the last request"


def test_step_retry_override_replaces_the_default(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [down("http://p1")]
    script.answers["http://p2"] = [down("http://p2")]
    script.answers["http://s1"] = [down("http://s1")]
    with pytest.raises(BackendUnavailable):
        ask(router, target, retry={"attempts": 1})
    assert len(script.calls) == 2, "one attempt per backend: never retries multiplied by retries"


def break_secondary(router: Router, script: Script, now: list[float]):
    """Two failures on the single-endpoint secondary backend open its breaker (threshold 2)."""
    target = router.resolver.resolve(Intent("s", backend="secondary", model_key="generator")).target
    router.breakers = type(router.breakers)(2, 60, clock=lambda: now[0])
    script.answers["http://s1"] = [down("http://s1")]
    with pytest.raises(BackendUnavailable):
        ask(router, target)
    return target


def test_breaker_opens_and_recovers_after_cooldown(setup) -> None:
    router, _, script, waits = setup
    now = [0.0]
    target = break_secondary(router, script, now)
    assert len(script.calls) == 2 and router.breakers["http://s1"].state == "open"
    for _ in range(5):
        with pytest.raises(BackendUnavailable, match="cooling down"):
            ask(router, target)
    assert len(script.calls) == 2, "an open breaker lets no request through"
    script.answers["http://s1"] = ["back"]
    now[0] = 61.0
    assert router.breakers["http://s1"].state == "half-open"
    assert ask(router, target).text == "back"
    assert router.breakers["http://s1"].state == "closed" and len(script.calls) == 3


def test_a_failed_probe_reopens_the_breaker(setup) -> None:
    router, _, script, waits = setup
    now = [0.0]
    target = break_secondary(router, script, now)
    now[0] = 61.0
    with pytest.raises(BackendUnavailable):
        ask(router, target, retry={"attempts": 1})
    assert len(script.calls) == 3 and router.breakers["http://s1"].state == "open"


def test_stream_fails_over_only_before_the_first_chunk(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [[down("http://p1")]]
    script.answers["http://p2"] = [[down("http://p2")]]
    script.answers["http://s1"] = [["Hel", "lo"]]

    async def collect(t) -> list[str]:
        return [c.text async for c in router.stream(t, [Message("user", "hi")], retry={"attempts": 1})]

    assert "".join(asyncio.run(collect(target))) == "Hello"

    script.answers["http://p1"] = [["Hel", down("http://p1")]]
    script.answers["http://p2"] = [["Hel", down("http://p2")]]
    calls_before = len(script.calls)
    received: list[str] = []

    async def partial() -> None:
        async for chunk in router.stream(target, [Message("user", "hi")]):
            received.append(chunk.text)

    with pytest.raises(BackendUnavailable):
        asyncio.run(partial())
    assert received == ["Hel"], "text already shown is never repeated by a fallback"
    assert len(script.calls) == calls_before + 1


def test_a_streams_first_and_closing_chunks_say_where_it_came_from_and_what_it_took(setup) -> None:
    router, target, script, waits = setup
    script.answers["http://p1"] = [[down("http://p1")], ["o", "k"]]
    script.answers["http://p2"] = [[down("http://p2")], ["o", "k"]]

    async def collect() -> list[StreamChunk]:
        return [c async for c in router.stream(target, [Message("user", "hi")])]

    chunks = asyncio.run(collect())
    closing = chunks[-1]
    assert [c.text for c in chunks] == ["o", "k", ""] and closing.finish_reason == "stop"
    assert closing.backend == "primary" and closing.endpoint in ("http://p1", "http://p2")
    assert [a.error_kind for a in closing.attempts] == ["BackendUnavailable", "BackendUnavailable", None]
    first = chunks[0]
    assert (first.backend, first.endpoint) == (closing.backend, closing.endpoint), "the first chunk names the route, for a gateway's headers"
    assert len(first.attempts) == 3 and all(c.attempts == () and c.endpoint is None for c in chunks[1:-1])


def test_engine_start_makes_each_endpoints_client_before_the_first_call(write) -> None:
    """An SDK client takes tens of milliseconds to make: made in `start`, off the loop, not by a run's first call."""
    from dse.engine import Engine

    config = load_config(
        write("c.yaml", "llm:\n  backend: s\n  s: {type: vllm, endpoints: [{url: 'http://127.0.0.1:9/v1'}, {url: 'http://127.0.0.1:10/v1'}]}\n"),
        environ={},
    )

    async def started() -> list[str]:
        async with Engine(config) as engine:
            await engine.start(["s"])
            return sorted(engine.router.backend("s")._clients)  # type: ignore[attr-defined]

    assert asyncio.run(started()) == ["http://127.0.0.1:10/v1", "http://127.0.0.1:9/v1"]
