"""Gateway calls go through spend control exactly as workflow calls do: the ledger, budgets and the response cache.

One `dse serve` over one OpenAI-type backend (a loopback stub, priced by the built-in table),
as a client sees it: every call a row in `usage.db`, a call past the budget a 429 saying so
before anything is sent, and a repeated deterministic call answered from the cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway import ServedGateway
from stubs import StubServer, openai_chat, openai_stream

CONFIG = """\
llm:
  backend: openai
  openai:
    base_url: {url}/v1
    api_key: sk-stub-key-0123456789
    models: {{generator: gpt-4o}}
    budget: {{per_day: 0.005}}
  cache: {{mode: on}}
"""
CHAT = {"model": "generator", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


@pytest.fixture
def served(stub: StubServer, tmp_path: Path) -> Iterator[tuple[ServedGateway, StubServer]]:
    # 1000 completion tokens of gpt-4o cost $0.01: past the $0.005 budget after the first call.
    stub.route("POST", "/v1/chat/completions", openai_chat("Hello!", usage=(10, 1000)))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url=stub.url))
    with ServedGateway(config, tmp_path / "state") as gateway:
        yield gateway, stub


def test_each_call_is_a_ledger_row_the_cache_answers_repeats_and_the_budget_refuses_before_sending(served: tuple[ServedGateway, StubServer], tmp_path: Path) -> None:
    gateway, stub = served
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        first = client.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
        assert first.status_code == 200, first.text
        again = client.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
        assert again.status_code == 200 and again.headers["x-dse-cached"] == "true"
        assert again.json()["choices"][0]["message"]["content"] == "Hello!"
        refused = client.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "something new"}]})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota", refused.text
    assert "budget" in refused.json()["error"]["message"]
    assert len(stub.calls("POST", "/v1/chat/completions")) == 1, "the cached answer and the refused call sent nothing"
    with sqlite3.connect(tmp_path / "state" / "usage.db") as db:
        rows = db.execute("SELECT step_id, backend, model, outcome, from_cache, cost FROM calls ORDER BY rowid").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("gateway /v1/chat/completions", "openai", "gpt-4o")] * len(rows)
    assert rows[0][4] == 0 and rows[0][5] == pytest.approx(0.010025) and rows[1][4] == 1
    assert "sk-stub-key-0123456789" not in gateway.stderr()


def test_a_stream_whose_server_never_says_its_usage_costs_unknown_not_nothing(stub: StubServer, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_stream(["Hel", "lo"], usage=None))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url=stub.url).replace("    budget: {per_day: 0.005}\n", ""))
    with ServedGateway(config, tmp_path / "state") as gateway, httpx.Client(base_url=gateway.url, timeout=60) as client:
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200 and "Hel" in streamed.text
    with sqlite3.connect(tmp_path / "state" / "usage.db") as db:
        [(outcome, cost)] = db.execute("SELECT outcome, cost FROM calls").fetchall()
    assert (outcome, cost) == ("ok", None), "gpt-4o is not free: an answer of unknown size has an unknown price"
