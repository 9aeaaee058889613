"""Calls through `dse serve`: retries, Retry-After, fallback, errors in each protocol, directives, refused fields,
metrics, streaming as it comes, and tool calls from one protocol's client to the other protocol's backend.

One gateway serves the module: `main` (llama.cpp protocol) falls back to `spare`, and
`claude` speaks Anthropic's. Each test scripts the stubs behind it and reads what the
official SDK client got: one clean answer with `x-dse-*` headers saying what happened, or
one error in the client's own protocol with the status its SDK maps to the right exception.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from gateway import ServedGateway
from gateway_rig import PATIENCE, USER, anthropic_client, anthropic_error, get, healthy, metric, openai_client, openai_error, prometheus, serve_block, served
from stubs import Received, Reply, StubServer, anthropic_message, anthropic_tool_stream, anthropic_tool_use, openai_chat, openai_stream, openai_tool_calls, openai_tool_stream
from stubs import openai_error as stub_error

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def primary() -> Iterator[StubServer]:
    with StubServer() as server:
        healthy(server)
        yield server


@pytest.fixture(scope="module")
def spare() -> Iterator[StubServer]:
    with StubServer() as server:
        healthy(server)
        yield server


@pytest.fixture(scope="module")
def claude() -> Iterator[StubServer]:
    with StubServer() as server:
        healthy(server)
        yield server


@pytest.fixture(scope="module")
def gateway(primary: StubServer, spare: StubServer, claude: StubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    # Breakers never open here: each test's failures are its own, whatever ran before it.
    config = (
        "llm:\n  backend: main\n  fallback_backends: [spare]\n"
        "  retry: {attempts: 2, backoff: 0, max_retry_after: 5}\n  circuit_breaker: {failures: 1000}\n"
        f"  main: {{type: llamacpp, base_url: '{primary.url}', models: {{generator: big}}}}\n"
        f"  spare: {{type: llamacpp, base_url: '{spare.url}', models: {{generator: small}}}}\n"
        f"  claude: {{type: anthropic, base_url: '{claude.url}', api_key: sk-stub, models: {{generator: claude-big}}}}\n"
    ) + serve_block()
    with served(config, tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture(autouse=True)
def answering(primary: StubServer, spare: StubServer, claude: StubServer) -> None:
    """Every backend answers well and has seen nothing, until a test scripts otherwise."""
    for server, reply in ((primary, openai_chat("from main")), (spare, openai_chat("from spare"))):
        server.route("POST", CHAT, reply)
    claude.route("POST", "/v1/messages", anthropic_message("from claude"))
    for server in (primary, spare, claude):
        server.requests.clear()


def ask(gateway: ServedGateway, **extra: Any) -> tuple[str | None, dict[str, str]]:
    """One chat completion through the OpenAI SDK: its text, and the gateway's headers."""
    raw = openai_client(gateway).chat.completions.with_raw_response.create(model="generator", messages=USER, **extra)
    return raw.parse().choices[0].message.content, dict(raw.headers)


def test_a_server_error_is_retried_and_the_client_sees_one_clean_answer(gateway: ServedGateway, primary: StubServer, spare: StubServer) -> None:
    primary.route("POST", CHAT, stub_error(500, "boom"), openai_chat("second try"))
    text, headers = ask(gateway)
    assert text == "second try"
    assert headers["x-dse-backend"] == "main" and headers["x-dse-attempts"] == "2" and "x-dse-fallback" not in headers
    assert len(primary.calls("POST", CHAT)) == 2 and not spare.calls("POST", CHAT)


def test_retry_after_is_waited_out_before_the_retry(gateway: ServedGateway, primary: StubServer) -> None:
    arrivals: list[float] = []

    def timed(reply: Reply) -> Any:
        def answer(_request: Received) -> Reply:
            arrivals.append(time.monotonic())
            return reply

        return answer

    primary.route("POST", CHAT, timed(stub_error(429, "slow down", headers={"Retry-After": "1"})), timed(openai_chat("after the wait")))
    text, headers = ask(gateway)
    assert text == "after the wait" and headers["x-dse-attempts"] == "2" and headers["x-dse-backend"] == "main"
    assert arrivals[1] - arrivals[0] >= 0.95, "retry backoff is 0 here: only the server's Retry-After makes the router wait"


