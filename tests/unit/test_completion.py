"""Shell completion, as a user's bash does it: the code `dse completion bash` prints, evaluated, asked for words."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dse.workflow.journal import RunJournal

BIN = Path(sys.executable).parent


def completions(line: str, cwd: Path) -> list[str]:
    """What bash offers after `line` (the cursor at its end), through the installed `dse` and its shell code."""
    script = (
        'eval "$(dse completion bash)"\n'
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n"
        '_python_argcomplete dse\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DSE_STATE_DIR", None)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [word.strip() for word in done.stdout.splitlines() if word.strip()]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "nightly.yaml").write_text(
        "name: nightly\ninputs:\n  target: {required: true}\n  depth: {default: 2}\nsteps:\n  - id: a\n    run: [echo, '{{ inputs.target }}']\n"
    )
    (tmp_path / "config.yaml").write_text(
        "llm:\n  backend: ollama\n  ollama: {models: {generator: llama3}}\ntools:\n  summarizer: {prompt: 'Sum it up.'}\n"
        "workflows:\n  weekly:\n    steps: [{step_id: sum, tool: summarizer}]\n"
    )
    return tmp_path


def test_commands_and_options_complete(project: Path) -> None:
    assert {"run", "runs", "show", "usage", "completion"} <= set(completions("dse ", project))
    assert "--resume" in completions("dse run --re", project)


def test_workflow_files_and_names_complete(project: Path) -> None:
    offered = completions("dse run ", project)
    assert {"workflows/nightly.yaml", "nightly", "review", "explain", "weekly"} <= set(offered), offered
    assert completions("dse plan nigh", project) == ["nightly"]


def test_input_names_of_the_workflow_on_the_line_complete(project: Path) -> None:
    assert set(completions("dse run nightly -i ", project)) == {"target=", "depth="}
    assert completions("dse run workflows/nightly.yaml --input de", project) == ["depth="]


def test_run_ids_complete(project: Path) -> None:
    source = project / "workflows" / "nightly.yaml"
    journal = RunJournal.create(project / ".dse", workflow=str(source), workflow_name="nightly", config="config.yaml", inputs={}, source=str(source))
    journal.close()
    assert [w for w in completions("dse show ", project) if not w.startswith("-")] == ["last", journal.run_id]
    assert completions(f"dse run --resume {journal.run_id[:6]}", project) == [journal.run_id]


def test_a_broken_config_offers_fewer_words_not_a_traceback(project: Path) -> None:
    (project / "config.yaml").write_text("llm: [unclosed\n")
    offered = completions("dse run ", project)
    assert "nightly" in offered and "weekly" not in offered
    assert completions("dse run nightly -i ", project) == []
