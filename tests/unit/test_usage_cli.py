"""`dse usage`, `dse cache stats|clear`, and the tokens and cost that `dse run`, `dse runs` and `dse show` print.

Ledgers are filled through `UsageLedger` itself (begin, settle, cache_hit), as the router fills
them; one whole run against a stub checks that what `dse usage` reports is what the journal
recorded and what `pricing:` says it costs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stubs import StubServer, openai_chat

from dse import console
from dse.cli import main
from dse.spend import ledger as ledger_module
from dse.spend.cache import ResponseCache
from dse.spend.ledger import FAILED, INTERRUPTED, OK, Ended, UsageLedger
from dse.workflow.journal import RunJournal, list_runs, read_run
from dse.workflow.results import RunResult, StepResult

CHAT = "/v1/chat/completions"
PRICE_IN, PRICE_OUT = 1000.0, 2000.0
"""USD per million tokens of the stub's priced model: dear, so a few tokens make a visible cost."""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def usage_json(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "usage", "--state-dir", str(state), "--json", *args)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


Call = Callable[..., None]


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[UsageLedger, Call]]:
    """A ledger under tmp_path/.dse and `call(...)`: one attempt written as the router writes it, at a chosen time."""
    opened = UsageLedger(tmp_path / ".dse" / ledger_module.FILE)
    clock = SimpleNamespace(time=time.time, strftime=time.strftime, localtime=time.localtime)
    monkeypatch.setattr(ledger_module, "time", clock)

    def call(
        backend: str = "paid",
        model: str = "big",
        *,
        tokens: tuple[int, int] = (100, 50),
        cost: float | None = 0.01,
        outcome: str = OK,
        run: str | None = "run-1",
        step: str | None = "ask",
        cached: bool = False,
        ago: float = 0.0,
    ) -> None:
        at = time.time() - ago
        clock.time = lambda: at
        try:
            if cached:
                opened.cache_hit(run_id=run, step_id=step, backend=backend, model=model)
                return
            row = opened.begin(run_id=run, step_id=step, backend=backend, model=model, reserved=1.0, rate_wait=0.0)
            if outcome != "pending":
                error_kind = None if outcome == OK else "BackendUnavailable"
                opened.settle(row, Ended("http://x", outcome, error_kind, tokens[0], tokens[1], 0, 0.1, cost))
        finally:
            clock.time = time.time

    yield opened, call
    opened.close()


# ---- dse usage: totals, groups, prices --------------------------------------------------------


def test_usage_totals_per_backend_by_default_with_every_outcome_counted(ledger, capsys, tmp_path: Path) -> None:
    _, call = ledger
    call(tokens=(100, 50), cost=0.01)
    call(tokens=(0, 0), cost=0.0, outcome=FAILED)
    call(tokens=(30, 0), cost=0.002, outcome=INTERRUPTED)
    call(cached=True)
    call("local", "smol", tokens=(500, 200), cost=0.0)
    call(outcome="pending")
    document = usage_json(capsys, tmp_path / ".dse")
    groups = {g["backend"]: g for g in document["groups"]}
    assert document["by"] == ["backend"] and set(groups) == {"paid", "local"}
    paid = groups["paid"]
    assert (paid["attempts"], paid["ok"], paid["failed"], paid["interrupted"], paid["pending"], paid["cached_calls"]) == (5, 1, 1, 1, 1, 1)
    assert (paid["input_tokens"], paid["output_tokens"]) == (130, 50)
    assert paid["cost"] == pytest.approx(0.012) and paid["unpriced"] == 0
    assert groups["local"]["cost"] == 0
    total = document["total"]
    assert (total["attempts"], total["input_tokens"], total["output_tokens"]) == (6, 630, 250)
    assert total["cost"] == pytest.approx(0.012)

    code, out, _ = cli(capsys, "usage", "--state-dir", str(tmp_path / ".dse"))
    assert code == 0
    assert out.splitlines()[2].split() == ["backend", "calls", "ok", "failed", "interrupted", "pending", "cached", "input", "output", "cost"]
    assert "paid     5      1   1       1            1        1       130    50      $0.0120" in out
    assert out.rstrip().splitlines()[-1] == (
        "total: 6 calls (2 ok, 1 failed, 1 interrupted, 1 pending, 1 answered by the cache), tokens 630 in + 250 out, cost $0.0120"
    )


