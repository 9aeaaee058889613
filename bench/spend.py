"""What spend control adds per model call: the usage ledger and a cache miss, and what a cache hit saves.

Two callers send to one loopback stub server: the bare router, and the router accounted by a
`SpendSession` (prices, a ledger row per attempt) behind the response cache, as
`dse run --cache on` builds them. Every call asks something new, so the cached side always
misses, then writes. The two take turns in batches, so drift in the machine's speed falls on
both alike. A cache hit is timed against the fastest call that reached the stub. Then the
ledger's and the cache's parts are timed alone, with the ledger already holding thousands of
rows, to show where a regression sits: a budgeted admission (a pending row, the run's and the
day's spend read, the row settled) must not grow with the ledger.
Goals (issue 14): the ledger and a miss add at most 0.2 ms a call; a hit is 5x faster than
the fastest stub call. Printed, never asserted.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from stubs import StubServer, openai_chat  # noqa: E402

from dse.backends import ChatRequest, Message  # noqa: E402
from dse.backends.types import Usage  # noqa: E402
from dse.config import Config, load_config  # noqa: E402
from dse.routing import Intent, Resolver, Router, Target  # noqa: E402
from dse.spend import SpendPlan, SpendSession  # noqa: E402
from dse.spend.cache import request_key  # noqa: E402
from dse.spend.ledger import OK, Ended  # noqa: E402

WARM = 100
BATCHES = 200
PER_BATCH = 10
HITS = 2000
ALONE = 2000
MISS_GOAL_MS = 0.2
HIT_GOAL = 5.0

CONFIG = """\
pricing:
  m: {{input: 1.0, output: 2.0}}
llm:
  backend: s
  s: {{type: vllm, base_url: '{url}/v1', models: {{generator: m}}}}
"""
BUDGET = "  budget: {per_run: 1000, per_day: 1000}\n"
"""Both budgets, so every admission reads the run's and the day's spend as a budgeted run does."""

Call = Callable[[list[Message]], Awaitable[object]]


def load(url: str, directory: Path, *, budgeted: bool = False) -> Config:
    path = directory / ("budgeted.yaml" if budgeted else "config.yaml")
    path.write_text(CONFIG.format(url=url) + (BUDGET if budgeted else ""))
    return load_config(path, environ={})


def question(number: int) -> list[Message]:
    return [Message("user", f"question {number}")]


async def timed(call: Call, messages: list[Message]) -> float:
    started = time.perf_counter()
    await call(messages)
    return time.perf_counter() - started


async def interleaved(bare: Call, accounted: Call) -> tuple[list[float], list[float]]:
    """Per-call seconds of each caller, taking turns batch by batch; every call a new question."""
    plain: list[float] = []
    spent: list[float] = []
    number = 0
    for _ in range(BATCHES):
        for call, times in ((bare, plain), (accounted, spent)):
            for _ in range(PER_BATCH):
                number += 1
                times.append(await timed(call, question(number)))
    return plain, spent


async def hits(cached: Call) -> list[float]:
    messages = question(-1)
    await cached(messages)
    return [await timed(cached, messages) for _ in range(HITS)]


async def admit_and_settle(session: SpendSession, target: Target) -> list[float]:
    """What the router asks of spend control around a budgeted attempt: prices, budgets read, a row written and settled."""
    out = []
    for number in range(ALONE):
        request = ChatRequest(model=target.wire_model, messages=tuple(question(number)), max_tokens=target.max_tokens)
        started = time.perf_counter()
        ticket = await session.control.admit(target, request)
        session.control.settle(ticket, endpoint="http://127.0.0.1/v1", usage=Usage(5, 2), error=None)
        out.append(time.perf_counter() - started)
    return out


def begin_and_settle(session: SpendSession) -> list[float]:
    """The ledger's own two writes for an attempt, without the budget reads around them."""
    ledger = session.ledger
    out = []
    for _ in range(ALONE):
        started = time.perf_counter()
        row = ledger.begin(run_id="bench", step_id=None, backend="s", model="m", reserved=0.01, rate_wait=0.0)
        ledger.settle(row, Ended("e", OK, None, 5, 2, 0, 0.001, 0.001))
        out.append(time.perf_counter() - started)
    return out


