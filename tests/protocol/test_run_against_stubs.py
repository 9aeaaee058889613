"""Whole runs over real sockets: every backend type by config alone, failover, resume after SIGKILL, status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_until
from stubs import Reply, StubServer, anthropic_message, ollama_chat, openai_chat, openai_error

from dse.cli import main
from dse.console import show_text
from dse.runner import prepare, run_workflow
from dse.workflow.journal import read_run, run_directory

WORKFLOW = "name: one\nsteps:\n  - id: ask\n    tool: asker\noutputs: {answer: '{{ steps.ask.output }}'}\n"
TOOLS = "tools:\n  asker: {llm: {model_key: generator}, prompt: 'Say hi.'}\n"

# Every server here echoes the key back in its answer, as servers that log or debug do.
KEY = "sk-stub-secret"
# type -> (extra block keys, chat path on the server, reply)
PROTOCOLS = {
    "openai": ("", "/v1/chat/completions", openai_chat(f"hi from openai ({KEY})")),
    "lmstudio": ("", "/v1/chat/completions", openai_chat(f"hi from lmstudio ({KEY})")),
    "vllm": ("", "/v1/chat/completions", openai_chat(f"hi from vllm ({KEY})")),
    "llamacpp": ("", "/v1/chat/completions", openai_chat(f"hi from llamacpp ({KEY})")),
    "tabbyapi": ("", "/v1/chat/completions", openai_chat(f"hi from tabbyapi ({KEY})")),
    "foundry": ("", "/v1/chat/completions", openai_chat(f"hi from foundry ({KEY})")),
    "openrouter": ("    headers: {X-Title: dse}\n", "/v1/chat/completions", openai_chat(f"hi from openrouter ({KEY})")),
    "azure": ("    api_version: '2024-08-01-preview'\n    deployments: {generator: {deployment: dep-1, model: gpt-4o}}\n",
              "/openai/deployments/dep-1/chat/completions", openai_chat(f"hi from azure ({KEY})")),
    "anthropic": ("", "/v1/messages", anthropic_message(f"hi from anthropic ({KEY})")),
    "ollama": ("", "/api/chat", ollama_chat(f"hi from ollama ({KEY})")),
}


def config_for(kind: str, url: str) -> str:
    extra, _, _ = PROTOCOLS[kind]
    where = f"    endpoint: {url}\n" if kind == "azure" else f"    base_url: {url}{'/v1' if kind not in ('ollama', 'anthropic', 'llamacpp') else ''}\n"
    return (
        f"llm:\n  backend: target\n  target:\n    type: {kind}\n    api_key: sk-stub-secret\n{where}{extra}"
        f"    models: {{generator: model-{kind}}}\n{TOOLS}"
    )


@pytest.mark.parametrize("kind", sorted(PROTOCOLS))
def test_one_step_reaches_every_backend_type_by_config_alone(kind: str, stub: StubServer, write, tmp_path: Path) -> None:
    _, path, reply = PROTOCOLS[kind]
    stub.route("POST", path, reply)
    config = write("config.yaml", config_for(kind, stub.url))
    prepared = prepare(write("wf.yaml", WORKFLOW), config)
    result, calls = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    assert result.status == "done", result.steps["ask"].error
    assert result.outputs["answer"] == f"hi from {kind} (***)", "an echoed key is scrubbed before anything sees it"
    (request,) = stub.calls("POST", path)
    body = request.json
    assert body["model"] == ("dep-1" if kind == "azure" else f"model-{kind}")
    assert "Say hi." in json.dumps(body["messages"])
    assert sum(calls["target"].values()) == 1
    journal = next((tmp_path / ".dse" / "runs").iterdir()) / "events.jsonl"
    assert KEY not in journal.read_text() and "(***)" in journal.read_text(), "secrets never reach the journal"


def test_failover_to_the_fallback_backend_is_recorded(write, tmp_path: Path) -> None:
    with StubServer() as primary, StubServer() as fallback:
        primary.route("POST", "/v1/chat/completions", openai_error(503, "overloaded"))
        fallback.route("POST", "/v1/chat/completions", openai_chat("from the fallback"))
        config = write(
            "config.yaml",
            "llm:\n  backend: main\n  fallback_backends: [spare]\n  retry: {attempts: 2, backoff: 0}\n"
            f"  main: {{type: vllm, base_url: '{primary.url}/v1', models: {{generator: big}}}}\n"
            f"  spare: {{type: vllm, base_url: '{fallback.url}/v1', models: {{generator: small}}}}\n" + TOOLS,
        )
        prepared = prepare(write("wf.yaml", WORKFLOW), config)
        result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
        step = result.steps["ask"]
        assert result.outputs["answer"] == "from the fallback" and step.backend == "spare" and step.model == "stub-model"
        assert len(primary.requests) == 2 and len(fallback.requests) == 1, "two tries on the primary, one on the fallback"
        assert [t["error_kind"] for t in step.tries] == ["BackendUnavailable", "BackendUnavailable"]
    shown = show_text(read_run(run_directory(tmp_path / ".dse", result.run_id or "")))
    assert f"failed try: main @ {primary.url}/v1: BackendUnavailable: " in shown and "; retried\n" in shown
    assert shown.count("; fell back to spare") == 1 and "{" not in shown.split("failed try:", 1)[1], "tries read as sentences, not dicts"


def finished_steps(state_root: Path) -> set[str]:
    """Steps the run journal under `state_root/.dse` records as finished (a torn last line is skipped)."""
    finished = set()
    for journal in (state_root / ".dse" / "runs").glob("*/events.jsonl"):
        for line in journal.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "step_finished":
                finished.add(event["id"])
    return finished


def test_a_run_killed_mid_way_resumes_with_exactly_the_unfinished_work(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat("fine"))
    marker = tmp_path / "gate-started"
    gate = f"import os,time,pathlib; p=pathlib.Path({str(marker)!r}); first=not p.exists(); p.touch(); time.sleep(60 if first else 0)"
    config = write("config.yaml", f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
    workflow = write(
        "wf.yaml",
        "name: resumable\nsteps:\n  - id: a\n    prompt: first\n  - id: b\n    prompt: 'second {{ steps.a.output }}'\n"
        f"  - id: gate\n    needs: [b]\n    run: {json.dumps([sys.executable, '-c', gate])}\n"
        "  - id: c\n    prompt: 'third {{ steps.gate.status }}'\n  - id: side\n    prompt: side\n"
        "outputs: {c: '{{ steps.c.output }}'}\n",
    )
    command = [sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(marker.exists, timeout=60), "the gate step started"
        # Kill only once the journal holds every step that can finish before the gate: then the
        # resume below has exactly `c` left, however slowly this machine ran the rest.
        assert wait_until(lambda: finished_steps(tmp_path) == {"a", "b", "side"}, timeout=60), finished_steps(tmp_path)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    before = [r.json["messages"][-1]["content"] for r in stub.requests]
    assert sorted(before) == ["first", "second fine", "side"]
    (run_dir,) = (tmp_path / ".dse" / "runs").iterdir()

    resumed = subprocess.run([sys.executable, "-m", "dse", "run", "--resume", run_dir.name, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    after = [r.json["messages"][-1]["content"] for r in stub.requests][len(before):]
    assert after == ["third done"], "only the unfinished model call is made again"
    document = json.loads(resumed.stdout)
    reused = {s["id"] for s in document["steps"] if s["reused"]}
    assert reused == {"a", "b", "side"} and document["outputs"] == {"c": "fine"}
    shown = subprocess.run([sys.executable, "-m", "dse", "show", run_dir.name, "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(shown.stdout)["status"] == "done"


def test_status_explains_each_endpoint(stub: StubServer, write, capsys) -> None:
    stub.route("GET", "/api/version", Reply(json={"version": "0.5.0"}))
    stub.route("GET", "/api/tags", Reply(json={"models": [{"name": "llama3:latest", "model": "llama3:latest", "size": 1}, {"name": "tinyllama", "model": "tinyllama", "size": 1}]}))
    stub.route("GET", "/api/ps", Reply(json={"models": [{"name": "tinyllama", "model": "tinyllama", "size": 10, "size_vram": 10}]}))
    config = write(
        "config.yaml",
        f"llm:\n  backend: box\n  box: {{type: ollama, base_url: '{stub.url}', models: {{triage: tinyllama, generator: 'qwen2.5-coder:14b'}}}}\n"
        "  anthropic: {api_key: '${NO_SUCH_KEY_SET}'}\n",
    )
    code = main(["status", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0
    assert "[ok] box (ollama: Ollama native API)  (default)" in out
    assert f"{stub.url}" in out and ": ready" in out
    assert "tinyllama (loaded)" in out
    assert "not pulled: qwen2.5-coder:14b (ollama pull qwen2.5-coder:14b)" in out
    assert "[!!] anthropic (anthropic: Anthropic Messages API)" in out and "NO_SUCH_KEY_SET is not set" in out
    main(["status", "--config", str(config), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert {d["name"]: d["ok"] for d in data} == {"box": True, "anthropic": False}


def test_ctrl_c_cancels_cleanly_and_the_journal_says_what_was_interrupted(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat("fine"))
    config = write("config.yaml", f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
    marker = tmp_path / "started"
    sleeper = f"import pathlib,time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    workflow = write("wf.yaml", f"name: long\nsteps:\n  - id: a\n    prompt: hi\n  - id: slow\n    needs: [a]\n    run: {json.dumps([sys.executable, '-c', sleeper])}\n")
    process = subprocess.Popen([sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(marker.exists, timeout=60)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "Traceback" not in err and "dse: interrupted" in err
    (run_dir,) = (tmp_path / ".dse" / "runs").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "run_interrupted" and events[-1]["running"] == ["slow"]
    assert [e["id"] for e in events if e["event"] == "step_finished"] == ["a"]


def test_context_limit_prefers_the_server_then_config_then_catalog(stub: StubServer, write) -> None:
    from dse.config import load_config
    from dse.routing import Intent, Resolver, Router

    stub.route("GET", "/props", Reply(json={"default_generation_settings": {"n_ctx": 3072}, "total_slots": 1}))
    config = load_config(
        write("config.yaml", f"llm:\n  backend: cpp\n  cpp: {{type: llamacpp, base_url: '{stub.url}', models: {{generator: smol}}}}\n"
              "  oa: {type: openai, api_key: k, base_url: 'http://127.0.0.1:9/v1', models: {generator: gpt-4o, small: tiny-x}, context_windows: {gpt-4o: 64000}}\n"),
        environ={},
    )
    resolver = Resolver(config)

    async def limits() -> list[tuple[int, str]]:
        router = Router(config, resolver)
        try:
            return [
                await router.context_limit(resolver.resolve(Intent("s", backend=b, model_key=k)).target)
                for b, k in (("cpp", "generator"), ("oa", "generator"), ("oa", "small"))
            ]
        finally:
            await router.aclose()

    server, configured, estimated = asyncio.run(limits())
    assert server == (3072, f"server {stub.url}")
    assert configured == (64000, "llm.oa.context_windows")
    assert estimated[1] == "estimate from the model name" and estimated[0] > 0


def test_a_resumed_fan_out_sends_only_the_items_that_had_not_finished(stub: StubServer, write, tmp_path: Path) -> None:
    """Each item is journaled as it finishes: resuming re-sends the three that failed, not all six."""
    stub.route("POST", "/v1/chat/completions", openai_chat("a0"), openai_chat("a1"), openai_chat("a2"), openai_error(400, "no"))
    config = write("config.yaml", f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
    workflow = write(
        "wf.yaml",
        "name: fan\nmax_parallel: 1\nsteps:\n  - id: each\n    for_each: [0, 1, 2, 3, 4, 5]\n    prompt: 'item {{ item }}'\n"
        "outputs: {all: '{{ steps.each.output | join(\",\") }}'}\n",
    )
    first = subprocess.run([sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config), "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["id"]
    sent_first = len(stub.calls("POST", "/v1/chat/completions"))
    assert sent_first >= 4, "items 0-2 answered, item 3 failed (what was in flight after it may or may not have left)"
    stub.route("POST", "/v1/chat/completions", openai_chat("again"))
    resumed = subprocess.run([sys.executable, "-m", "dse", "run", "--resume", run_id, "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    resent = [r.json["messages"][-1]["content"] for r in stub.calls("POST", "/v1/chat/completions")[sent_first:]]
    assert sorted(resent) == ["item 3", "item 4", "item 5"]
    assert json.loads(resumed.stdout)["outputs"] == {"all": "a0,a1,a2,again,again,again"}


def test_a_fan_out_wider_than_the_endpoints_waits_instead_of_failing_on_its_own_backlog(stub: StubServer, write, tmp_path: Path) -> None:
    """2 slots and a waiting line of 1 take 3 calls: 12 items at max_parallel 50 wait their turn, and all are answered."""
    slow = openai_chat("ok")
    stub.route("POST", "/v1/chat/completions", Reply(json=slow.json, delay=0.05))
    config = write(
        "config.yaml",
        "llm:\n  backend: s\n  balancer: {queue_limit: 1}\n"
        f"  s: {{type: vllm, endpoints: [{{url: '{stub.url}/v1', max_concurrency: 2}}], models: {{generator: m}}}}\n",
    )
    workflow = write("wf.yaml", "name: wide\nsteps:\n  - id: each\n    for_each: '{{ range(12) | list }}'\n    prompt: 'item {{ item }}'\n")
    result = subprocess.run(
        [sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config), "--max-parallel", "50", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(json.loads(result.stdout)["steps"][0]["output"]) == 12 and len(stub.calls("POST", "/v1/chat/completions")) == 12


def test_a_workflow_file_with_a_hash_in_its_name_runs_and_resumes(stub: StubServer, write, tmp_path: Path) -> None:
    """`#` marks a config's workflow (`CONFIG#NAME`) only when no file has that name."""
    stub.route("POST", "/v1/chat/completions", openai_chat("fine"))
    config = write("config.yaml", f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
    workflow = write("my#flow.yaml", "name: hashed\nsteps:\n  - id: a\n    prompt: hi\n")
    first = subprocess.run([sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config), "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-m", "dse", "run", "--resume", json.loads(first.stdout)["id"]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "changed since run" not in again.stderr, again.stderr