def test_a_stream_cut_before_its_first_chunk_falls_back_to_one_clean_stream(gateway: ServedGateway, primary: StubServer, spare: StubServer) -> None:
    primary.route("POST", CHAT, openai_stream(["lost"], cut_after=0))
    spare.route("POST", CHAT, openai_stream(["from ", "spare"]))
    client = openai_client(gateway)
    with client.chat.completions.with_streaming_response.create(model="generator", messages=USER, stream=True) as response:
        headers = response.headers
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from spare"
    assert {c.model for c in chunks} == {"spare:small"}
    assert headers["x-dse-fallback"] == "main -> spare" and headers["x-dse-backend"] == "spare"
    assert headers["x-dse-attempts"] == "3", "two cut streams on main, then spare"
    assert len(primary.calls("POST", CHAT)) == 2 and len(spare.calls("POST", CHAT)) == 1


# (what every backend answers, the gateway's status and error type, the OpenAI and Anthropic SDK exceptions, its Retry-After)
FAILURES = {
    "unavailable": (stub_error(503, "overloaded"), 503, "overloaded_error", openai.InternalServerError, anthropic.ServiceUnavailableError, None),
    "rate limited": (
        stub_error(429, "slow down", headers={"Retry-After": "60"}), 429, "rate_limit_error", openai.RateLimitError, anthropic.RateLimitError, "60"
    ),
    "backend key refused": (stub_error(401, "bad key"), 502, "api_error", openai.InternalServerError, anthropic.InternalServerError, None),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_when_every_backend_fails_the_client_gets_one_error_in_its_protocol(
    gateway: ServedGateway, primary: StubServer, spare: StubServer, failure: str, protocol: str
) -> None:
    reply, status, kind, openai_class, anthropic_class, retry_after = FAILURES[failure]
    for server in (primary, spare):
        server.route("POST", CHAT, reply)
    with pytest.raises(openai.APIStatusError if protocol == "openai" else anthropic.APIStatusError) as caught:
        if protocol == "openai":
            openai_client(gateway).chat.completions.create(model="generator", messages=USER)
        else:
            anthropic_client(gateway).messages.create(model="generator", max_tokens=50, messages=USER)
    assert type(caught.value) is (openai_class if protocol == "openai" else anthropic_class)
    response = caught.value.response
    assert response.status_code == status
    assert (openai_error(response) if protocol == "openai" else anthropic_error(response))["type"] == kind
    assert response.headers.get("retry-after") == retry_after
    assert spare.calls("POST", CHAT), "the fallback was tried before the client was told"
    message = (openai_error(response) if protocol == "openai" else anthropic_error(response))["message"]
    assert "(tried main: " in message and "; spare: " in message, "the error names every backend it was tried on"


def test_a_directive_retargets_only_when_the_client_turns_directives_on(gateway: ServedGateway, primary: StubServer, claude: StubServer) -> None:
    said = "use anthropic for this.  Résumé ☃ \"quoted\"\n\ttabbed "
    client = openai_client(gateway)
    for headers, backend, server in (({}, "main", primary), ({"x-dse-directives": "on"}, "claude", claude)):
        server.requests.clear()
        raw = client.chat.completions.with_raw_response.create(
            model="generator", messages=[{"role": "user", "content": said}], extra_headers=headers
        )
        assert raw.headers["x-dse-backend"] == backend
        (received,) = server.requests
        assert received.json["messages"][-1]["content"] == said, "the backend gets the client's message as written"


def test_seed_for_a_model_on_an_anthropic_backend_is_refused_naming_the_field(gateway: ServedGateway, claude: StubServer) -> None:
    client = openai_client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude:claude-big", messages=USER, seed=7)
    assert caught.value.param == "seed" and "claude" in caught.value.message
    assert not claude.requests, "refused before anything was sent"
    answer = client.chat.completions.create(model="claude:claude-big", messages=USER)
    assert answer.choices[0].message.content == "from claude"


def test_metrics_count_requests_errors_router_events_overhead_and_breakers(gateway: ServedGateway, primary: StubServer, spare: StubServer) -> None:
    def scrape() -> Any:
        return prometheus(get(gateway, "/metrics").text)

    before = scrape()
    ask(gateway)
    primary.route("POST", CHAT, stub_error(500, "boom"), openai_chat("retried"))
    ask(gateway)
    primary.route("POST", CHAT, stub_error(503, "down"))
    ask(gateway)
    with pytest.raises(openai.NotFoundError):
        openai_client(gateway).chat.completions.create(model="no-such-model", messages=USER)
    after = scrape()

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("dse_requests_total", route=CHAT, status="200") == 3 and grew("dse_requests_total", route=CHAT, status="404") == 1
    assert grew("dse_errors_total", kind="not_found_error") == 1
    assert grew("dse_router_events_total", event="retry", backend="main") == 2
    assert grew("dse_router_events_total", event="fallback", backend="main") == 1
    assert grew("dse_overhead_seconds_count") == 1, "only the call answered by a single backend try has a measurable overhead"
    breakers = {dict(labels)["endpoint"]: value for (name, labels), value in after.items() if name == "dse_breaker_state"}
    assert breakers[primary.url] == 0 and breakers[spare.url] == 0


class HeldStream(Sequence[bytes]):
    """A stub's stream that sends `before`, then holds the rest until `release` is set (or PATIENCE runs out)."""

    def __init__(self, chunks: Sequence[bytes], before: int, release: threading.Event) -> None:
        self._chunks = list(chunks)
        self._before = before
        self._release = release
        self.released_by_client: bool | None = None

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks[: self._before]
        self.released_by_client = self._release.wait(PATIENCE)
        yield from self._chunks[self._before :]

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, index: Any) -> Any:
        return self._chunks[index]


