"""Every command's `--json` against schemas/records.schema.json, after a real run against a stub server."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from stubs import Reply, StubServer, openai_chat

from dse.cli import main

SCHEMA = json.loads((ROOT / "schemas" / "records.schema.json").read_text())
RESOURCE = Resource.from_contents(SCHEMA)
REGISTRY = Registry().with_resource(SCHEMA["$id"], RESOURCE)

WORKFLOW = """\
name: vocabulary
steps:
  - id: ask
    tool: asker
  - id: items
    needs: [ask]
    for_each: '{{ ["a", "b"] }}'
    prompt: 'Say {{ item }}.'
  - id: check
    needs: [ask]
    run: [sh, -c, 'echo found it; exit 3']
    continue_on_error: true
outputs: {answer: '{{ steps.ask.output }}'}
"""


def config_text(url: str) -> str:
    return (
        "llm:\n  backend: s\n"
        f"  s: {{type: openai, api_key: '${{FAKE_VOCABULARY_KEY}}', base_url: '{url}/v1', models: {{generator: m}}}}\n"
        "tools:\n  asker: {llm: {model_key: generator}, prompt: 'Say hi.'}\n"
    )


def validate(document: Any, name: str) -> None:
    """Fail with every place the document leaves its shape, not only the first."""
    schema = {"$ref": f"{SCHEMA['$id']}#/$defs/documents/{name}"}
    errors = sorted(Draft202012Validator(schema, registry=REGISTRY).iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.fixture
def dse(stub: StubServer, write: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """`dse(...)`: a command's --json document and exit code, with the config, workflow and a state dir that holds one run."""
    monkeypatch.setenv("FAKE_VOCABULARY_KEY", "sk-vocabulary-secret")
    stub.route("POST", "/v1/chat/completions", openai_chat("hi"))
    stub.route("GET", "/v1/models", Reply(json={"object": "list", "data": [{"id": "m", "object": "model"}]}))
    files = {"config": str(write("config.yaml", config_text(stub.url))), "workflow": str(write("wf.yaml", WORKFLOW)), "state": str(tmp_path / "state")}

    def run(*args: str) -> tuple[Any, int]:
        code = main([arg.format(**files) for arg in args] + ["--json"])
        out, _ = capsys.readouterr()
        return json.loads(out), code

    return run


COMMANDS: dict[str, tuple[str, ...]] = {
    "run": ("run", "{workflow}", "--config", "{config}", "--state-dir", "{state}"),
    "show": ("show", "last", "--state-dir", "{state}"),
    "runs": ("runs", "--state-dir", "{state}"),
    "plan": ("plan", "{workflow}", "--config", "{config}"),
    "validate": ("validate", "--config", "{config}", "{workflow}"),
    "status": ("status", "--config", "{config}"),
    "models": ("models", "--config", "{config}"),
    "usage": ("usage", "--state-dir", "{state}"),
    "cache": ("cache", "stats", "--state-dir", "{state}"),
    "config": ("config", "show", "--config", "{config}"),
    "changes": ("changes", "--repo", str(ROOT)),
    "graph": ("graph", "{workflow}"),
}


