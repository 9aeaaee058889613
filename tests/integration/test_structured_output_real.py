"""Structured output and truncation on a real llama-server with the bundled SmolLM2-135M.

A model this small rarely answers in JSON when only asked to; held to the step's schema by the
grammar llama-server compiles from `response_format`, it answers with schema-valid JSON in one
call, no repair. The same server stops at `max_tokens` with `finish_reason: length`, which must
mark the step truncated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CONFIG, run_dse

from dse import user_schema
from dse.config.model import ManagedSettings
from dse.local.servers import LocalCluster
from dse.runner import prepare, run_workflow

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["trivial", "substantive"]}}, "required": ["verdict"]}
PROMPTS = [
    "Is renaming a local variable a trivial change?",
    "A commit rewrites the whole storage layer. Is it trivial or substantive?",
    "Fix a typo in a comment. Verdict?",
    "Classify this diff: +def average(values):\n+    return sum(values) / len(values)",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = LocalCluster("structured", ManagedSettings(replicas=1, parallel=2), Path(tmp_path_factory.mktemp("logs")))
    [url] = asyncio.run(cluster.start())
    try:
        yield url
    finally:
        cluster.stop()


def config(url: str, kind: str = "llamacpp") -> str:
    return f"llm:\n  backend: local\n  local: {{type: {kind}, base_url: '{url}', models: {{generator: smollm2}}}}\n"


def judge(prompt: str, extra: str = "") -> str:
    return (
        f"name: judge\nsteps:\n  - id: judge\n    prompt: {json.dumps(prompt)}\n    temperature: 0.0\n    max_tokens: 48\n{extra}"
        f"    output: json\n    output_schema: {json.dumps(SCHEMA)}\n"
    )


def run(write, tmp_path: Path, url: str, workflow: str, kind: str = "llamacpp"):
    prepared = prepare(write("wf.yaml", workflow), write("config.yaml", config(url, kind)))
    return asyncio.run(run_workflow(prepared, state_dir=tmp_path / ".dse"))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_schema_holds_the_real_model_to_valid_json_in_one_call(prompt: str, server: str, write, tmp_path: Path) -> None:
    result, calls = run(write, tmp_path, server, judge(prompt))
    step = result.steps["judge"]
    assert step.status == "done", step.error
    assert not list(user_schema.validator(SCHEMA).iter_errors(step.output)), step.output
    assert step.calls == 1 and sum(calls["local"].values()) == 1, "no repair call"
    assert step.finish_reason == "stop" and not step.truncated


def test_a_streamed_step_is_held_to_the_schema_too(server: str, write, tmp_path: Path) -> None:
    result, calls = run(write, tmp_path, server, judge(PROMPTS[0], "    stream: true\n"))
    step = result.steps["judge"]
    assert step.status == "done", step.error
    assert step.output in ({"verdict": "trivial"}, {"verdict": "substantive"}) and step.calls == 1


def test_a_real_answer_cut_at_max_tokens_is_marked_truncated(server: str, write, tmp_path: Path) -> None:
    workflow = "name: long\nsteps:\n  - id: essay\n    prompt: Write a long essay about the sea.\n    max_tokens: 8\n"
    result, _ = run(write, tmp_path, server, workflow)
    step = result.steps["essay"]
    assert step.status == "done" and step.completion_tokens == 8
    assert step.truncated and step.finish_reason == "length"


def test_dse_run_on_the_embedded_config_answers_schema_valid_json(write, tmp_path: Path) -> None:
    """The whole command on the packaged default: managed replicas, the constraint, one call, the marking in --json."""
    workflow = write("wf.yaml", judge(PROMPTS[1]))
    result = run_dse("run", str(workflow), "--config", str(CONFIG), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (step,) = json.loads(result.stdout)["steps"]
    assert step["output"]["verdict"] in ("trivial", "substantive") and step["calls"] == 1
    assert step["truncated"] is False and step["finish_reason"] == "stop"
