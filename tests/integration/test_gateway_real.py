"""`dse serve` over two real llama-server replicas, driven by the official `openai` and `anthropic` SDKs.

One gateway serves the module (one managed backend, two replicas, embeddings on); the drain
test starts its own, since it stops it. Every answer here came from a real model through the
real CLI process: what a user pointing an SDK at `dse serve` gets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from gateway import ServedGateway
from helpers import llama_server_pids

pytestmark = pytest.mark.integration

# No repeat penalty: the small model then runs on to max_tokens, which the streaming test wants.
CONFIG = """\
llm:
  backend: local
  global_defaults: {temperature: 0.0, max_tokens: 16}
  local:
    type: llamacpp
    managed: {model: smollm2, replicas: 2, threads: 1, parallel: 2, embeddings: true}
    models: {generator: smollm2}
"""
HELLO = [{"role": "user", "content": "Say hello."}]
LONG = [{"role": "user", "content": "Write a long story about a dragon."}]


@dataclass(frozen=True)
class Served:
    url: str
    replicas: frozenset[str]


def _write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "config.yaml"
    path.write_text(CONFIG + extra)
    return path


def _replicas(url: str) -> frozenset[str]:
    """The endpoint URLs `/health` reports for the one backend."""
    [backend] = httpx.get(f"{url}/health").json()["backends"]
    return frozenset(e["url"] for e in backend["endpoints"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("gateway")
    with ServedGateway(_write_config(home), home / ".dse") as gateway:
        yield Served(gateway.url, _replicas(gateway.url))
    assert gateway.exit_code == 0, gateway.stderr()


@pytest.fixture
def client(served: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def claude(served: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=served.url, api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_health_reports_both_replicas_healthy(served: Served) -> None:
    response = httpx.get(f"{served.url}/health")
    assert response.status_code == 200
    document = response.json()
    assert document["status"] == "ok" and document["default_backend"] == "local"
    [backend] = document["backends"]
    assert backend["status"] == "healthy" and len(backend["endpoints"]) == 2
    assert all(e["status"] == "healthy" for e in backend["endpoints"])


def test_openai_chat_answers_with_text_usage_and_what_served_it(served: Served, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="generator", messages=HELLO, max_tokens=8)
    answer = raw.parse()
    assert answer.choices[0].message.content and answer.choices[0].message.content.strip()
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 8
    assert answer.model == "local:smollm2"
    assert raw.headers["x-dse-backend"] == "local" and raw.headers["x-dse-model"] == "smollm2"
    assert raw.headers["x-dse-endpoint"] in served.replicas


def test_openai_stream_sends_each_chunk_while_the_model_is_still_generating(client: openai.OpenAI) -> None:
    """The client holds its first content chunk while the replica's `/slots` still shows that call generating.

    Order, not time: the gateway sent chunk 1 before the model had produced the rest of the
    answer. Had the gateway held the stream back until the end (buffering), the slot would be
    idle, and its token count final, by the time the client saw any chunk. At temperature 0
    the model tells this story on past max_tokens, so generation runs well beyond the first token.
    """
    raw = client.chat.completions.with_raw_response.create(
        model="generator", messages=LONG, max_tokens=128, stream=True, stream_options={"include_usage": True}
    )
    endpoint = raw.headers["x-dse-endpoint"]
    chunks = iter(raw.parse())
    first = next(c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content)
    busy = [s for s in httpx.get(f"{endpoint}/slots").json() if s["is_processing"]]
    rest = list(chunks)
    assert len(busy) == 1, "the call was still generating on its replica when the client held its first chunk"
    decoded_then = busy[0]["next_token"][0]["n_decoded"]
    pieces = [c.choices[0].delta.content for c in rest if c.choices and c.choices[0].delta.content]
    finish = [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason]
    usage = rest[-1].usage
    assert first and len(pieces) >= 10 and finish == ["length"]
    assert usage is not None and usage.completion_tokens == 128 and not rest[-1].choices
    assert decoded_then < usage.completion_tokens


def test_openai_embeddings_as_floats_and_base64(served: Served, client: openai.OpenAI) -> None:
    width = _embedding_width(next(iter(served.replicas)))
    floats = client.embeddings.create(model="smollm2", input=["a red apple", "a blue sky"])
    assert [len(d.embedding) for d in floats.data] == [width, width] and [d.index for d in floats.data] == [0, 1]
    assert floats.model == "local:smollm2" and floats.usage.prompt_tokens > 0
    packed = client.embeddings.create(model="local:smollm2", input=["a red apple"], encoding_format="base64")
    encoded = packed.data[0].embedding
    assert isinstance(encoded, str)
    decoded = struct.unpack(f"<{width}f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-4)


def _embedding_width(replica: str) -> int:
    """The model's embedding size, as its llama-server reports it."""
    [model] = httpx.get(f"{replica}/v1/models").json()["data"]
    return int(model["meta"]["n_embd"])


def test_openai_models_lists_roles_backend_models_and_auto(client: openai.OpenAI) -> None:
    owners = {m.id: m.owned_by for m in client.models.list()}
    assert owners["generator"] == "local" and owners["local:smollm2"] == "local" and owners["auto"] == "dse"
    assert owners["smollm2"] == "local", "the embedding model"