def test_the_schema_is_a_valid_draft_2020_12_schema_with_a_document_per_command() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert set(COMMANDS) <= set(SCHEMA["$defs"]["documents"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_prints_its_documented_shape(name: str, dse) -> None:
    ran, code = dse(*COMMANDS["run"])
    assert code == 0, ran
    document, _ = dse(*COMMANDS[name])
    validate(document, name)


def test_run_and_show_print_the_same_run_record(dse) -> None:
    """One vocabulary: the keys `dse run --json` prints mean the same in `dse show --json`, epoch times included."""
    ran, _ = dse(*COMMANDS["run"])
    shown, _ = dse("show", ran["id"], "--state-dir", "{state}")
    assert set(ran) <= set(shown)
    assert [s["id"] for s in ran["steps"]] == [s["id"] for s in shown["steps"]]
    for key in ("status", "outputs", "calls", "spend", "workflow"):
        assert ran[key] == shown[key], key
    check = next(s for s in shown["steps"] if s["id"] == "check")
    assert check["tolerated"] and "found it" in check["stdout"], check
    assert shown["started"] <= check["started_at"] <= check["finished_at"] <= shown["finished"], "steps are timed on the run's epoch clock"


def test_a_failure_says_ok_false_in_the_same_key_as_success(dse, write: Callable[[str, str], Path]) -> None:
    good, code = dse(*COMMANDS["validate"])
    assert code == 0 and good["ok"] is True
    bad, code = dse("validate", "--config", str(write("bad.yaml", "llm:\n  backend: nowhere\n  path: x\n")))
    assert code == 2 and bad["ok"] is False
    validate(bad, "failure")


def test_a_managed_backend_reports_its_replicas_as_a_number(dse, write: Callable[[str, str], Path]) -> None:
    managed = write("managed.yaml", "llm:\n  backend: local\n  local: {type: llamacpp, managed: {model: smollm2, replicas: 2}}\n")
    reports, _ = dse("status", "--config", str(managed), "--timeout", "0.5")
    validate(reports, "status")
    assert reports[0]["managed"]["replicas"] == 2


ROUND_TRIP = """\
llm:
  backend: a
  fallback_backends: [o]
  a: {type: anthropic, api_key: '${FAKE_ANTHROPIC_KEY}', models: {generator: claude-x}}
  o: {type: ollama, models: {generator: llama3}, headers: {X-Token: '${FAKE_TOKEN}'}, endpoints: ['http://127.0.0.1:9', 'http://127.0.0.1:10']}
  l: {type: llamacpp, managed: {model: smollm2, replicas: 2}}
  oa: {type: openai, models: {generator: gpt-4o}, require_confirmation: {above_tokens: 10}}
tools:
  asker: {llm: {model_key: generator, temperature: 0.2}, prompt: 'Say hi.', speed_tier: fast, name: Asker, tags: [a]}
"""


@pytest.mark.parametrize("given", ["round-trip", "shipped"])
def test_config_show_prints_a_config_that_validate_accepts_and_that_means_the_same(
    given: str, write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dse.config import load_config
    from dse.config.export import to_data

    for name, value in {"FAKE_ANTHROPIC_KEY": "sk-ant-fake", "FAKE_TOKEN": "tok-fake", "OPENAI_API_KEY": "sk-openai-fake"}.items():
        monkeypatch.setenv(name, value)
    original = write("config.yaml", ROUND_TRIP) if given == "round-trip" else ROOT / "configs" / "config.yaml"
    assert main(["config", "show", "--config", str(original)]) == 0
    shown = write("shown.yaml", capsys.readouterr().out)
    assert main(["validate", "--config", str(shown)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    before, after = load_config(original), load_config(shown)
    assert to_data(after) == to_data(before), "printed again, the shown config is the same config"
    assert {n: b.api_key.reveal() for n, b in after.backends.items() if b.api_key} == {n: b.api_key.reveal() for n, b in before.backends.items() if b.api_key}
    text = shown.read_text()
    assert "sk-ant-fake" not in text and "tok-fake" not in text and "sk-openai-fake" not in text
    if given == "round-trip":
        assert "api_key: ${FAKE_ANTHROPIC_KEY}" in text and "X-Token: ${FAKE_TOKEN}" in text and "api_key: ${OPENAI_API_KEY}" in text


def embeddings(request: Any) -> Reply:
    return Reply(json={"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}], "usage": {"prompt_tokens": 1, "total_tokens": 1}})


SMALL: dict[str, tuple[str, ...]] = {
    "select": ("select", "summarize a text", "--config", "{config}"),
    "cacheClear": ("cache", "clear", "--state-dir", "{state}"),
    "prune": ("runs", "prune", "--keep", "0", "--dry-run", "--state-dir", "{state}"),
    "configImport": ("config", "import", str(ROOT / "tests" / "fixtures" / "dise_layouts" / "ollama_block.yaml")),
    "save": ("save", "{state}/report.md", "# Report"),
    "completion": ("completion", "zsh"),
}


def test_every_command_has_json_and_a_documented_shape() -> None:
    """No command is left out: each leaf command takes --json (the tests above hold each one's document to its shape)."""
    from dse.cli import build_parser

    def leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield parser
        for action in subs:
            for sub in action.choices.values():
                yield from leaves(sub)

    missing = [p.prog for p in leaves(build_parser()) if "--json" not in {o for a in p._actions for o in a.option_strings}]
    assert not missing, f"commands without --json: {missing}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_smaller_commands_print_their_documented_shape(name: str, dse) -> None:
    ran, code = dse(*COMMANDS["run"])
    assert code == 0, ran
    document, code = dse(*SMALL[name])
    assert code == 0, document
    validate(document, name)


def test_embed_prints_its_documented_shape(stub: StubServer, write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stub.route("POST", "/v1/embeddings", embeddings)
    config = write("config.yaml", f"llm:\n  backend: s\n  global_defaults: {{default_embedding_backend: s}}\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}, embedding_model: e}}\n")
    assert main(["embed", "hello", "--config", str(config), "--state-dir", str(tmp_path / "state"), "--json"]) == 0
    validate(json.loads(capsys.readouterr().out), "embed")


def test_init_prints_its_documented_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--json"]) == 0
    validate(json.loads(capsys.readouterr().out), "init")