def test_a_streamed_chunk_reaches_the_client_before_the_backend_sent_its_last(gateway: ServedGateway, primary: StubServer) -> None:
    release = threading.Event()
    whole = openai_stream(["first", " second"])
    assert whole.stream is not None
    held = HeldStream(whole.stream, 2, release)  # the role chunk and "first"; the rest waits for the client
    primary.route("POST", CHAT, Reply(stream=held, headers=whole.headers))
    pieces = []
    for chunk in openai_client(gateway).chat.completions.create(model="generator", messages=USER, stream=True):
        pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        if "first" in pieces:
            release.set()
    assert "".join(pieces) == "first second"
    assert held.released_by_client, "the client had the first chunk while the backend still held back the rest"


# ---- Tool calls across protocols ---------------------------------------------------------------------------------

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CALL = ("call_1", "get_weather", ['{"city": ', '"Paris"}'])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_anthropic_client_gets_tool_use_from_an_openai_protocol_backend(gateway: ServedGateway, primary: StubServer, stream: bool) -> None:
    primary.route("POST", CHAT, openai_tool_stream([CALL]) if stream else openai_tool_calls([CALL]))
    tools = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}]
    client = anthropic_client(gateway)
    asked = {"model": "generator", "max_tokens": 50, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools}
    if stream:
        with client.messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**asked)
    (use,) = [block for block in message.content if block.type == "tool_use"]
    assert (use.id, use.name, use.input) == ("call_1", "get_weather", {"city": "Paris"}) and message.stop_reason == "tool_use"
    (sent,) = primary.calls("POST", CHAT)
    assert sent.json["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_SCHEMA}}]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_openai_client_gets_tool_calls_from_an_anthropic_backend(gateway: ServedGateway, claude: StubServer, stream: bool) -> None:
    claude.route("POST", "/v1/messages", anthropic_tool_stream([CALL]) if stream else anthropic_tool_use([CALL]))
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_SCHEMA}}]
    client = openai_client(gateway)
    asked = {"model": "claude:claude-big", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools}
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        calls = [(d.id, d.function.name, d.function.arguments) for d in deltas]
        finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    else:
        choice = client.chat.completions.create(**asked).choices[0]
        calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        finish = choice.finish_reason
    assert [(id, name, json.loads(arguments)) for id, name, arguments in calls] == [("call_1", "get_weather", {"city": "Paris"})]
    assert finish == "tool_calls"
    (sent,) = claude.calls("POST", "/v1/messages")
    assert sent.json["tools"] == [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}]


def test_a_stream_still_open_when_the_drain_runs_out_ends_with_an_error_event_not_a_cut(tmp_path: Path) -> None:
    """SIGTERM with `drain_timeout: 2` while a slow stream runs: the client reads an error it can act on, then the end."""
    with StubServer() as backend:
        healthy(backend)
        backend.route("POST", CHAT, openai_stream([f"word{i} " for i in range(200)], chunk_delay=0.05))
        config = f"llm:\n  backend: main\n  main: {{type: llamacpp, base_url: '{backend.url}', models: {{generator: m}}}}\n"
        with served(config + serve_block(drain_timeout=2), tmp_path) as gateway:
            body = {"model": "generator", "messages": USER, "stream": True}
            with httpx.Client(base_url=gateway.url, timeout=60) as client, client.stream("POST", CHAT, json=body) as response:
                lines = response.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                gateway.terminate()
                rest = [line for line in lines if line.startswith("data: ")]
            assert gateway.wait() == 0
    assert first and any("word1" in line for line in rest) and "[DONE]" not in rest[-1]
    error = json.loads(rest[-1].removeprefix("data: "))["error"]
    assert error["type"] == "overloaded_error" and "shutting down" in error["message"]
