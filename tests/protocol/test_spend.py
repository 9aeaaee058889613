"""Spend control end to end, over real sockets: the usage ledger, prices, budgets, rate limits, confirmation, Ctrl-C, secrets.

Every number is checked where the user would check it: the rows in `<state>/usage.db`, the
step records in the run's journal, the requests the stub server actually received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stubs import Received, Reply, StubServer, openai_chat, openai_error

from dse.config.model import RateLimit
from dse.errors import SpendRefused
from dse.runner import prepare, run_workflow
from dse.spend import SpendControl, UsageLedger
from dse.spend.ledger import FILE, Ended
from dse.spend.rate import Pace
from dse.workflow import RunResult

CHAT = "/v1/chat/completions"
PRICES = "pricing:\n  big: {input: 5.0, output: 15.0}\n  cheap: {input: 1000.0, output: 2000.0}\n"
"""USD per million tokens: `cheap` is dear enough that a handful of calls crosses a budget of cents."""


def cheap_cost(prompt: int, completion: int) -> float:
    return (prompt * 1000.0 + completion * 2000.0) / 1e6


def backend(name: str, url: str, model: str, extra: str = "", kind: str = "openai") -> str:
    """One backend block under `llm:`."""
    return f"  {name}: {{type: {kind}, api_key: sk-test, base_url: '{url}', models: {{generator: {model}}}{extra}}}\n"


def run(write, tmp_path: Path, config: str, workflow: str) -> tuple[RunResult, Path]:
    """One whole run in this process, state under `tmp_path/.dse`; the result and its journal directory."""
    prepared = prepare(write("wf.yaml", workflow), write("config.yaml", config))
    result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    assert result.run_id is not None
    return result, tmp_path / ".dse" / "runs" / result.run_id


def ledger_rows(state: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    ledger = UsageLedger(state / FILE)
    try:
        return ledger.rows(run_id=run_id)
    finally:
        ledger.close()


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def step_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in events(run_dir) if e["event"] == "step_finished"}


def tokens(rows: list[dict[str, Any]]) -> int:
    return sum(r["input_tokens"] + r["output_tokens"] for r in rows)


# ---- The ledger: every attempt, its tokens and its cost ---------------------------------


def test_every_attempt_is_a_ledger_row_whose_tokens_and_cost_match_the_journal(write, tmp_path: Path) -> None:
    """A 500 retried, a fallback, a fan-out, a local server and an unpriced model: one row per request, priced from `pricing:`."""
    with StubServer() as primary, StubServer() as spare, StubServer() as local:
        primary.route("POST", CHAT, openai_error(500, "boom"))
        spare.route("POST", CHAT, openai_chat("fine", usage=(11, 7)))
        local.route("POST", CHAT, openai_chat("free", usage=(13, 3)))
        config = (
            "llm:\n  backend: main\n  fallback_backends: [spare]\n  retry: {attempts: 2, backoff: 0}\n"
            + backend("main", f"{primary.url}/v1", "big")
            + backend("spare", f"{spare.url}/v1", "cheap")
            + backend("box", local.url, "smol", kind="llamacpp")
            + PRICES
        )
        workflow = (
            "name: spend\nsteps:\n  - id: ask\n    prompt: hi\n"
            "  - id: each\n    backend: spare\n    for_each: [a, b, c]\n    prompt: 'item {{ item }}'\n"
            "  - id: free\n    backend: box\n    prompt: local\n"
            "  - id: mystery\n    backend: spare\n    model: mystery-9000\n    prompt: unpriced\n"
        )
        result, run_dir = run(write, tmp_path, config, workflow)
    assert result.status == "done", {k: s.error for k, s in result.steps.items()}
    rows = ledger_rows(tmp_path / ".dse", result.run_id)
    by_step = {step: [r for r in rows if r["step_id"] == step] for step in ("ask", "each", "free", "mystery")}
    assert len(rows) == 2 + 1 + 3 + 1 + 1 == len(primary.requests) + len(spare.requests) + len(local.requests)

    failed, failed_again, ok = by_step["ask"]
    for row in (failed, failed_again):
        assert (row["outcome"], row["backend"], row["model"], row["endpoint"]) == ("failed", "main", "big", f"{primary.url}/v1")
        assert row["error_kind"] == "BackendUnavailable" and tokens([row]) == 0 and row["cost"] == 0
    assert (ok["outcome"], ok["backend"], ok["model"], ok["endpoint"], ok["error_kind"]) == ("ok", "spare", "cheap", f"{spare.url}/v1", None)
    assert (ok["input_tokens"], ok["output_tokens"]) == (11, 7)

    for row in by_step["ask"][2:] + by_step["each"]:
        assert row["cost"] == pytest.approx(cheap_cost(row["input_tokens"], row["output_tokens"]))
    (free,) = by_step["free"]
    assert (free["backend"], free["cost"], tokens([free])) == ("box", 0, 16), "a local server costs nothing, however many tokens"
    (mystery,) = by_step["mystery"]
    assert mystery["outcome"] == "ok" and mystery["cost"] is None, "an unknown price stays unknown, never 0"

    records = step_records(run_dir)
    assert tokens(rows) == sum(r["prompt_tokens"] + r["completion_tokens"] for r in records.values())
    for step, step_rows in by_step.items():
        assert tokens(step_rows) == records[step]["prompt_tokens"] + records[step]["completion_tokens"], step
    assert records["each"]["cost"] == pytest.approx(3 * cheap_cost(11, 7))
    assert records["free"]["cost"] == 0 and records["mystery"]["cost"] is None


# ---- Budgets -----------------------------------------------------------------------------

FAN_OUT = "name: fan\nmax_parallel: 1\nsteps:\n  - id: each\n    max_tokens: 10\n    for_each: '{{ range(10) | list }}'\n    prompt: 'item {{ item }}'\n"
"""Ten calls one at a time. Each is 6 prompt tokens by the conservative count plus max_tokens 10:
a worst case of $0.026 at 1000/2000 USD per million; the stub's 5+5 tokens cost $0.015."""


