"""`dse validate`, `dse plan`, `dse config show` and `dse select` as a user sees them."""

from __future__ import annotations

import json
from pathlib import Path

import dise_guide
import pytest
from helpers import CONFIG, ROOT

from dse.cli import main

REVIEW = str(ROOT / "workflows" / "review.yaml")
TWO_BACKENDS = """\
llm:
  backend: ollama
  global_defaults: {default_backend: ollama}
  fallback_backends: [ollama]
  ollama: {models: {generator: llama3, triage: tinyllama, evaluator: llama3}}
  openai: {api_key: sk-test, models: {generator: gpt-4o, triage: gpt-4o-mini, evaluator: gpt-4}}
tools:
  triage: {llm: {model_key: triage}, prompt: "t {{ changes }}"}
  reviewer: {llm: {model_key: generator}, prompt: "r {{ diff }}"}
  summarizer: {llm: {model_key: evaluator}, prompt: "s {{ findings }}"}
  pinned: {backend: openai, prompt: "p"}
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_accepts_the_shipped_files(capsys) -> None:
    code, out, err = cli(capsys, "validate", str(CONFIG), REVIEW)
    assert code == 0 and out.startswith("ok: ") and err == ""


@pytest.mark.parametrize("name", dise_guide.NAMES)
def test_validate_and_plan_show_every_dise_snippet_as_the_guide_says(
    capsys, monkeypatch: pytest.MonkeyPatch, write, name: str
) -> None:
    """With no API keys set: validate passes with only the guide's warnings; plan shows each call's target
    (tests/dise_guide.py), and says so where that backend is unavailable until its variable is set."""
    for variable in dise_guide.KEYS:
        monkeypatch.delenv(variable, raising=False)
    guide = dise_guide.GUIDE[name]
    config = str(dise_guide.fixture(name))
    code, out, err = cli(capsys, "validate", "--json", "--config", config)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["ok"] is True and shown["config"] == config
    assert len(shown["warnings"]) == len(guide.warnings)
    assert all(expected in warning for warning, expected in zip(shown["warnings"], guide.warnings))
    if not guide.calls:
        return
    steps = [
        {"id": c.step, "prompt": "hi", **({"tool": c.tool} if c.tool else {}), **({"model_key": c.model_key} if c.model_key else {})}
        for c in guide.calls
    ]
    workflow = write("wf.yaml", json.dumps({"name": "probe", "steps": steps}))
    code, out, err = cli(capsys, "plan", str(workflow), "--json", "--config", config)
    assert code == 0, err
    planned = {s["step"]: s for s in json.loads(out)["steps"]}
    for call in guide.calls:
        step = planned[call.step]
        assert (step["backend"], step["model"], step["role"], step["deployment"]) == (call.backend, call.model, call.role, call.deployment), call.step
        assert tuple(step["fallbacks"]) == call.fallbacks, call.step
        # $AZURE_OPENAI_ENDPOINT is unset here: that endpoint is unknown, a deployment's own is not.
        assert tuple(step["endpoints"]) == tuple(e for e in call.endpoints if e != dise_guide.AZURE_URL), call.step
        unavailable = guide.blocks[call.backend].unavailable
        note = f"note: backend {call.backend} is unavailable ({unavailable}); fallbacks apply at run time"
        assert (note in step["reasons"]) == (unavailable is not None), (call.step, step["reasons"])


def test_plan_explains_every_step(capsys) -> None:
    code, out, _ = cli(capsys, "plan", REVIEW, "--config", str(CONFIG), "--why")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "workflow review: Review the changes of a git repository, one model call per changed file, then a Markdown report."
    assert "  input target (directory, default '.') - path of the git repository to review" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("step "))
    header, *rows = lines[start:]
    assert header.split() == ["step", "tool", "backend", "model", "endpoints", "rule"]
    assert any(r.startswith("triage ") and "global default + tool triage model_key" in r for r in rows)
    assert any(r.startswith("triage ") and "local" in r and "smollm2" in r for r in rows)
    assert "triage: model_key 'triage' -> local.models.triage = smollm2" in out


def test_flipping_one_line_retargets_every_tool_in_the_plan(capsys, write) -> None:
    def backends(text: str) -> dict[str, str]:
        config = write("config.yaml", text)
        code, out, err = cli(capsys, "plan", REVIEW, "--config", str(config), "--json")
        assert code == 0, err
        return {s["step"]: s.get("backend") for s in json.loads(out)["steps"] if s["kind"] == "llm"}

    assert set(backends(TWO_BACKENDS).values()) == {"ollama"}
    flipped = TWO_BACKENDS.replace("default_backend: ollama", "default_backend: openai")
    assert set(backends(flipped).values()) == {"openai"}


def test_a_directive_retargets_only_its_step(capsys, write) -> None:
    config = write("config.yaml", TWO_BACKENDS)
    workflow = write("wf.yaml", "name: d\nsteps:\n  - id: a\n    prompt: 'Use gpt-4o for this. Hi'\n  - id: b\n    prompt: Hi\n")
    code, out, _ = cli(capsys, "plan", str(workflow), "--config", str(config), "--json")
    steps = {s["step"]: s for s in json.loads(out)["steps"]}
    assert (steps["a"]["backend"], steps["a"]["model"], steps["a"]["rule"]) == ("openai", "gpt-4o", "directive")
    assert steps["a"]["directive"] == "Use gpt-4o for this"
    assert (steps["b"]["backend"], steps["b"]["model"]) == ("ollama", "llama3")


def test_validate_warns_when_a_directive_names_an_unavailable_backend(capsys, write) -> None:
    config = write("config.yaml", TWO_BACKENDS)
    workflow = write("wf.yaml", "name: d\nsteps:\n  - id: a\n    prompt: 'Use claude for this. Hi'\n")
    code, out, err = cli(capsys, "validate", "--config", str(config), str(workflow))
    assert code == 0
    assert "dse: warning: directive asks for anthropic, which is not configured; falling back to ollama" in err


def test_config_show_redacts_secrets_and_fills_defaults(capsys, write) -> None:
    config = write("config.yaml", TWO_BACKENDS)
    code, out, _ = cli(capsys, "config", "show", "--config", str(config), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["llm"]["openai"]["api_key"] == "***" and "sk-test" not in out
    assert data["llm"]["ollama"]["base_url"] == "http://localhost:11434"
    assert data["model_selector"]["weights"] == {"context_window": 30, "speed": 25, "cost": 15, "quality": 15, "specialization": 15}
    code, text, _ = cli(capsys, "config", "show", "--config", str(config))
    assert "api_key: '***'" in text and "sk-test" not in text


def test_select_ranks_with_breakdown_and_lists_rejections(capsys, write) -> None:
    anthropic = "  anthropic: {api_key: '${NO_SUCH_KEY}', models: {g: claude-3-opus-20240229}}\n"
    config = write("config.yaml", TWO_BACKENDS.replace("tools:\n", anthropic + "tools:\n"))
    code, out, _ = cli(capsys, "select", "Generate complex Python code with type hints", "--config", str(config), "--json")
    data = json.loads(out)
    assert code == 0 and len(data["ranked"]) == 3
    scores = [r["score"] for r in data["ranked"]]
    assert scores == sorted(scores, reverse=True)
    for row in data["ranked"]:
        assert abs(sum(row["breakdown"].values()) - row["score"]) < 0.05
    assert {"backend": "anthropic", "model": "claude-3-opus-20240229", "reason": "unavailable: NO_SUCH_KEY is not set"} in data["rejected"]
    code, out, _ = cli(capsys, "select", "anything", "--config", str(config), "--backend", "openai", "--max-cost", "free")
    assert code == 1 and "no candidate passes the constraints" in out


def test_json_errors_are_records(capsys, write) -> None:
    config = write("config.yaml", "llm:\n  backend: ollama\n  ollama: {base_urll: x}\n")
    code, out, err = cli(capsys, "validate", "--config", str(config), "--json")
    assert code == 2
    (record,) = json.loads(out)["errors"]
    assert (record["line"], record["column"], record["key"]) == (3, 12, "llm.ollama.base_urll")
    assert record["hint"] == "did you mean 'base_url'?"


def test_inputs_from_flags_file_and_stdin(capsys, write, monkeypatch, tmp_path: Path) -> None:
    import io

    monkeypatch.chdir(tmp_path)
    workflow = write("wf.yaml", "name: echo\ninputs:\n  n: {type: integer, required: true}\n  word: {type: string, default: x}\n"
                     "steps:\n  - id: say\n    run: [echo, '{{ inputs.word }}-{{ inputs.n + 1 }}']\noutputs: {said: '{{ steps.say.output }}'}\n")
    code, out, err = cli(capsys, "run", str(workflow), "--config", str(CONFIG), "--input", "n=41", "--json")
    assert code == 0 and json.loads(out)["outputs"] == {"said": "x-42"}
    inputs = write("inputs.json", '{"n": 1, "word": "file"}')
    code, out, _ = cli(capsys, "run", str(workflow), "--config", str(CONFIG), "--inputs", str(inputs), "--quiet")
    assert code == 0 and out.strip() == "file-2"
    monkeypatch.setattr("sys.stdin", io.StringIO('{"n": 2}'))
    code, out, _ = cli(capsys, "run", str(workflow), "--config", str(CONFIG), "--inputs", "-", "--quiet")
    assert code == 0 and out.strip() == "x-3"
    code, out, err = cli(capsys, "run", str(workflow), "--config", str(CONFIG))
    assert code == 2 and "input 'n' is required" in err
    assert len(list((tmp_path / ".dse" / "runs").iterdir())) == 3, "bad input opens no journal"
    code, _, err = cli(capsys, "run", str(workflow), "--config", str(CONFIG), "--input", "n=many")
    assert code == 2 and "input 'n' must be integer, got 'many'" in err


def test_runs_and_show_read_the_journal(capsys, write, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    workflow = write("wf.yaml", "name: tiny\nsteps:\n  - id: a\n    run: [echo, hello]\n")
    code, out, _ = cli(capsys, "run", str(workflow), "--config", str(CONFIG), "--json")
    run_id = json.loads(out)["id"]
    code, out, _ = cli(capsys, "runs", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == run_id and json.loads(out)[0]["status"] == "done"
    code, out, _ = cli(capsys, "show", run_id)
    assert code == 0 and f"run {run_id}: tiny" in out and "output: hello" in out
    code, _, err = cli(capsys, "show", "no-such-run")
    assert code == 2 and "no run 'no-such-run'" in err


def test_graph_prints_mermaid_and_dot(capsys) -> None:
    code, out, _ = cli(capsys, "graph", REVIEW)
    assert code == 0 and out.startswith("flowchart LR") and "triage --> files" in out
    code, out, _ = cli(capsys, "graph", REVIEW, "--format", "dot")
    assert code == 0 and out.startswith('digraph "review"') and '"triage" -> "files";' in out


def test_progress_prints_lines_when_piped(write) -> None:
    """Piped, one line per step event; on a terminal, see tests/unit/test_live_layout.py."""
    import io

    from dse.console import Progress
    from dse.runner import prepare
    from dse.workflow.results import StepResult

    piped = io.StringIO()
    progress = Progress(prepare(REVIEW, CONFIG).plan, piped)
    progress.step(StepResult("changes", "run", status="running"))
    progress.step(StepResult("changes", "run", status="done", output="x", seconds=0.1))
    progress.chunk("triage", "trivial")
    progress.close()
    assert piped.getvalue().splitlines() == ["[..] changes        running   run", "[ok] changes        done      run  0.10s", "trivial"]


def test_embed_without_an_embedding_backend_says_which_key_to_set(capsys, write) -> None:
    config = write("config.yaml", TWO_BACKENDS)
    code, _, err = cli(capsys, "embed", "hi", "--config", str(config))
    assert code == 2 and "no embedding backend configured" in err and "default_embedding_backend" in err


def test_embed_on_a_backend_type_without_embeddings_is_refused_before_any_call(capsys, write) -> None:
    """The type declares what it can do: Anthropic has no embeddings, so no request is even tried."""
    config = write("config.yaml", "llm:\n  backend: claude\n  claude: {type: anthropic, api_key: k, base_url: 'http://127.0.0.1:9'}\n")
    code, _, err = cli(capsys, "embed", "hi", "--config", str(config), "--backend", "claude")
    assert code == 2 and "type anthropic, which has no embeddings" in err


def test_save_writes_first_and_refuses_what_is_not_a_regular_file(tmp_path: Path, capsys) -> None:
    import os

    os.mkfifo(tmp_path / "fifo")
    code, out, err = cli(capsys, "save", str(tmp_path / "fifo"), "hello")
    assert code == 2 and out == "" and "not a regular file" in err, "a FIFO would block forever"
    code, out, err = cli(capsys, "save", str(tmp_path / "dir") + "/", "hello")
    assert code == 2 and out == "" and not (tmp_path / "dir").exists()
    code, out, _ = cli(capsys, "save", str(tmp_path / "r" / "report.md"), "# Report")
    assert code == 0 and out == "# Report\n" and (tmp_path / "r" / "report.md").read_text() == "# Report\n"