def test_an_unknown_price_is_reported_as_unknown_never_as_zero(ledger, capsys, tmp_path: Path) -> None:
    _, call = ledger
    call("paid", "big", tokens=(100, 50), cost=0.03)
    call("paid", "mystery", tokens=(10, 5), cost=None)
    call("other", "mystery", tokens=(10, 5), cost=None)
    document = usage_json(capsys, tmp_path / ".dse", "--by", "backend")
    groups = {g["backend"]: g for g in document["groups"]}
    assert groups["paid"]["cost"] is None and groups["paid"]["priced_cost"] == pytest.approx(0.03) and groups["paid"]["unpriced"] == 1
    assert groups["other"]["cost"] is None and groups["other"]["priced_cost"] == 0
    assert document["total"]["cost"] is None and document["total"]["unpriced"] == 2

    code, out, _ = cli(capsys, "usage", "--state-dir", str(tmp_path / ".dse"))
    rows = {line.split()[0]: line for line in out.splitlines()[3:5]}
    assert rows["paid"].endswith("$0.0300 + price unknown") and rows["other"].endswith("price unknown")
    assert "$0 " not in out and not out.splitlines()[3].endswith("$0")
    assert "cost $0.0300 + price unknown" in out and "price unknown for 2 calls" in out and "pricing:" in out


def test_by_takes_commas_and_repeats_and_names_the_groups_it_knows(ledger, capsys, tmp_path: Path) -> None:
    _, call = ledger
    call("paid", "big", run="run-1", step="ask")
    call("paid", "big", run="run-1", step="each")
    call("paid", "small", run="run-2", step="ask", ago=3 * 86400)
    state = tmp_path / ".dse"
    keyed = usage_json(capsys, state, "--by", "backend,model", "--by", "day")["groups"]
    today, earlier = time.strftime("%Y-%m-%d"), time.strftime("%Y-%m-%d", time.localtime(time.time() - 3 * 86400))
    assert {(g["backend"], g["model"], g["day"], g["attempts"]) for g in keyed} == {("paid", "paid:big", today, 2), ("paid", "paid:small", earlier, 1)}
    steps = usage_json(capsys, state, "--by", "step")["groups"]
    assert {g["step"]: g["attempts"] for g in steps} == {"run-1/ask": 1, "run-1/each": 1, "run-2/ask": 1}
    runs = usage_json(capsys, state, "--by", "run", "--run", "run-1")["groups"]
    assert [(g["run"], g["attempts"]) for g in runs] == [("run-1", 2)]

    code, out, _ = cli(capsys, "usage", "--state-dir", str(state), "--by", "run", "--by", "day")
    assert code == 0 and out.splitlines()[2].split()[:3] == ["run", "day", "calls"]
    code, _, err = cli(capsys, "usage", "--state-dir", str(state), "--by", "backend,vendor")
    assert code == 2 and "--by 'vendor': expected backend, model, day, run, step" in err


def test_since_takes_a_date_a_datetime_or_a_span(ledger, capsys, tmp_path: Path) -> None:
    _, call = ledger
    call(tokens=(1, 0), ago=4 * 86400)
    call(tokens=(10, 0), ago=86400)
    call(tokens=(100, 0), ago=60)
    state = tmp_path / ".dse"

    def since(value: str) -> int:
        return int(usage_json(capsys, state, f"--since={value}")["total"]["input_tokens"])

    two_days_ago = datetime.now() - timedelta(days=2)
    assert since("7d") == 111 and since("2d") == 110 and since("48h") == 110 and since("30m") == 100 and since("1w") == 111
    assert since(two_days_ago.date().isoformat()) == 110, "a date is local midnight"
    assert since(two_days_ago.isoformat(timespec="seconds")) == 110
    here = datetime.now().astimezone()
    elsewhere = timezone(here.utcoffset() + timedelta(hours=5))  # type: ignore[operator]
    assert since((here - timedelta(hours=2)).astimezone(elsewhere).isoformat()) == 100, "a time that names its zone is read in that zone"
    assert since((datetime.now() + timedelta(days=1)).date().isoformat()) == 0
    code, out, _ = cli(capsys, "usage", "--state-dir", str(state), "--since", "2h")
    assert code == 0 and "since " in out.splitlines()[0] and "total: 1 calls" in out


