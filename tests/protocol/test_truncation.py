"""Truncation is always visible: an answer cut at its token limit, and a step input cut by `truncate`.

Every protocol's way of saying "stopped at max_tokens" (OpenAI's and llama.cpp's `length`,
Ollama's `done_reason: length`, Anthropic's `max_tokens`, streamed or not) becomes one finish
reason, `length`, and marks the step: in its record, `dse run --json`, the journal that
`dse show` reads, and the text of both. A template's `truncate` filter that cut a step input is
named in the same record.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from stubs import (
    Received,
    Reply,
    StubServer,
    anthropic_message,
    anthropic_stream,
    ollama_chat,
    ollama_stream,
    openai_chat,
    openai_stream,
)

from dse import console
from dse.config import load_config
from dse.routing import Resolver
from dse.runner import prepare, run_workflow
from dse.workflow import build_plan, load_workflow
from dse.workflow.steps import ModelCall, request_for

ASK = "name: cut\nsteps:\n  - id: ask\n    prompt: 'Tell me everything.'\noutputs: {answer: '{{ steps.ask.output }}'}\n"
STREAMED = ASK.replace("    prompt:", "    stream: true\n    prompt:")
MARK = "TRUNCATED at max_tokens"

# case -> (backend type, chat path, the reply that was cut short, the workflow)
CASES = {
    "openai": ("vllm", "/v1/chat/completions", openai_chat("It all began", finish="length"), ASK),
    "ollama": ("ollama", "/api/chat", ollama_chat("It all began", done_reason="length"), ASK),
    "anthropic": ("anthropic", "/v1/messages", anthropic_message("It all began", stop="max_tokens"), ASK),
    "streamed": ("llamacpp", "/v1/chat/completions", openai_stream(["It all", " began"], finish="length"), STREAMED),
}


def config(kind: str, url: str) -> str:
    base = url if kind in ("ollama", "anthropic", "llamacpp") else f"{url}/v1"
    return f"llm:\n  backend: target\n  target:\n    type: {kind}\n    api_key: sk-stub\n    base_url: {base}\n    models: {{generator: m}}\n"


def dse(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dse", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cut_answer_is_marked_in_every_form(case: str, stub: StubServer, write, tmp_path: Path) -> None:
    kind, path, reply, workflow = CASES[case]
    stub.route("POST", path, reply)
    wf, cfg = str(write("wf.yaml", workflow)), str(write("config.yaml", config(kind, stub.url)))

    ran = dse("run", wf, "--config", cfg, "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    document = json.loads(ran.stdout)
    (step,) = document["steps"]
    assert step["truncated"] is True and step["finish_reason"] == "length", step
    assert document["outputs"]["answer"] == "It all began", "the cut answer is still the output"

    shown = json.loads(dse("show", document["id"], "--json", cwd=tmp_path).stdout)
    (journaled,) = shown["steps"]
    assert journaled["truncated"] is True and journaled["finish_reason"] == "length"
    text = dse("show", document["id"], cwd=tmp_path).stdout
    assert f"[ok] ask" in text and MARK in text.split("[ok] ask", 1)[1].splitlines()[0]

    plain = dse("run", wf, "--config", cfg, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    progress = [line for line in plain.stderr.splitlines() if line.startswith("[ok] ask")]
    assert progress and MARK in progress[-1], plain.stderr
    assert f"step ask: {MARK}" in plain.stdout


@pytest.mark.parametrize(
    ("kind", "path", "reply"),
    [
        ("ollama", "/api/chat", ollama_stream(["It all", " began"], done_reason="length")),
        ("anthropic", "/v1/messages", anthropic_stream(["It all", " began"], stop="max_tokens")),
    ],
)
def test_every_protocol_streamed_says_length(kind: str, path: str, reply: Reply, stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", path, reply)
    prepared = prepare(write("wf.yaml", STREAMED), write("config.yaml", config(kind, stub.url)))
    result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    step = result.steps["ask"]
    assert step.output == "It all began" and step.truncated and step.finish_reason == "length"


@pytest.mark.parametrize(
    ("kind", "path", "reply", "reason"),
    [
        ("vllm", "/v1/chat/completions", openai_chat("Done."), "stop"),
        ("ollama", "/api/chat", ollama_chat("Done."), "stop"),
        ("anthropic", "/v1/messages", anthropic_message("Done."), "end_turn"),
    ],
)
def test_a_finished_answer_is_not_marked(kind: str, path: str, reply: Reply, reason: str, stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", path, reply)
    prepared = prepare(write("wf.yaml", ASK), write("config.yaml", config(kind, stub.url)))
    result, calls = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    step = result.steps["ask"]
    assert not step.truncated and step.finish_reason == reason
    assert "TRUNCATED" not in console.step_line(step) and "TRUNCATED" not in console.run_text(result, calls)


def test_a_fan_out_is_truncated_when_any_item_was_and_says_how_many(stub: StubServer, write, tmp_path: Path) -> None:
    def answer(request: Received) -> Reply:
        prompt = request.json["messages"][-1]["content"]
        return openai_chat(prompt, finish="length" if prompt in ("item b", "item d") else "stop")

    stub.route("POST", "/v1/chat/completions", answer)
    workflow = "name: fan\nsteps:\n  - id: each\n    for_each: [a, b, c, d]\n    prompt: 'item {{ item }}'\n"
    prepared = prepare(write("wf.yaml", workflow), write("config.yaml", config("vllm", stub.url)))
    result, calls = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    step = result.steps["each"]
    assert step.status == "done" and step.output == ["item a", "item b", "item c", "item d"]
    assert step.truncated and step.truncated_items == 2 and step.finish_reason == "length"
    assert f"{MARK} in 2 of 4 items" in console.step_line(step)
    assert f"step each: {MARK} in 2 of 4 items" in console.run_text(result, calls)
    (document,) = json.loads(console.run_json(result, calls))["steps"]
    assert document["truncated"] is True and document["truncated_items"] == 2


def test_the_step_says_what_its_last_call_did_as_that_answer_is_the_output(stub: StubServer, write, tmp_path: Path) -> None:
    """JSON cut at the cap fails the check; the repair's whole answer is the output, and is not truncated."""
    stub.route("POST", "/v1/chat/completions", openai_chat('{"verdict": "triv', finish="length"), openai_chat('{"verdict": "trivial"}'))
    workflow = "name: j\nsteps:\n  - id: ask\n    prompt: 'Answer in JSON.'\n    output: json\n"
    prepared = prepare(write("wf.yaml", workflow), write("config.yaml", config("tabbyapi", stub.url)))
    result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    step = result.steps["ask"]
    assert step.output == {"verdict": "trivial"} and step.calls == 2
    assert not step.truncated and step.finish_reason == "stop"
    stub.route("POST", "/v1/chat/completions", openai_chat('{"verdict": "triv', finish="length"))
    result, _ = asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))
    step = result.steps["ask"]
    assert step.status == "failed" and step.truncated and MARK in console.step_line(step), "a failure that a cut explains says so"