def budget_config(url: str, budget: str, backend_budget: str = "") -> str:
    return "llm:\n  backend: s\n" + budget + backend("s", f"{url}/v1", "cheap", backend_budget) + PRICES


def refused_step(run_dir: Path) -> str:
    record = step_records(run_dir)["each"]
    assert record["status"] == "failed"
    return str(record["error"])


@pytest.mark.parametrize(
    ("budget", "backend_budget", "limit"),
    [
        ("  budget: {per_run: 0.08}\n", "", "llm.budget.per_run"),
        ("", ", budget: {per_run: 0.08}", "llm.s.budget.per_run"),
    ],
)
def test_a_budget_crossed_mid_fan_out_refuses_the_rest_before_they_are_sent(
    stub: StubServer, write, tmp_path: Path, budget: str, backend_budget: str, limit: str
) -> None:
    """After 4 calls ($0.06 spent) a fifth could reach $0.086, over $0.08: refused, and the stub never sees it."""
    stub.route("POST", CHAT, openai_chat("ok", usage=(5, 5)))
    result, run_dir = run(write, tmp_path, budget_config(stub.url, budget, backend_budget), FAN_OUT)
    assert result.status == "failed"
    assert len(stub.requests) == 4
    error = refused_step(run_dir)
    assert "budget" in error and limit in error, error
    rows = ledger_rows(tmp_path / ".dse", result.run_id)
    assert [r["outcome"] for r in rows] == ["ok"] * 4, "a refused call leaves no row: nothing was sent"


def test_calls_in_flight_hold_their_worst_case_against_the_budget(stub: StubServer, write, tmp_path: Path) -> None:
    """Ten at once, answers held back: $0.08 holds three worst cases of $0.026, so the fourth is refused while they are out."""
    stub.route("POST", CHAT, Reply(json=openai_chat("ok", usage=(5, 5)).json, delay=0.5))
    workflow = FAN_OUT.replace("max_parallel: 1", "max_parallel: 10")
    result, run_dir = run(write, tmp_path, budget_config(stub.url, "  budget: {per_run: 0.08}\n"), workflow)
    assert result.status == "failed" and "llm.budget.per_run" in refused_step(run_dir)
    assert len(stub.requests) == 3


