"""`dse bench` against stub servers: the figures from the stream, the VRAM from Ollama's /api/ps, a failing backend, the saved rows."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from stubs import Reply, StubServer, ollama_stream, openai_error

from dse.benchmark import MAX_TOKENS, PROMPTS, measured_speeds
from dse.cli import main

SCHEMA = json.loads((ROOT / "schemas" / "records.schema.json").read_text())
GIB = 2**30


@pytest.fixture
def config(stub: StubServer, write: Callable[[str, str], Path]) -> Path:
    """An Ollama that streams three tokens and says the model holds 4 GiB of VRAM, and an OpenAI-compatible server that fails."""
    stub.route("POST", "/api/chat", ollama_stream(["Red,", " green", " blue"], usage=(12, 3), chunk_delay=0.01))
    loaded = {"name": "llama3:latest", "model": "llama3:latest", "size": 5 * GIB, "size_vram": 4 * GIB}
    stub.route("GET", "/api/ps", Reply(json={"models": [loaded]}))
    stub.route("GET", "/api/tags", Reply(json={"models": [{"name": "llama3:latest", "size": 5 * GIB}]}))
    stub.route("POST", "/v1/chat/completions", openai_error(500, "the server fell over", kind="server_error"))
    return write(
        "config.yaml",
        "llm:\n  backend: o\n  retry: {attempts: 1}\n"
        f"  o: {{type: ollama, base_url: '{stub.url}', models: {{generator: llama3}}}}\n"
        f"  down: {{type: openai, api_key: sk-bench-secret, base_url: '{stub.url}/v1', models: {{generator: gpt-4o}}}}\n",
    )


def test_bench_measures_streams_reads_vram_and_keeps_only_what_it_measured(
    config: Path, stub: StubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    code = main(["bench", "--config", str(config), "--state-dir", str(state), "--runs", "2", "--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    registry = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
    Draft202012Validator({"$ref": f"{SCHEMA['$id']}#/$defs/documents/bench"}, registry=registry).validate(document)
    assert code == 1, "a backend that failed is a failed bench"
    measured, failed = (next(r for r in document["results"] if r["backend"] == name) for name in ("o", "down"))
    assert measured["error"] is None and measured["endpoint"] == stub.url
    assert (measured["calls"], measured["prompt_tokens"], measured["completion_tokens"]) == (2 * len(PROMPTS), 12, 3)
    assert 0 < measured["ttft"] and measured["generation_tps"] > 0 and measured["prompt_tps"] > 0
    assert measured["vram_bytes"] == 4 * GIB
    assert "500" in failed["error"] and failed["generation_tps"] is None
    assert "sk-bench-secret" not in captured.out + captured.err

    sent = [r.json for r in stub.calls("POST", "/api/chat")]
    assert len(sent) == 1 + 2 * len(PROMPTS), "one untimed call wakes the server, then each prompt once per run"
    assert all(s["stream"] and s["options"] == {"temperature": 0.0, "num_predict": MAX_TOKENS} for s in sent)
    assert len({s["messages"][-1]["content"] for s in sent}) == len(sent), "no prompt is sent twice: a prompt cache cannot flatter it"
    assert "o/llama3: run 2/2" in captured.err and "down/gpt-4o: failed" in captured.err

    assert set(measured_speeds(state)) == {("o", "llama3")}
    with sqlite3.connect(state / "usage.db") as db:
        rows = db.execute("SELECT run_id, step_id, backend, outcome FROM calls").fetchall()
    assert len(rows) == len(sent) + 1, "every call is in the usage ledger, the failed one too"
    assert {r[1] for r in rows} == {"bench"} and all(r[0].startswith("bench-") for r in rows)
    assert sorted({(r[2], r[3]) for r in rows}) == [("down", "failed"), ("o", "ok")]


def test_the_table_compares_backends_with_vram_or_a_dash(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", "o", "down:gpt-4o", "--config", str(config), "--state-dir", str(tmp_path / "state"), "--runs", "1"])
    header, measured, failed, *rest = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["BACKEND", "MODEL", "GEN"] and "VRAM" in header
    assert measured.startswith("o ") and "4.0 GiB" in measured
    assert failed.startswith("down ") and "failed:" in failed and " - " in failed
    assert rest and "saved in" in rest[-1]


@pytest.mark.parametrize(
    ("target", "message"),
    [("nowhere", "no backend 'nowhere'"), ("dwn", "did you mean 'down'")],
)
def test_an_unknown_backend_is_bad_input(config: Path, target: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", target, "--config", str(config), "--state-dir", str(tmp_path / "state")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "state").exists(), "nothing was started or written"