def test_anthropic_messages_create(served: Served, claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(model="generator", max_tokens=8, messages=HELLO)
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens") and message.model == "local:smollm2"
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8
    assert raw.headers["x-dse-endpoint"] in served.replicas


def test_anthropic_messages_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="generator", max_tokens=24, messages=LONG) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 5 and "".join(pieces) == final.content[0].text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 24 and final.usage.input_tokens > 0


def test_anthropic_models_list(claude: anthropic.Anthropic) -> None:
    names = {m.id for m in claude.models.list()}
    assert {"generator", "local:smollm2", "auto"} <= names


def test_concurrent_calls_use_both_replicas(served: Served) -> None:
    """Eight calls at once on four slots: the balancer's least-loaded choice must put load on both replicas."""

    async def eight() -> set[str]:
        async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as sdk:
            calls = [sdk.chat.completions.with_raw_response.create(model="generator", messages=HELLO, max_tokens=4) for _ in range(8)]
            return {raw.headers["x-dse-endpoint"] for raw in await asyncio.gather(*calls)}

    assert asyncio.run(eight()) == served.replicas
    in_flight = re.findall(r'^dse_in_flight\{backend="local",endpoint="([^"]+)"\} 0$', httpx.get(f"{served.url}/metrics").text, re.M)
    assert set(in_flight) == served.replicas and len(in_flight) == 2


# A stream's clean outcomes in the drain test.
DONE, REFUSED = "done", "refused"


@dataclass
class Drain:
    """What the drain test's streams share: how many have their first chunk, and whether SIGTERM was sent."""

    wanted: int
    started: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def first_chunk(self) -> None:
        self.started += 1
        if self.started >= self.wanted:
            self.enough.set()


async def _one_stream(http: httpx.AsyncClient, drain: Drain) -> tuple[str, bool]:
    """What became of one stream, and whether it ended after the SIGTERM.

    Clean outcomes: DONE, a 200 stream whose last events are a finish_reason and `[DONE]`; an
    HTTP error status with a JSON `error` body (the gateway refusing it: "http STATUS TYPE");
    REFUSED, a request the server never took (connection refused, or closed before any
    response byte), which a client can safely send again. Anything else is "cut: ...": a 200
    stream that ended early, a non-JSON error, a disconnect mid-answer.
    """
    body = {"model": "generator", "messages": HELLO, "max_tokens": 4, "stream": True}
    events: list[str] = []
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return _error_outcome(response.status_code, await response.aread()), drain.stopped.is_set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                    if len(events) == 1:
                        drain.first_chunk()
    except httpx.ConnectError:
        return REFUSED, drain.stopped.is_set()
    except httpx.TransportError as exc:
        never_answered = isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)
        return (REFUSED if never_answered else f"cut: {exc!r} after {len(events)} events"), drain.stopped.is_set()
    return (DONE if _finished(events) else f"cut: stream ended with {events[-2:]}"), drain.stopped.is_set()


def _error_outcome(status: int, body: bytes) -> str:
    try:
        return f"http {status} {json.loads(body)['error']['type']}"
    except (ValueError, KeyError, TypeError):
        return f"cut: status {status} with a body that is no JSON error: {body[:200]!r}"


def _finished(events: list[str]) -> bool:
    """The stream's last event is `[DONE]`, and the one before it carries a finish_reason."""
    if len(events) < 2 or events[-1] != "[DONE]":
        return False
    try:
        closing = json.loads(events[-2])
    except ValueError:
        return False
    return any(choice.get("finish_reason") in ("stop", "length") for choice in closing.get("choices", []))


def test_sigterm_drains_two_hundred_streams_then_stops_its_llama_servers(tmp_path: Path) -> None:
    """SIGTERM once some of 200 concurrent streams have their first chunk: every stream ends cleanly, then all stops.

    The drain is given ample time (serve.drain_timeout) so that what is checked is that
    requests in flight are finished rather than cut, and that at least one stream was still
    running at the signal and completed after it. The gateway must exit 0 and leave none of
    the llama-servers it started running.
    """
    config = _write_config(tmp_path, "serve: {drain_timeout: 600}\n")
    gateway = ServedGateway(config, tmp_path / ".dse")
    with gateway:
        servers = gateway.children() & llama_server_pids()
        assert len(servers) == 2

        async def scenario() -> list[tuple[str, bool]]:
            drain = Drain(wanted=10)
            limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
            async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=httpx.Timeout(600.0)) as http:
                streams = [asyncio.create_task(_one_stream(http, drain)) for _ in range(200)]
                await drain.enough.wait()
                gateway.terminate()
                drain.stopped.set()
                return await asyncio.gather(*streams)

        outcomes = asyncio.run(scenario())
        assert gateway.wait() == 0, gateway.stderr()
    kinds = Counter(kind for kind, _ in outcomes)
    assert set(kinds) <= {DONE, REFUSED}, kinds
    assert any(kind == DONE and after for kind, after in outcomes), "a stream in flight at SIGTERM was finished, not cut"
    assert not servers & llama_server_pids(), "a llama-server outlived dse serve"
    assert "Traceback" not in gateway.stderr()