def test_a_second_run_on_the_same_day_sees_the_first_runs_spend(stub: StubServer, write, tmp_path: Path) -> None:
    """per_day counts every run's rows in the ledger: the second run, with the same per_run room, stops sooner."""
    stub.route("POST", CHAT, openai_chat("ok", usage=(5, 5)))
    config = budget_config(stub.url, "  budget: {per_run: 0.08, per_day: 0.11}\n")
    first, first_dir = run(write, tmp_path, config, FAN_OUT)
    assert len(stub.requests) == 4 and "llm.budget.per_run" in refused_step(first_dir)
    second, second_dir = run(write, tmp_path, config, FAN_OUT)
    assert second.run_id != first.run_id
    assert len(stub.requests) == 4 + 2, "$0.06 of the day's $0.11 was spent by the first run"
    assert "llm.budget.per_day" in refused_step(second_dir)


def test_a_backends_own_limit_reached_hands_the_rest_to_the_fallback(write, tmp_path: Path) -> None:
    """`llm.s.budget` is that backend's alone: once it is spent, calls go down `fallback_backends`, and say why."""
    with StubServer() as dear, StubServer() as spare:
        dear.route("POST", CHAT, openai_chat("ok", usage=(5, 5)))
        spare.route("POST", CHAT, openai_chat("spare", usage=(5, 5)))
        config = (
            "llm:\n  backend: s\n  fallback_backends: [t]\n"
            + backend("s", f"{dear.url}/v1", "cheap", ", budget: {per_run: 0.08}")
            + backend("t", f"{spare.url}/v1", "big")
            + PRICES
        )
        result, run_dir = run(write, tmp_path, config, FAN_OUT)
    assert result.status == "done", result.steps["each"].error
    assert (len(dear.requests), len(spare.requests)) == (4, 6)
    record = step_records(run_dir)["each"]
    refusals = [t for t in record["tries"] if t["error_kind"] == "BackendLimitReached"]
    assert len(refusals) == 6 and "llm.s.budget.per_run" in refusals[0]["error"]
    rows = ledger_rows(tmp_path / ".dse", result.run_id)
    assert [r["backend"] for r in rows] == ["s"] * 4 + ["t"] * 6, "a refused call leaves no row"


def test_a_budget_cannot_hold_a_model_without_a_price(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("ok"))
    config = "llm:\n  backend: s\n  budget: {per_run: 1.0}\n" + backend("s", f"{stub.url}/v1", "mystery-9000")
    result, run_dir = run(write, tmp_path, config, "name: one\nsteps:\n  - id: each\n    prompt: hi\n")
    assert result.status == "failed" and not stub.requests
    error = refused_step(run_dir)
    assert "llm.budget.per_run" in error and "pricing:" in error and "mystery-9000" in error, error


# ---- Rate limits -------------------------------------------------------------------------


def arrivals(stub: StubServer, reply: Reply) -> list[float]:
    """Route the chat path to `reply`, noting when each request arrived (monotonic seconds) in the list returned."""
    seen: list[float] = []

    def answer(_request: Received) -> Reply:
        seen.append(time.monotonic())
        return reply

    stub.route("POST", CHAT, answer)
    return seen


def test_rpm_spaces_a_parallel_fan_out_a_second_apart_and_the_step_records_the_wait(stub: StubServer, write, tmp_path: Path) -> None:
    seen = arrivals(stub, openai_chat("ok"))
    config = "llm:\n  backend: s\n" + backend("s", f"{stub.url}/v1", "m", ", rate_limit: {rpm: 60}")
    workflow = "name: fan\nmax_parallel: 5\nsteps:\n  - id: each\n    for_each: [0, 1, 2, 3, 4]\n    prompt: 'item {{ item }}'\n"
    result, run_dir = run(write, tmp_path, config, workflow)
    assert result.status == "done" and len(seen) == 5
    gaps = [later - earlier for earlier, later in zip(seen, seen[1:])]
    assert min(gaps) >= 0.9, gaps
    assert step_records(run_dir)["each"]["rate_waited"] > 0


