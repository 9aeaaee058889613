"""A DiSE config in the guide's layout runs as-is: its tool fields, workflows, embeddings and foreign sections.

The fixture (tests/fixtures/dise_guide_layout/config.yaml) uses every DiSE tool field, a
`workflows:` section, the `embeddings:` section and sections of other DiSE subsystems whose
`${VAR}` are not set. The backend is a loopback stub; each test checks what reached it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers import ROOT, run_dse
from stubs import Reply, StubServer, openai_chat

from dse.config.dise import format_to_jinja
from dse.errors import InputError, Location

FIXTURE = ROOT / "tests" / "fixtures" / "dise_guide_layout" / "config.yaml"
FOREIGN = "not used by dse: logging, http_server, rag_memory"


def env(stub: StubServer) -> dict[str, str]:
    return {"STUB_URL": stub.url}


def test_it_validates_with_one_warning_naming_the_other_subsystems(stub: StubServer, tmp_path: Path) -> None:
    result = run_dse("validate", "--config", str(FIXTURE), cwd=tmp_path, env=env(stub))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("dse: warning:")]
    assert len(warnings) == 1 and FOREIGN in warnings[0] and f"{FIXTURE}:84:1: logging" in warnings[0]
    assert "LOG_DIR_NOT_SET" not in result.stderr and "QDRANT_URL_NOT_SET" not in result.stderr, "their ${VAR} are not read"


def test_strict_turns_the_warning_into_a_located_error(stub: StubServer, tmp_path: Path) -> None:
    result = run_dse("validate", "--config", str(FIXTURE), "--strict", cwd=tmp_path, env=env(stub))
    assert result.returncode == 2 and f"dse: error: {FIXTURE}:84:1: logging: {FOREIGN}" in result.stderr


@pytest.mark.parametrize(
    "section, message",
    [
        ("tool", "unknown key 'tool' (hint: did you mean 'tools'?)"),
        ("model_selecter", "unknown key 'model_selecter' (hint: did you mean 'model_selector'?)"),
        ("frobnicate", "unknown key 'frobnicate'"),
    ],
)
def test_a_key_near_dses_own_or_unknown_is_still_an_error(write, tmp_path: Path, section: str, message: str) -> None:
    config = write("config.yaml", f"llm:\n  backend: o\n  o: {{type: ollama}}\n{section}:\n  x: 1\n")
    result = run_dse("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and f"{config}:4:1: {section}: {message}" in result.stderr


def test_plan_shows_the_system_prompt_the_template_and_the_tiers(stub: StubServer, tmp_path: Path) -> None:
    result = run_dse("plan", "blog_workflow", "--config", str(FIXTURE), "--json", cwd=tmp_path, env=env(stub))
    assert result.returncode == 0, result.stderr
    tools = json.loads(result.stdout)["tools"]
    writer = tools["technical_writer"]
    assert writer["name"] == "Technical Article Writer"
    assert writer["system"] == "You write for engineers about {{ task }}. Literal braces: {not a field}."
    assert writer["prompt"] == "Write about: {{ task }}\n{{ description }}\nEarlier: {{ previous }}"
    assert writer["tiers"] == {"cost": "medium", "speed": "medium", "quality": "excellent"}
    assert writer["max_tokens"] == 256, "max_output_length: short"
    assert tools["quick_triage"]["tiers"]["speed"] == "very-fast" and tools["quick_triage"]["max_tokens"] == 64
    text = run_dse("plan", "blog_workflow", "--config", str(FIXTURE), cwd=tmp_path, env=env(stub)).stdout
    assert "technical_writer (Technical Article Writer)" in text and "tiers: cost medium, speed medium, quality excellent" in text


def test_its_workflow_runs_by_name(stub: StubServer, tmp_path: Path) -> None:
    stub.route(
        "POST",
        "/v1/chat/completions",
        openai_chat("An outline."),
        openai_chat("A draft."),
        openai_chat('{"verdict": "pass"}'),
    )
    result = run_dse("run", "blog_workflow", "--config", str(FIXTURE), "-i", "task=async Python", "--json", cwd=tmp_path, env=env(stub))
    assert result.returncode == 0, result.stderr
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["check"]["output"] == {"verdict": "pass"}, "the tool's output_schema makes the answer JSON"
    outline, draft, check = (request.json for request in stub.calls("POST", "/v1/chat/completions"))
    assert outline["model"] == "writer-model" and outline["max_tokens"] == 256 and outline["temperature"] == 0.7
    assert outline["messages"] == [
        {"role": "system", "content": "You write for engineers about async Python. Literal braces: {not a field}."},
        {"role": "user", "content": "Write about: async Python\nCreate an outline\nEarlier: "},
    ]
    assert draft["messages"][-1]["content"] == "Write about: async Python\nWrite the draft\nEarlier: An outline."
    assert check["model"] == "triage-model" and check["max_tokens"] == 64
    assert check["messages"][0] == {"role": "system", "content": "Decide pass or fail."}
    assert check["messages"][1]["content"].startswith("Is the draft fit to publish?\n\nasync Python")
    assert "A draft." in check["messages"][1]["content"]


def test_input_and_output_schemas_are_checked(stub: StubServer, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat("An outline."), openai_chat("A draft."), openai_chat('{"verdict": "maybe"}'))
    wrong_output = run_dse("run", "blog_workflow", "--config", str(FIXTURE), "-i", "task=async Python", "--json", cwd=tmp_path, env=env(stub))
    assert wrong_output.returncode == 1
    (failed,) = [s for s in json.loads(wrong_output.stdout)["steps"] if s["status"] == "failed"]
    assert failed["id"] == "check" and "output_schema" in failed["error"] and "maybe" in failed["error"]
    short = run_dse("run", "blog_workflow", "--config", str(FIXTURE), "-i", "task=ab", "--json", cwd=tmp_path, env=env(stub))
    (failed,) = [s for s in json.loads(short.stdout)["steps"] if s["status"] == "failed"]
    assert failed["id"] == "check" and "does not match tool 'quick_triage''s input_schema" in failed["error"]


def test_the_embeddings_section_chooses_the_backend_model_and_size(stub: StubServer, tmp_path: Path) -> None:
    vectors = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    stub.route("POST", "/v1/embeddings", Reply(json={**vectors, "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]}))
    unset = run_dse("embed", "hello", "--config", str(FIXTURE), cwd=tmp_path, env=env(stub))
    assert unset.returncode == 1 and "backend 'openai' is unavailable: EMBED_KEY_NOT_SET is not set" in unset.stderr
    keyed = {**env(stub), "EMBED_KEY_NOT_SET": "sk-embed-0123456789"}
    result = run_dse("embed", "hello", "--config", str(FIXTURE), "--json", cwd=tmp_path, env=keyed)
    assert result.returncode == 0, result.stderr
    (request,) = stub.calls("POST", "/v1/embeddings")
    assert request.json["model"] == "text-embedding-3-small" and request.json["dimensions"] == 3
    with sqlite3.connect(tmp_path / ".dse" / "usage.db") as db:
        [(step, backend, tokens)] = db.execute("SELECT step_id, backend, input_tokens FROM calls").fetchall()
    assert (step, backend, tokens) == ("embed", "openai", 2), "an embedding of a paid API is in the usage ledger"
    stub.route("POST", "/v1/embeddings", Reply(json={**vectors, "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}))
    wrong = run_dse("embed", "hello", "--config", str(FIXTURE), cwd=tmp_path, env=keyed)
    assert wrong.returncode == 1 and "returned vectors of 2 dimensions; the config says 3" in wrong.stderr


def test_tiers_are_the_selectors_prior_for_a_tool(write, tmp_path: Path) -> None:
    models = (
        "model_selector:\n  models:\n"
        "    fast-cheap: {speed: 10, cost: 10, quality: 2}\n"
        "    slow-great: {speed: 2, cost: 2, quality: 10}\n"
    )
    tools = (
        "tools:\n"
        "  quick: {llm: {model: auto}, speed_tier: very-fast, cost_tier: free, quality_tier: basic}\n"
        "  careful: {llm: {model: auto}, speed_tier: slow, cost_tier: high, quality_tier: excellent}\n"
    )
    config = write("config.yaml", "llm:\n  backend: o\n  o: {type: ollama, models: {a: fast-cheap, b: slow-great}}\n" + models + tools)
    picks = {}
    for tool in ("quick", "careful"):
        result = run_dse("select", "anything", "--config", str(config), "--tool", tool, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        picks[tool] = json.loads(result.stdout)["ranked"][0]["model"]
    assert picks == {"quick": "fast-cheap", "careful": "slow-great"}


def test_dise_templates_become_jinja_without_running_what_they_quote() -> None:
    here = Location("config.yaml", 3, 5)
    assert format_to_jinja("Review: {code} and {{braces}}", here) == "Review: {{ code }} and {braces}"
    assert format_to_jinja("Keep {{% if x %}} as text", here) == "{% raw %}Keep {% if x %} as text{% endraw %}"
    with pytest.raises(InputError, match=r"field \{code!r\} is not supported") as info:
        format_to_jinja("Review {code!r}", here)
    assert info.value.location == here


@pytest.mark.parametrize("layout", sorted(p.name for p in (ROOT / "tests" / "fixtures" / "dise_layouts").glob("*.yaml")))
def test_another_dise_layout_is_one_error_that_names_the_import(tmp_path: Path, layout: str) -> None:
    """Not a wall of unknown keys: one located error naming the layout and the command that converts it."""
    path = ROOT / "tests" / "fixtures" / "dise_layouts" / layout
    result = run_dse("validate", "--config", str(path), cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dse: error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert f"{path}:" in errors[0] and "layout, which dse reads once converted" in errors[0]
    assert f"dse config import {path} -o" in errors[0]
    positional = run_dse("validate", str(path), cwd=tmp_path)
    assert positional.returncode == 2 and "layout, which dse reads once converted" in positional.stderr, "named as a file, it is read as a config"
    converted = tmp_path / "converted.yaml"
    assert run_dse("config", "import", str(path), "-o", str(converted), cwd=tmp_path).returncode == 0
    assert run_dse("validate", "--config", str(converted), cwd=tmp_path).returncode == 0