def cache_miss(session: SpendSession, target: Target) -> list[float]:
    """The key, a lookup that misses and the answer's write: the cache's whole share of a miss."""
    assert session.cache is not None
    out = []
    for number in range(ALONE):
        started = time.perf_counter()
        key = request_key(target, question(-2 - number), None)
        session.cache.get(key, target.cache.ttl)
        session.cache.put(key, target.backend, target.model, {"text": "ok", "finish_reason": "stop", "model": "m"})
        out.append(time.perf_counter() - started)
    return out


async def measure(url: str, directory: Path) -> tuple[dict[str, list[float]], int]:
    """Per-call seconds of each thing timed, and how many rows the ledger held when its parts were timed."""
    config = load(url, directory)
    resolver = Resolver(config)
    target = resolver.resolve(Intent("bench", model_key="generator")).target
    bare = Router(config, resolver)
    routed = Router(config, resolver)
    session = SpendSession(SpendPlan(str(directory / "state"), run_id="bench", cache_mode="on", cache=True), config)
    cached = session.caller(routed)

    async def plain(messages: list[Message]) -> object:
        return await bare.chat(target, messages)

    async def accounted(messages: list[Message]) -> object:
        return await cached.chat(target, messages)

    try:
        for number in range(WARM):  # connections opened, code paths warm
            await plain(question(-10_000 - number))
            await accounted(question(-20_000 - number))
        without, with_spend = await interleaved(plain, accounted)
        times = {"without": without, "with": with_spend, "hit": await hits(accounted)}
        rows = len(session.ledger.rows())
        budgeted = SpendSession(SpendPlan(str(directory / "state"), run_id="bench"), load(url, directory, budgeted=True))
        try:
            times["admit"] = await admit_and_settle(budgeted, target)
        finally:
            budgeted.close()
        times["ledger"] = begin_and_settle(session)
        times["miss"] = cache_miss(session, target)
        return times, rows
    finally:
        session.close()
        await bare.aclose()
        await routed.aclose()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.3f} ms"


def us(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e6:5.0f} us"


def report(times: dict[str, list[float]], rows: int) -> None:
    without, with_spend, hit = times["without"], times["with"], times["hit"]
    mean, median = statistics.fmean, statistics.median
    noise = (statistics.variance(with_spend) / len(with_spend) + statistics.variance(without) / len(without)) ** 0.5
    fastest = min(without)
    print(f"spend: {len(without)} calls each side in {BATCHES} alternating batches of {PER_BATCH}, each a new question")
    print(f"  router alone             : mean {ms(mean(without))}  median {ms(median(without))}")
    print(f"  + ledger and cache miss  : mean {ms(mean(with_spend))}  median {ms(median(with_spend))}")
    print(
        f"  added per call           : mean {ms(mean(with_spend) - mean(without))} (+/- {noise * 1000:.3f})"
        f"  median {ms(median(with_spend) - median(without))}  (goal <= {MISS_GOAL_MS} ms)"
    )
    print(f"  ratio with/without       : mean {mean(with_spend) / mean(without):.3f}  median {median(with_spend) / median(without):.3f}")
    print(f"  cache hit                : median {ms(median(hit))}  ({len(hit)} hits of one question)")
    print(f"  fastest stub call        : {ms(fastest)}")
    print(f"  fastest stub call / hit  : {fastest / median(hit):.1f}x  (goal >= {HIT_GOAL:.0f}x)")
    print(f"  parts alone, median, the ledger holding {rows} rows:")
    print(f"    budgeted admit + settle: {us(times['admit'])}  (prices, budgets read, row written, row settled)")
    print(f"    ledger begin + settle  : {us(times['ledger'])}  (the two writes alone)")
    print(f"    cache key + get + put  : {us(times['miss'])}")


def serve(pipe: Connection) -> None:
    """The stub server, answering every chat call alike, until told to stop."""
    with StubServer() as stub:
        stub.route("POST", "/v1/chat/completions", openai_chat("ok", model="m"))
        pipe.send(stub.url)
        pipe.recv()


@contextmanager
def stub_process() -> Iterator[str]:
    """The stub in a process of its own, as a real server is: in this one, its threads would take the GIL from the caller timed."""
    here, there = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve, args=(there,), daemon=True)
    process.start()
    try:
        yield here.recv()
    finally:
        here.send("stop")
        process.join()


def main() -> None:
    with stub_process() as url, tempfile.TemporaryDirectory() as directory:
        times, rows = asyncio.run(measure(url, Path(directory)))
    report(times, rows)


if __name__ == "__main__":
    main()