class Clock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.one_of(st.none(), st.integers(1, 120)),
    tpm=st.one_of(st.none(), st.integers(50, 5000)),
    calls=st.lists(st.tuples(st.floats(0, 90), st.integers(1, 6000)), min_size=1, max_size=40),
)
def test_pace_never_lets_calls_closer_than_rpm_or_more_tokens_than_tpm_into_a_minute(
    rpm: int | None, tpm: int | None, calls: list[tuple[float, int]]
) -> None:
    """Whatever calls arrive when: starts are 60/rpm apart, and a minute holds at most tpm tokens plus one call's."""
    clock = Clock()
    pace = Pace(RateLimit(rpm=rpm, tpm=tpm), clock)
    starts: list[tuple[float, int]] = []
    for advance, size in calls:
        clock.now += advance
        wait = pace.reserve(size)
        assert wait >= 0
        starts.append((clock.now + wait, size))
    starts.sort()
    if rpm:
        gaps = [b[0] - a[0] for a, b in zip(starts, starts[1:])]
        assert all(gap >= 60 / rpm - 1e-6 for gap in gaps), gaps
    if tpm:
        for begin, _ in starts:
            window = [size for at, size in starts if begin <= at < begin + 60 - 1e-6]
            assert sum(window) <= tpm + max(window), (begin, window)


def test_rpd_reached_in_the_ledger_refuses_the_next_call_without_sending_it(stub: StubServer, write, tmp_path: Path) -> None:
    """Two calls already made today (by earlier runs) and rpd 2: the third is refused, not waited for."""
    from dse.config import load_config
    from dse.routing import Intent, Router

    stub.route("POST", CHAT, openai_chat("ok"))
    config = load_config(write("config.yaml", "llm:\n  backend: s\n" + backend("s", f"{stub.url}/v1", "m", ", rate_limit: {rpd: 2}")), environ={})
    ledger = UsageLedger(tmp_path / FILE)
    for run_id in ("earlier-1", "earlier-2"):
        row = ledger.begin(run_id=run_id, step_id="a", backend="s", model="m", reserved=0.0, rate_wait=0.0)
        ledger.settle(row, Ended(stub.url, "ok", None, 1, 1, 0, 0.1, 0.0))

    async def third() -> None:
        router = Router(config, spend=SpendControl(config, ledger, run_id="now"))
        try:
            await router.chat(router.resolver.resolve(Intent("a", model_key="generator")).target, [])
        finally:
            await router.aclose()

    with pytest.raises(SpendRefused, match=r"llm\.s\.rate_limit\.rpd is 2"):
        asyncio.run(third())
    assert not stub.requests and len(ledger.rows()) == 2
    ledger.close()


# ---- Confirmation --------------------------------------------------------------------------

TWO_CALLS = "name: two\nsteps:\n  - id: a\n    max_tokens: 20\n    prompt: first\n  - id: b\n    max_tokens: 20\n    prompt: second\n"
"""Two calls of about 26 tokens each, at once: both above the threshold of 10, one question between them."""

QUESTION = "send it, and any such call in this run? [y/N]"


def confirming_run(stub: StubServer, write) -> list[str]:
    """The `dse run` command line for TWO_CALLS against `stub`, with confirmation asked above 10 tokens."""
    config = write("config.yaml", "llm:\n  backend: s\n  require_confirmation: {above_tokens: 10}\n" + backend("s", f"{stub.url}/v1", "m"))
    return [sys.executable, "-m", "dse", "run", str(write("wf.yaml", TWO_CALLS)), "--config", str(config)]


