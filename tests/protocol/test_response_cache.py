"""The response cache over real sockets: what a re-run sends, what it is answered with, what it keeps.

Each run here goes through `prepare` and `run_workflow` (or `dse run`) against a stub server
that counts the requests it receives, so "answered from the cache" means "the server saw
nothing". The key's coverage is also checked as a property of `request_key` alone, and the
cache file's failure modes (damaged, shared by concurrent writers, a stream stopped early)
against `ResponseCache` and `CachedCaller` directly.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stubs import StubServer, openai_chat, openai_stream

from dse.backends import ChatResponse, Message
from dse.backends.types import JsonOutput, StreamChunk
from dse.cli import main
from dse.config.model import CacheSettings
from dse.runner import prepare, run_workflow
from dse.routing import Target
from dse.spend import CachedCaller, ResponseCache
from dse.errors import StateFileUnusable
from dse.spend.cache import FILE, request_key
from dse.spend.ledger import FILE as LEDGER, UsageLedger
from dse.workflow import RunResult
from dse.workflow.journal import read_run, run_directory

CHAT = "/v1/chat/completions"
KEY = "sk-cache-secret-4242"
ANSWER = '{"verdict": "fine"}'


def config(url: str, *, cache: str = "on", key: str = KEY) -> str:
    return (
        f"llm:\n  backend: s\n  cache: {cache}\n"
        f"  s: {{type: vllm, base_url: '{url}/v1', api_key: {key}, models: {{generator: m, other: m2}}}}\n"
    )


def workflow(**step: Any) -> str:
    """One model step (temperature 0 unless given), written as JSON, which is YAML too."""
    ask = {"id": "ask", "prompt": "Say hi.", "temperature": 0, **step}
    return json.dumps({"name": "cached", "steps": [ask], "outputs": {"answer": "{{ steps.ask.output }}"}})


class Runs:
    """Runs of one workflow and config in one state directory, as a developer re-runs while editing."""

    def __init__(self, stub: StubServer, tmp_path: Path) -> None:
        self.stub = stub
        self.dir = tmp_path
        self.state = tmp_path / ".dse"

    @property
    def sent(self) -> int:
        """Requests the server has received so far."""
        return len(self.stub.calls("POST", CHAT))

    def run(self, wf: str, cfg: str | None = None, **options: Any) -> RunResult:
        (self.dir / "wf.yaml").write_text(wf)
        (self.dir / "config.yaml").write_text(cfg or config(self.stub.url))
        prepared = prepare(self.dir / "wf.yaml", self.dir / "config.yaml")
        result, _ = asyncio.run(run_workflow(prepared, state_dir=self.state, **options))
        assert result.status == "done", {k: s.error for k, s in result.steps.items()}
        return result

    def cli(self, wf: str, cfg: str, *flags: str) -> int:
        (self.dir / "wf.yaml").write_text(wf)
        (self.dir / "config.yaml").write_text(cfg)
        return main(["run", str(self.dir / "wf.yaml"), "--config", str(self.dir / "config.yaml"), "--state-dir", str(self.state), *flags])

    def answers(self) -> int:
        """Answers in cache.db, read with plain SQLite: what a run wrote, whatever the cache object says."""
        with closing(sqlite3.connect(self.state / FILE)) as db:
            return int(db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def stats_delta(self, before: tuple[int, int]) -> tuple[int, int]:
        stats = self.stats()
        return stats[0] - before[0], stats[1] - before[1]

    def stats(self) -> tuple[int, int]:
        cache = ResponseCache(self.state / FILE)
        try:
            stats = cache.stats()
        finally:
            cache.close()
        return stats.hits, stats.misses


@pytest.fixture
def runs(stub: StubServer, tmp_path: Path) -> Runs:
    stub.route("POST", CHAT, openai_chat(ANSWER, usage=(11, 4)))
    return Runs(stub, tmp_path)


# --- a re-run costs nothing and says so --------------------------------------------------------


def test_a_second_identical_run_sends_nothing_and_is_all_hits(runs: Runs) -> None:
    wf = json.dumps(
        {
            "name": "two",
            "steps": [{"id": "ask", "prompt": "Say hi.", "temperature": 0}, {"id": "judge", "prompt": "Judge {{ steps.ask.output }}", "temperature": 0}],
        }
    )
    first = runs.run(wf)
    assert runs.sent == 2 and all(s.cached_calls == 0 for s in first.steps.values())
    before = runs.stats()
    second = runs.run(wf)
    assert runs.sent == 2, "the re-run sent nothing"
    assert {k: s.output for k, s in second.steps.items()} == {k: s.output for k, s in first.steps.items()}
    assert all(s.cached_calls == 1 and s.endpoint == "cache" and s.cost == 0 for s in second.steps.values())
    assert runs.stats_delta(before) == (2, 0), "100 % hits for the re-run"
    record = read_run(run_directory(runs.state, second.run_id or ""))
    assert {k: e["cached_calls"] for k, e in record.steps.items()} == {"ask": 1, "judge": 1}, "the journal marks the steps cached"
    ledger = UsageLedger(runs.state / LEDGER)
    try:
        rows = ledger.rows(run_id=second.run_id)
        (total,) = ledger.report(run_id=second.run_id)
    finally:
        ledger.close()
    assert [(r["step_id"], r["from_cache"], r["cost"], r["input_tokens"]) for r in rows] == [("ask", 1, 0, 0), ("judge", 1, 0, 0)]
    assert total["cached_calls"] == total["attempts"] == 2 and total["cost"] == 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"temperature": 0.3}, id="temperature"),
        pytest.param({"system": "You are terse."}, id="system prompt"),
        pytest.param({"model": "m2"}, id="model"),
        pytest.param({"max_tokens": 99}, id="max_tokens"),
        pytest.param({"output": "json", "output_schema": {"type": "object", "properties": {"other": {"type": "string"}}}}, id="output schema"),
    ],
)
def test_changing_one_part_of_the_request_is_a_miss(runs: Runs, change: dict[str, Any]) -> None:
    """Sampled calls are cached here (`sampled: true`), so a temperature change is a miss because of the key alone."""
    cfg = config(runs.stub.url, cache="{mode: on, sampled: true}")
    base = {"temperature": 0.2, "output": "json", "output_schema": {"type": "object", "properties": {"verdict": {"type": "string"}}}}
    runs.run(workflow(**base), cfg)
    runs.run(workflow(**base), cfg)
    assert runs.sent == 1, "unchanged, the request is a hit"
    runs.run(workflow(**{**base, **change}), cfg)
    assert runs.sent == 2, f"changing only {sorted(change)} is a miss"
    before, after = (r.json for r in runs.stub.calls("POST", CHAT))
    assert before != after, "the change reached the wire, so the two requests really differ"


def test_a_new_api_key_keeps_the_answers(runs: Runs) -> None:
    """The key is not part of what is hashed: a rotated credential reads the same answers."""
    runs.run(workflow())
    runs.run(workflow(), config(runs.stub.url, key="sk-rotated-7777"))
    assert runs.sent == 1


def test_an_answer_older_than_its_ttl_is_a_miss(runs: Runs) -> None:
    cfg = config(runs.stub.url, cache="{mode: on, ttl: 60}")
    runs.run(workflow(), cfg)
    with closing(sqlite3.connect(runs.state / FILE)) as db:  # an hour passes, as far as the cache can tell
        db.execute("UPDATE answers SET stored_at = stored_at - 3600")
        db.commit()
    again = runs.run(workflow(), cfg)
    assert runs.sent == 2 and again.steps["ask"].cached_calls == 0
    assert runs.run(workflow(), cfg).steps["ask"].cached_calls == 1, "the fresh answer replaced the stale one"


def test_ttl_is_measured_on_the_cache_clock() -> None:
    now = [1000.0]
    cache = ResponseCache(Path(":memory:"), clock=lambda: now[0])
    cache.put("k", "s", "m", {"text": "t"})
    now[0] += 60
    assert cache.get("k", ttl=60) == {"text": "t"}
    now[0] += 0.001
    assert cache.get("k", ttl=60) is None
    assert (cache.hits, cache.misses) == (1, 1)
    cache.close()


# --- modes and where they are set ---------------------------------------------------------------


def test_read_only_reads_and_never_writes(runs: Runs) -> None:
    read_only = config(runs.stub.url, cache="read_only")
    runs.run(workflow(), read_only)
    assert runs.answers() == 0, "a miss in read_only leaves cache.db without answers"
    runs.run(workflow(), read_only)
    assert runs.sent == 2
    runs.run(workflow())  # `on` keeps the answer
    assert runs.run(workflow(), read_only).steps["ask"].cached_calls == 1 and runs.sent == 3


def test_write_only_writes_and_never_reads(runs: Runs) -> None:
    write_only = config(runs.stub.url, cache="write_only")
    runs.run(workflow(), write_only)
    assert runs.answers() == 1
    assert runs.run(workflow(), write_only).steps["ask"].cached_calls == 0
    assert runs.sent == 2, "the second run still reached the server"
    assert runs.run(workflow()).steps["ask"].cached_calls == 1, "what write_only kept is there for `on`"


def test_dse_run_cache_off_overrides_the_config(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(runs.stub.url)
    assert runs.cli(workflow(), cfg) == 0
    assert runs.cli(workflow(), cfg, "--cache", "off") == 0
    assert runs.sent == 2
    assert runs.cli(workflow(), cfg) == 0
    assert runs.sent == 2, "without --cache off the same config hits"
    capsys.readouterr()


STEP_CACHE = "name: s\nsteps:\n  - id: ask\n    prompt: Say hi.\n    temperature: 0\n    cache: {mode}\n"


@pytest.mark.parametrize(("globally", "step", "sent"), [("on", "off", 2), ("off", "on", 1)])
def test_a_step_cache_setting_overrides_the_global_one(runs: Runs, globally: str, step: str, sent: int) -> None:
    """Bare YAML on/off, which YAML 1.1 reads as booleans, are modes at both levels."""
    cfg = config(runs.stub.url, cache=globally)
    for _ in range(2):
        runs.run(STEP_CACHE.format(mode=step), cfg)
    assert runs.sent == sent


@pytest.mark.parametrize(
    ("cache", "flags", "sent"),
    [("on", (), 2), ("{mode: on, sampled: true}", (), 1), ("off", ("--cache", "on"), 1)],
    ids=["plain on", "sampled: true", "--cache on"],
)
def test_sampled_calls_are_cached_only_where_asked(
    runs: Runs, cache: str, flags: tuple[str, ...], sent: int, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        assert runs.cli(workflow(temperature=0.7), config(runs.stub.url, cache=cache), *flags) == 0
    assert runs.sent == sent
    capsys.readouterr()


def test_no_temperature_at_all_counts_as_sampled(runs: Runs) -> None:
    """With no temperature sent the server samples at its default, so the answer varies."""
    wf = json.dumps({"name": "t", "steps": [{"id": "ask", "prompt": "Say hi."}]})
    runs.run(wf)
    runs.run(wf)
    assert runs.sent == 2


def test_a_streamed_step_is_served_from_the_cache(stub: StubServer, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_stream(["Hel", "lo ", "there"]))
    runs = Runs(stub, tmp_path)
    chunks: list[str] = []
    first = runs.run(workflow(stream=True))
    second = runs.run(workflow(stream=True), on_chunk=lambda step, text: chunks.append(text))
    assert runs.sent == 1, "the server saw nothing the second time"
    assert chunks == ["Hello there"], "one chunk, the whole answer"
    assert second.steps["ask"].output == first.steps["ask"].output == "Hello there"
    assert second.steps["ask"].cached_calls == 1 and first.steps["ask"].cached_calls == 0


# --- secrets ------------------------------------------------------------------------------------


def test_a_secret_the_server_echoes_is_kept_scrubbed(stub: StubServer, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat(f"your key is {KEY}", model=f"model-{KEY}"))
    runs = Runs(stub, tmp_path)
    runs.run(workflow())
    stored = b"".join(p.read_bytes() for p in runs.state.glob(f"{FILE}*"))
    assert KEY.encode() not in stored, "neither the key nor the echo reaches cache.db (or its WAL)"
    assert b"your key is ***" in stored
    assert runs.run(workflow()).steps["ask"].output == "your key is ***"


# --- the key, as a property ----------------------------------------------------------------------

TARGET = Target("s", "vllm", "m", "generator", "test", (), temperature=0.0, max_tokens=100)
texts = st.text(max_size=20)
ROLES = st.sampled_from(["system", "user", "assistant"])
messages = st.lists(st.tuples(ROLES, texts), min_size=1, max_size=4)
schemas = st.none() | st.dictionaries(st.sampled_from(["type", "title", "required"]), texts, max_size=2)
requests = st.fixed_dictionaries(
    {
        "backend": st.sampled_from(["s", "t"]),
        "model": st.sampled_from(["m", "m2"]),
        "temperature": st.none() | st.floats(0, 2),
        "max_tokens": st.none() | st.integers(1, 4096),
        "messages": messages,
        "json_output": st.none() | schemas.map(lambda s: JsonOutput(s, "ask")),
    }
)


def key_of(request: Mapping[str, Any]) -> str:
    target = replace(TARGET, backend=request["backend"], model=request["model"], temperature=request["temperature"], max_tokens=request["max_tokens"])
    return request_key(target, [Message(r, c) for r, c in request["messages"]], request["json_output"])


def changed(request: dict[str, Any], part: str, data: st.DataObject) -> dict[str, Any]:
    """The request with one part (or one message's role, or its content) drawn anew until it differs."""
    if part not in ("role", "content"):
        return {**request, part: data.draw(requests.map(lambda r: r[part]).filter(lambda v: v != request[part]))}
    said = list(request["messages"])
    index = data.draw(st.integers(0, len(said) - 1))
    role, content = said[index]
    if part == "role":
        said[index] = (data.draw(ROLES.filter(lambda r: r != role)), content)
    else:
        said[index] = (role, data.draw(texts.filter(lambda c: c != content)))
    return {**request, "messages": said}


@settings(max_examples=200, deadline=None)
@given(request=requests, part=st.sampled_from(["backend", "model", "temperature", "max_tokens", "role", "content", "json_output"]), data=st.data())
def test_the_key_changes_with_any_one_part_of_the_request(request: dict[str, Any], part: str, data: st.DataObject) -> None:
    assert key_of(copy.deepcopy(request)) == key_of(request), "equal requests, equal keys"
    assert key_of(changed(request, part, data)) != key_of(request)


def test_a_reordered_schema_is_the_same_request() -> None:
    one = JsonOutput({"type": "object", "required": ["a"]}, "ask")
    two = JsonOutput({"required": ["a"], "type": "object"}, "ask")
    said = [Message("user", "hi")]
    assert request_key(TARGET, said, one) == request_key(TARGET, said, two)


# --- the cache file when things go wrong -----------------------------------------------------------


@pytest.mark.parametrize("damage", ["not a database", "a directory"])
def test_a_cache_file_that_cannot_be_used_is_one_clear_error(
    runs: Runs, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runs.state.mkdir()
    if damage == "a directory":
        (runs.state / FILE).mkdir()
    else:
        (runs.state / FILE).write_bytes(b"these bytes are no SQLite file" * 100)
    with pytest.raises(StateFileUnusable) as info:
        ResponseCache(runs.state / FILE)
    assert str(runs.state / FILE) in str(info.value) and "--cache off" in str(info.value)
    assert runs.cli(workflow(), config(runs.stub.url)) == 2
    err = capsys.readouterr().err
    assert "dse: error: the response cache" in err and "Traceback" not in err
    assert runs.sent == 0, "nothing was sent"
    assert runs.cli(workflow(), config(runs.stub.url), "--cache", "off") == 0, "--cache off runs without it"


def test_concurrent_writers_share_one_cache_file(tmp_path: Path) -> None:
    """Four connections (as four runs would have) write and count at once: WAL and the busy wait lose nothing."""
    path = tmp_path / FILE
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            cache = ResponseCache(path)
        except BaseException as exc:  # the others must not wait for this one at the barrier
            errors.append(exc)
            start.abort()
            return
        try:
            start.wait(timeout=60)
            for i in range(50):
                cache.put(f"{n}-{i}", "s", "m", {"text": str(i)})
                assert cache.get(f"{n}-{i}", ttl=60) is not None
                cache.get(f"absent-{n}-{i}", ttl=60)
            cache.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    cache = ResponseCache(path)
    stats = cache.stats()
    cache.close()
    assert (stats.entries, stats.hits, stats.misses) == (200, 200, 200)


class _Inner:
    """A caller whose stream says whether it was closed: what the router's stream does when it is (settles, frees its slot)."""

    def __init__(self) -> None:
        self.closed = False
        self.sent = 0

    async def chat(self, target: Target, messages: list[Message], **_: Any) -> ChatResponse:
        self.sent += 1
        return ChatResponse(text="whole", model=target.model, backend=target.backend, endpoint="http://x")

    async def stream(self, target: Target, messages: list[Message], **_: Any) -> AsyncIterator[StreamChunk]:
        self.sent += 1
        try:
            yield StreamChunk("one ")
            yield StreamChunk("two", finish_reason="stop", backend=target.backend)
            await asyncio.sleep(0)
        finally:
            self.closed = True


CACHED = replace(TARGET, cache=CacheSettings(mode="on"))


def test_a_stream_stopped_early_closes_the_stream_behind_it() -> None:
    inner = _Inner()

    async def main() -> None:
        cache = ResponseCache(Path(":memory:"))
        stream = CachedCaller(inner, cache).stream(CACHED, [Message("user", "hi")])
        assert isinstance(stream, AsyncIterator)
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        assert inner.closed, "closed at once, not when the garbage collector gets to it"
        assert cache.stats().entries == 0, "half an answer is not kept"

    asyncio.run(main())


def test_a_stream_stopped_at_its_last_chunk_is_kept() -> None:
    inner = _Inner()

    async def main() -> list[StreamChunk]:
        cache = ResponseCache(Path(":memory:"))
        caller = CachedCaller(inner, cache)
        said = [Message("user", "hi")]
        async for chunk in caller.stream(CACHED, said):
            if chunk.finish_reason:
                break
        return [c async for c in caller.stream(CACHED, said)]

    (hit,) = asyncio.run(main())
    assert (hit.text, hit.cached, hit.finish_reason, inner.sent) == ("one two", True, "stop", 1)


def test_an_answer_from_a_fallback_backend_is_not_kept_for_the_target() -> None:
    """A fallback answered for another backend; kept under the target's key it would pass for the target's answer."""

    class Fallback(_Inner):
        async def chat(self, target: Target, messages: list[Message], **_: Any) -> ChatResponse:
            self.sent += 1
            return ChatResponse(text="spare", model="x", backend="spare", endpoint="http://y")

    inner = Fallback()

    async def main() -> None:
        caller = CachedCaller(inner, ResponseCache(Path(":memory:")))
        for _ in range(2):
            await caller.chat(CACHED, [Message("user", "hi")])

    asyncio.run(main())
    assert inner.sent == 2
