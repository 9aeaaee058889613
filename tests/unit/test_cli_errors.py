"""Bad input through the real command: exit 2, one located line, no traceback, nothing started."""

from __future__ import annotations

from pathlib import Path

from helpers import ROOT, run_dse

CONFIG = str(ROOT / "configs" / "config.yaml")


def assert_one_clean_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dse: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_missing_workflow_file(tmp_path: Path) -> None:
    result = run_dse("run", str(tmp_path / "nope.yaml"), "--config", CONFIG, cwd=tmp_path)
    assert_one_clean_error(result, "nope.yaml", "file not found")


def test_yaml_syntax_error_names_file_and_line(write, tmp_path: Path) -> None:
    path = write("wf.yaml", "name: broken\nsteps:\n  - id: a\n    run: [echo, 'unterminated\n")
    result = run_dse("run", str(path), "--config", CONFIG, cwd=tmp_path)
    assert_one_clean_error(result, f"{path}:", "YAML syntax error")


def test_unknown_tool_names_the_step_line_and_suggests(write, tmp_path: Path) -> None:
    path = write("wf.yaml", "name: t\nsteps:\n  - id: first\n    run: [echo, hi]\n  - id: second\n    tool: reviewr\n")
    result = run_dse("run", str(path), "--config", CONFIG, cwd=tmp_path)
    assert_one_clean_error(result, f"{path}:5:", "unknown tool 'reviewr'", "did you mean 'reviewer'?")
    assert not (tmp_path / ".dse").exists(), "nothing may start on bad input"


def test_unknown_config_key_exits_2(write, tmp_path: Path) -> None:
    config = write("config.yaml", "llm:\n  backend: local\n  local:\n    type: llamacpp\n    modles: {}\n")
    result = run_dse("validate", "--config", str(config), cwd=tmp_path)
    assert_one_clean_error(result, f"{config}:5:5: llm.local.modles", "did you mean 'models'?")


def test_cycle_is_rejected_with_location(write, tmp_path: Path) -> None:
    path = write(
        "wf.yaml",
        "name: c\nsteps:\n  - id: a\n    run: [echo, '{{ steps.b.output }}']\n  - id: b\n    run: [echo, '{{ steps.a.output }}']\n",
    )
    result = run_dse("plan", str(path), "--config", CONFIG, cwd=tmp_path)
    assert_one_clean_error(result, "dependency cycle", f"{path}:3:")


def test_help_has_examples_and_version_prints() -> None:
    help_text = run_dse("--help")
    assert help_text.returncode == 0 and "examples:" in help_text.stdout and "dse run workflows/review.yaml" in help_text.stdout
    version = run_dse("--version")
    assert version.returncode == 0 and version.stdout.startswith("dse ")


def test_a_missing_llama_server_names_the_install_command_before_anything_starts(tmp_path: Path) -> None:
    result = run_dse("run", str(ROOT / "workflows" / "review.yaml"), "--config", CONFIG, cwd=tmp_path, env={"DSE_LLAMA_SERVER": "/nonexistent/llama-server"})
    assert_one_clean_error(result, "llama-server not found", "pip install 'dse[local]'")
    assert not (tmp_path / ".dse").exists(), "no journal for a run that cannot start"


def test_plan_runs_nothing_so_it_needs_no_llama_server(tmp_path: Path) -> None:
    result = run_dse("plan", str(ROOT / "workflows" / "review.yaml"), "--config", CONFIG, cwd=tmp_path, env={"DSE_LLAMA_SERVER": "/nonexistent/llama-server"})
    assert result.returncode == 0, result.stderr
    assert "local" in result.stdout and "smollm2" in result.stdout


def test_a_missing_model_file_is_a_setup_error(write, tmp_path: Path) -> None:
    config = write("config.yaml", "llm:\n  backend: local\n  local: {type: llamacpp, managed: {model: /no/such/model.gguf}}\n")
    workflow = write("wf.yaml", "name: t\nsteps:\n  - id: a\n    prompt: hi\n")
    result = run_dse("run", str(workflow), "--config", str(config), cwd=tmp_path)
    assert_one_clean_error(result, "model file '/no/such/model.gguf' not found", "bundled alias")