def test_without_a_terminal_or_yes_the_run_stops_before_the_first_call_and_says_how_to_proceed(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("ok"))
    command = confirming_run(stub, write)
    refused = subprocess.run(command, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "--yes" in refused.stderr and "above_tokens = 10" in refused.stderr
    assert not stub.requests
    accepted = subprocess.run([*command, "--yes"], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert accepted.returncode == 0, accepted.stderr
    assert len(stub.requests) == 2


def on_a_terminal(command: list[str], cwd: Path, answer: str) -> tuple[int, str]:
    """Run `command` with a pty as its terminal, type `answer` at the first question; its exit code and all it wrote."""
    master, slave = os.openpty()
    process = subprocess.Popen(command, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    answered = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and QUESTION.encode() in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        return process.wait(timeout=30), seen.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


def test_on_a_terminal_no_stops_the_run_before_anything_is_sent(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("ok"))
    code, shown = on_a_terminal(confirming_run(stub, write), tmp_path, "n")
    assert "estimated at 26 tokens (price unknown)" in shown and "You said no" in shown, shown
    assert shown.count(QUESTION) == 1, "the call that waited behind the question is refused with it, not asked again"
    assert code == 2, shown
    assert not stub.requests


def test_on_a_terminal_yes_runs_and_is_asked_once_for_every_such_call(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("ok"))
    code, shown = on_a_terminal(confirming_run(stub, write), tmp_path, "y")
    assert code == 0, shown
    assert shown.count(QUESTION) == 1
    assert len(stub.requests) == 2


# ---- Ctrl-C and secrets ----------------------------------------------------------------------


def test_ctrl_c_mid_run_leaves_no_pending_row_and_the_ok_rows_match_the_journal(stub: StubServer, write, tmp_path: Path) -> None:
    """Two items answered at once, the next two held by the server: SIGINT once both are in flight."""
    answered = openai_chat("ok", usage=(9, 4))
    held = threading.Semaphore(0)
    count = itertools.count()

    def answer(_request: Received) -> Reply:
        if next(count) < 2:
            return answered
        held.release()
        return Reply(json=answered.json, delay=60)

    stub.route("POST", CHAT, answer)
    config = write("config.yaml", "llm:\n  backend: s\n" + backend("s", f"{stub.url}/v1", "cheap") + PRICES)
    workflow = write("wf.yaml", "name: fan\nmax_parallel: 2\nsteps:\n  - id: each\n    for_each: [0, 1, 2, 3, 4, 5]\n    prompt: 'item {{ item }}'\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config)],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert held.acquire(timeout=60) and held.acquire(timeout=60), "two calls reached the stub and are held there"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    (run_dir,) = (tmp_path / ".dse" / "runs").iterdir()
    rows = ledger_rows(tmp_path / ".dse", run_dir.name)
    assert sorted(r["outcome"] for r in rows) == ["interrupted", "interrupted", "ok", "ok"], rows
    items = [e for e in events(run_dir) if e["event"] == "item_finished"]
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert len(items) == len(ok) == 2 and {r["step_id"] for r in rows} == {"each"}
    assert sum(e["prompt_tokens"] + e["completion_tokens"] for e in items) == tokens(ok) == 2 * 13
    assert sum(e["cost"] for e in items) == pytest.approx(sum(r["cost"] for r in ok)) == 2 * cheap_cost(9, 4)


KEY = "sk-spend-secret-4f1c"
PASSWORD = "hunter2-in-the-url"


def test_an_echoed_key_and_a_password_in_the_url_never_reach_the_ledger(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_error(500, f"invalid key {KEY}"), openai_chat(f"your key is {KEY}"))
    port = stub.url.rsplit(":", 1)[1]
    config = (
        "llm:\n  backend: s\n  retry: {attempts: 2, backoff: 0}\n"
        f"  s: {{type: openai, api_key: {KEY}, base_url: 'http://user:{PASSWORD}@127.0.0.1:{port}/v1', models: {{generator: m}}}}\n"
    )
    result, _ = run(write, tmp_path, config, "name: one\nsteps:\n  - id: a\n    prompt: hi\n")
    assert result.status == "done", result.steps["a"].error
    rows = ledger_rows(tmp_path / ".dse")
    assert [r["outcome"] for r in rows] == ["failed", "ok"] and len(stub.requests) == 2
    assert {r["endpoint"] for r in rows} == {f"http://127.0.0.1:{port}/v1"}
    assert KEY not in json.dumps(rows) and PASSWORD not in json.dumps(rows)
    stored = b"".join(path.read_bytes() for path in (tmp_path / ".dse").glob(FILE + "*"))
    assert stored and KEY.encode() not in stored and PASSWORD.encode() not in stored