BAD_SINCE = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=12),  # no digit: neither a date nor a span
    st.integers(min_value=1, max_value=10**6).map(lambda n: f"-{n}d"),
    st.tuples(st.integers(0, 999), st.sampled_from("yqxMDH")).map(lambda p: f"{p[0]}{p[1]}"),
    st.integers(13, 99).map(lambda month: f"2026-{month}-01"),
    st.integers(30, 99).map(lambda day: f"2026-02-{day}"),
    st.just("7 days"),
    st.just("d7"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=BAD_SINCE)
def test_a_bad_since_is_exit_2_with_what_it_takes(value: str, capsys, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "usage", "--state-dir", str(tmp_path / "state"), f"--since={value}")
    assert code == 2 and "Traceback" not in err and out == ""
    assert f"--since {value!r}: expected a date (2026-11-28)" in err and "7d, 24h, 30m" in err
    assert not (tmp_path / "state").exists()


def test_no_ledger_yet_is_said_plainly_and_nothing_is_created(capsys, tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out, err = cli(capsys, "usage", "--state-dir", str(state))
    assert code == 0 and out.strip() == f"no usage recorded in {state / 'usage.db'}" and err == ""
    document = usage_json(capsys, state, "--by", "model")
    assert document["groups"] == [] and document["total"]["attempts"] == 0 and document["total"]["cost"] == 0
    assert not state.exists(), "reading usage writes nothing"


@pytest.mark.parametrize("command", [("usage",), ("cache", "stats"), ("cache", "clear")])
def test_a_file_that_is_not_sqlite_is_an_error_naming_it(command: tuple[str, ...], capsys, tmp_path: Path) -> None:
    for name in ("usage.db", "cache.db"):
        (tmp_path / name).write_text("not a database, " * 100)
    code, _, err = cli(capsys, *command, "--state-dir", str(tmp_path))
    assert code == 2 and str(tmp_path / ("usage.db" if command == ("usage",) else "cache.db")) in err and "Traceback" not in err


# ---- dse cache stats / clear ------------------------------------------------------------------


def test_cache_stats_and_clear(capsys, tmp_path: Path) -> None:
    state = tmp_path / ".dse"
    code, out, _ = cli(capsys, "cache", "stats", "--state-dir", str(state))
    assert code == 0 and "empty" in out
    code, out, _ = cli(capsys, "cache", "clear", "--state-dir", str(state))
    assert code == 0 and "removed 0 cached answers" in out
    assert not state.exists(), "asking about a cache that was never written creates none"

    cache = ResponseCache(state / "cache.db")
    cache.put("k1", "paid", "big", {"text": "x" * 3000, "finish_reason": "stop", "model": "big"})
    cache.put("k2", "paid", "big", {"text": "y", "finish_reason": "stop", "model": "big"})
    assert cache.get("k1", 60) is not None and cache.get("k2", 60) is not None and cache.get("k3", 60) is None
    cache.close()
    code, out, _ = cli(capsys, "cache", "stats", "--state-dir", str(state), "--json")
    data = json.loads(out)
    assert (data["hits"], data["misses"], data["entries"]) == (2, 1, 2) and data["hit_rate"] == pytest.approx(2 / 3)
    assert data["bytes"] > 3000
    code, out, _ = cli(capsys, "cache", "stats", "--state-dir", str(state))
    assert "hits 2, misses 1, hit rate 66.7%" in out and f"entries 2, {data['bytes'] / 1024:.1f} KiB ({data['bytes']} bytes)" in out

    code, out, _ = cli(capsys, "cache", "clear", "--state-dir", str(state))
    assert code == 0 and out.strip() == f"removed 2 cached answers from {state / 'cache.db'}"
    data = json.loads(cli(capsys, "cache", "stats", "--state-dir", str(state), "--json")[1])
    assert (data["hits"], data["misses"], data["entries"], data["bytes"], data["hit_rate"]) == (0, 0, 0, 0, None)


# ---- a whole run: what it printed, what the journal and the ledger say -----------------------


def stub_config(url: str, extra: str = "") -> str:
    return (
        f"llm:\n  backend: paid\n  paid: {{type: openai, api_key: sk-test, base_url: '{url}/v1', models: {{generator: priced}}{extra}}}\n"
        f"pricing:\n  priced: {{input: {PRICE_IN}, output: {PRICE_OUT}}}\n"
    )


WORKFLOW = (
    "name: spend\ninputs: {letters: {type: string, default: '[\"a\", \"b\"]'}}\nsteps:\n"
    "  - id: ask\n    prompt: hi\n    temperature: 0\n"
    "  - id: each\n    for_each: '{{ inputs.letters }}'\n    prompt: 'item {{ item }}'\n    temperature: 0\n"
    "  - id: mystery\n    model: mystery-9000\n    backend: paid\n    prompt: unpriced\n    temperature: 0\n"
)


def test_usage_of_a_run_matches_its_journal_and_its_price(stub: StubServer, write, capsys, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("fine", usage=(11, 7)))
    config, workflow, state = write("config.yaml", stub_config(stub.url)), write("wf.yaml", WORKFLOW), tmp_path / ".dse"
    code, out, err = cli(capsys, "run", str(workflow), "--config", str(config), "--state-dir", str(state), "--json")
    assert code == 0, err
    run = json.loads(out)
    run_id, steps = run["id"], {s["id"]: s for s in run["steps"]}
    records = read_run(state / "runs" / run_id).steps
    journal_in = sum(r["prompt_tokens"] for r in records.values())
    journal_out = sum(r["completion_tokens"] for r in records.values())
    assert (journal_in, journal_out) == (44, 28) and len(stub.requests) == 4

    document = usage_json(capsys, state, "--run", run_id, "--by", "step")
    total = document["total"]
    assert (total["input_tokens"], total["output_tokens"], total["attempts"]) == (journal_in, journal_out, 4)
    assert total["cost"] is None and total["unpriced"] == 1, "mystery-9000 has no price"
    priced = [r for r in records.values() if r["id"] != "mystery"]
    expected = sum(r["prompt_tokens"] * PRICE_IN + r["completion_tokens"] * PRICE_OUT for r in priced) / 1e6
    assert total["priced_cost"] == pytest.approx(expected)
    for group in document["groups"]:
        step = records[group["step"].split("/", 1)[1]]
        assert (group["input_tokens"], group["output_tokens"]) == (step["prompt_tokens"], step["completion_tokens"])
        if step["id"] != "mystery":
            assert group["cost"] == pytest.approx(step["cost"]) == pytest.approx((step["prompt_tokens"] * PRICE_IN + step["completion_tokens"] * PRICE_OUT) / 1e6)

    assert run["spend"]["prompt_tokens"] == journal_in and run["spend"]["cost"] is None
    assert run["spend"]["priced_cost"] == pytest.approx(expected) and steps["mystery"]["cost"] is None

    code, out, _ = cli(capsys, "runs", "--state-dir", str(state), "--json")
    (summary,) = json.loads(out)
    assert summary["spend"]["prompt_tokens"] == journal_in and summary["spend"]["completion_tokens"] == journal_out
    assert summary["spend"]["cost"] is None and summary["spend"]["priced_cost"] == pytest.approx(expected)
    code, out, _ = cli(capsys, "runs", "--state-dir", str(state))
    assert f" {journal_in}+{journal_out} " in out and f"{console.money(expected)} + price unknown" in out

    code, out, _ = cli(capsys, "show", run_id, "--state-dir", str(state))
    lines = out.splitlines()
    assert f"spent: {journal_in} input + {journal_out} output tokens, {console.money(expected)} + price unknown; 4 calls" in out
    assert any(line.startswith("[ok] ask") and f"tokens 11+7  {console.money(11 * PRICE_IN / 1e6 + 7 * PRICE_OUT / 1e6)}" in line for line in lines)
    assert any(line.startswith("[ok] mystery") and "tokens 11+7  price unknown" in line for line in lines)


def test_a_rerun_from_the_cache_says_cached_and_costs_nothing(stub: StubServer, write, capsys, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("fine", usage=(11, 7)))
    config, workflow, state = write("config.yaml", stub_config(stub.url, ", cache: on")), write("wf.yaml", WORKFLOW), tmp_path / ".dse"
    run = ["run", str(workflow), "--config", str(config), "--state-dir", str(state)]
    code, out, err = cli(capsys, *run)
    assert code == 0, err
    first = next(line for line in out.splitlines() if line.startswith("spent:"))
    assert first.startswith("spent: 44 input + 28 output tokens, $") and "+ price unknown; 4 calls, 0 answered by the cache" in first
    assert "pricing:" in out, "an unknown price comes with how to give one"
    assert not any("cached" in line for line in err.splitlines() if line.startswith("[ok]"))

    code, out, err = cli(capsys, *run, "--input", 'letters=["a", "b", "c"]')
    assert code == 0 and len(stub.requests) == 5, "only item c is new"
    assert "spent: 11 input + 7 output tokens, $" in out and "; 5 calls, 4 answered by the cache" in out
    progress = {line.split()[1]: line for line in err.splitlines() if line.startswith("[ok]")}
    assert progress["ask"].endswith("  cached") and "2/3 cached" in progress["each"] and progress["mystery"].endswith("  cached")
    assert "tokens 0+0  0." in progress["ask"], "a hit costs nothing, so no cost is shown"

    code, out, _ = cli(capsys, *run)
    assert "spent: 0 input + 0 output tokens, $0; 4 calls, 4 answered by the cache" in out and len(stub.requests) == 5
    code, out, _ = cli(capsys, "cache", "stats", "--state-dir", str(state))
    assert "hits 8, misses 5" in out and "entries 5" in out


def test_a_rate_limit_wait_is_shown_on_the_step_and_in_its_record(stub: StubServer, write, capsys, tmp_path: Path) -> None:
    stub.route("POST", CHAT, openai_chat("fine", usage=(11, 7)))
    config = write("config.yaml", stub_config(stub.url, ", rate_limit: {rpm: 1200}"))
    workflow = write("wf.yaml", "name: paced\nsteps:\n  - id: each\n    for_each: [a, b, c]\n    prompt: '{{ item }}'\n")
    code, out, err = cli(capsys, "run", str(workflow), "--config", str(config), "--state-dir", str(tmp_path / ".dse"), "--json")
    assert code == 0, err
    (step,) = json.loads(out)["steps"]
    assert step["rate_waited"] > 0, "calls 50 ms apart: the second and third waited"
    assert f"waited {step['rate_waited']:.1f}s for rate limit" in console.step_line(StepResult.from_record(step))
    assert "waited" not in console.step_line(StepResult.from_record({**step, "rate_waited": 0.0}))


# ---- what is counted once: reused steps, a fan-out cut short and resumed ---------------------


def test_a_resumed_run_counts_each_call_once(tmp_path: Path) -> None:
    """Killed mid fan-out, then resumed: `a` ran once, `each` finished 2 items before the kill and 1 after."""
    state = tmp_path / ".dse"
    journal = RunJournal.create(state, workflow=str(Path(__file__)), workflow_name="w", config=str(Path(__file__)), inputs={})
    journal.event("run_started")
    journal.event("step_finished", id="a", status="done", prompt_tokens=10, completion_tokens=5, cost=0.01, calls=1)
    for index in (0, 1):
        journal.event("item_finished", id="each", index=index, digest="d", output="x", prompt_tokens=3, completion_tokens=2, cost=0.002)
    journal.event("run_resumed", reused=["a"])
    journal.event("item_finished", id="each", index=2, digest="d", output="x", prompt_tokens=3, completion_tokens=2, cost=0.002)
    journal.event("step_finished", id="each", status="done", prompt_tokens=3, completion_tokens=2, cost=0.002, calls=1, cached_calls=1)
    journal.event("run_finished", status="done", outputs={})
    journal.close()
    spend = read_run(journal.directory).spend
    assert (spend.prompt_tokens, spend.completion_tokens, spend.calls, spend.cached_calls) == (19, 11, 2, 1)
    assert spend.cost == pytest.approx(0.016)
    (record,) = list_runs(state)
    assert record.summary()["spend"]["cost"] == pytest.approx(0.016)

    reused = StepResult("a", "llm", status="done", prompt_tokens=10, completion_tokens=5, cost=0.01, calls=1, reused=True)
    again = StepResult("each", "llm", status="done", prompt_tokens=3, completion_tokens=2, cost=0.002, calls=1)
    text = console.run_text(RunResult("w", "done", {"a": reused, "each": again}), {})
    assert "spent: 3 input + 2 output tokens, $0.0020; 1 calls, 0 answered by the cache - 1 steps reused" in text


def test_a_journal_from_before_prices_reads_as_price_unknown_where_tokens_were_spent(tmp_path: Path) -> None:
    journal = RunJournal.create(tmp_path, workflow=str(Path(__file__)), workflow_name="w", config=str(Path(__file__)), inputs={})
    journal.event("step_finished", id="a", status="done", prompt_tokens=10, completion_tokens=5)
    journal.event("step_finished", id="cmd", status="done")
    journal.close()
    spend = read_run(journal.directory).spend
    assert spend.cost is None and spend.prompt_tokens == 10
    assert "price unknown" in console.runs_text(list_runs(tmp_path))
