"""`dse plan` before anything runs: each step's fallback chain, a missing key flagged with no network, a down endpoint with `--check`."""

from __future__ import annotations

import json

import pytest
from stubs import Reply, StubServer, refused_url

from dse.cli import main

WORKFLOW = "name: p\nsteps:\n  - id: ask\n    prompt: hi\n  - id: more\n    prompt: 'again {{ steps.ask.output }}'\n"
MODELS = Reply(json={"object": "list", "data": [{"id": "big", "object": "model", "owned_by": "me"}]})
KEY = "DSE_TEST_PLAN_KEY"


def config(up: str, down: str, *, backend: str = "up", default: str | None = None, fallbacks: str = "down, cloud") -> str:
    """Backends `up`, `down` and `cloud` (whose key is not set); by default `up` first, then the other two as fallbacks."""
    defaults = f"  global_defaults: {{default_backend: {default}}}\n" if default else ""
    return (
        f"llm:\n  backend: {backend}\n{defaults}  fallback_backends: [{fallbacks}]\n"
        f"  up: {{type: vllm, base_url: '{up}/v1', models: {{generator: big}}}}\n"
        f"  down: {{type: vllm, base_url: '{down}/v1', models: {{generator: small}}}}\n"
        f"  cloud: {{type: anthropic, api_key: '${{{KEY}}}', models: {{generator: claude-x}}}}\n"
    )


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY, raising=False)


def plan(capsys: pytest.CaptureFixture[str], write, text: str, *args: str) -> tuple[int, str]:
    code = main(["plan", str(write("wf.yaml", WORKFLOW)), "--config", str(write("config.yaml", text)), *args])
    return code, capsys.readouterr().out


def test_plan_shows_each_chain_and_a_missing_key_without_any_network(capsys, write, stub: StubServer) -> None:
    down = refused_url()
    code, out = plan(capsys, write, config(stub.url, down), "--json")
    assert code == 0
    data = json.loads(out)
    chain = [(h["backend"], h["model"], h["available"], h["reason"]) for h in data["steps"][0]["chain"]]
    assert chain == [("up", "big", True, None), ("down", "small", True, None), ("cloud", "claude-x", False, f"{KEY} is not set")]
    assert data["checked"] is False and data["unavailable"] == {"cloud": [f"{KEY} is not set"]} and data["stranded"] == []
    code, out = plan(capsys, write, config(stub.url, down))
    assert "  ask, more: up/big -> down/small -> !! cloud/claude-x" in out.splitlines()
    assert f"  !! cloud: {KEY} is not set" in out.splitlines()
    assert "endpoints not probed: `dse plan --check` asks each one before anything runs" in out
    assert stub.requests == [], "nothing is probed without --check"


def test_check_probes_the_endpoints_and_flags_the_one_that_is_down(capsys, write, stub: StubServer) -> None:
    stub.route("GET", "/v1/models", MODELS)
    down = refused_url()
    code, out = plan(capsys, write, config(stub.url, down), "--check", "--json", "--timeout", "5")
    assert code == 0, "every step still has a backend that answers"
    data = json.loads(out)
    hops = {h["backend"]: h for h in data["steps"][1]["chain"]}
    assert hops["up"]["available"] and hops["up"]["down"] == []
    assert (hops["down"]["available"], hops["down"]["reason"]) == (False, "no endpoint is ready")
    assert [d["endpoint"] for d in hops["down"]["down"]] == [f"{down}/v1"] and "unreachable" in hops["down"]["down"][0]["reason"]
    assert data["checked"] is True and set(data["unavailable"]) == {"down", "cloud"}
    assert [r.path for r in stub.requests] == ["/v1/models"], "each endpoint probed once, however many steps use it"
    code, out = plan(capsys, write, config(stub.url, down), "--check")
    assert "  ask, more: up/big -> !! down/small -> !! cloud/claude-x" in out.splitlines()
    assert any(line.startswith(f"  !! down: no endpoint is ready: {down}/v1 is unreachable") for line in out.splitlines()), out
    assert "not probed" not in out


def test_check_marks_a_dead_primary_in_every_row_and_fails_when_no_backend_is_left(capsys, write, stub: StubServer) -> None:
    stub.route("GET", "/v1/models", MODELS)
    down = refused_url()
    code, out = plan(capsys, write, config(stub.url, down, backend="down"), "--check", "--why")
    assert code == 1, "no backend in the chain can take a call: the run would fail"
    rows = [line for line in out.splitlines() if line.startswith(("ask ", "more "))]
    assert len(rows) == 2 and all(f"{down}/v1 (down)" in row for row in rows), rows
    assert "  no backend in the chain of ask, more can take a call now: as things stand, they fail" in out
    assert f"  ask: if !! down/small (no endpoint is ready) fails: !! cloud/claude-x ({KEY} is not set)" in out


def test_why_names_the_fallback_chain_and_the_default_backends_missing_key(capsys, write, stub: StubServer) -> None:
    """Every step pins `up` and only `down` is a fallback: the default backend's missing key is said all the same."""
    pinned = WORKFLOW.replace("prompt: hi", "prompt: hi\n    backend: up").replace("prompt: 'again", "backend: up\n    prompt: 'again")
    text = config(stub.url, refused_url(), default="cloud", fallbacks="down")
    code = main(["plan", str(write("wf.yaml", pinned)), "--config", str(write("config.yaml", text)), "--why"])
    out = capsys.readouterr().out
    assert code == 0
    assert "  ask: if up/big fails: down/small" in out.splitlines() and "  more: if up/big fails: down/small" in out.splitlines()
    assert f"  !! cloud: {KEY} is not set" in out.splitlines(), "the default backend's missing key is said, once"
    assert out.count(KEY) == 1