# ---- the `truncate` filter on a step's inputs -----------------------------------------------

LONG, SHORT = "x" * 300, "short"
WITH_CUT = (
    "name: review\ninputs: {text: {type: string}}\nsteps:\n  - id: review\n"
    "    with: {diff: '{{ inputs.text | truncate(40) }}', title: '{{ inputs.text }}'}\n"
    "    prompt: 'Review: {{ diff }}'\n"
)
PROMPT_CUT = "name: review\ninputs: {text: {type: string}}\nsteps:\n  - id: review\n    prompt: 'Review: {{ inputs.text | truncate(40) }}'\n"


def run_with(stub: StubServer, write, tmp_path: Path, workflow: str, text: str):
    stub.route("POST", "/v1/chat/completions", openai_chat("fine"))
    prepared = prepare(write("wf.yaml", workflow), write("config.yaml", config("vllm", stub.url)), {"text": text})
    return asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))


def test_a_truncate_filter_that_cuts_a_step_input_is_reported(stub: StubServer, write, tmp_path: Path) -> None:
    result, calls = run_with(stub, write, tmp_path, WITH_CUT, LONG)
    step = result.steps["review"]
    assert step.truncated_inputs == ["with.diff"] and not step.truncated, "the input was cut, not the answer"
    (sent,) = stub.calls("POST", "/v1/chat/completions")
    assert len(sent.json["messages"][-1]["content"]) < 60, "the filter did cut"
    assert "input cut by truncate: with.diff" in console.step_line(step)
    assert "step review: input cut by truncate: with.diff" in console.run_text(result, calls)
    assert json.loads(console.run_json(result, calls))["steps"][0]["truncated_inputs"] == ["with.diff"]
    (run_dir,) = (tmp_path / ".dse" / "runs").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (finished,) = [e for e in events if e["event"] == "step_finished"]
    assert finished["truncated_inputs"] == ["with.diff"], "journaled"


def test_a_truncate_filter_that_cuts_nothing_is_not_reported(stub: StubServer, write, tmp_path: Path) -> None:
    result, calls = run_with(stub, write, tmp_path, WITH_CUT, SHORT)
    step = result.steps["review"]
    assert step.truncated_inputs == [] and "truncate" not in console.step_line(step)
    assert "step review" not in console.run_text(result, calls)


def test_a_cut_in_the_prompt_template_is_reported_as_the_prompt(stub: StubServer, write, tmp_path: Path) -> None:
    result, _ = run_with(stub, write, tmp_path, PROMPT_CUT, LONG)
    assert result.steps["review"].truncated_inputs == ["prompt"]
    result, _ = run_with(stub, write, tmp_path, PROMPT_CUT, SHORT)
    assert result.steps["review"].truncated_inputs == []


def test_the_rendered_request_carries_the_cut_as_plain_data(write) -> None:
    config = load_config(write("config.yaml", "llm:\n  backend: s\n  s: {type: vllm, base_url: 'http://127.0.0.1:9/v1', models: {generator: m}}\n"), environ={})
    plan = build_plan(load_workflow(write("wf.yaml", WITH_CUT)), config, Resolver(config))
    context = {"steps": {}, "env": {}}
    cut = request_for(plan.steps["review"], {**context, "inputs": {"text": LONG}}, None)
    kept = request_for(plan.steps["review"], {**context, "inputs": {"text": SHORT}}, None)
    assert isinstance(cut, ModelCall) and isinstance(kept, ModelCall)
    assert cut.truncated_inputs == ("with.diff",) and kept.truncated_inputs == ()
