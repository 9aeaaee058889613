"""`dse run` features on the real embedded model: streaming output and a fan-out over both replicas."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import CONFIG, run_dse

pytestmark = pytest.mark.integration


def test_streamed_step_shows_tokens_as_they_arrive(write, tmp_path: Path) -> None:
    workflow = write("stream.yaml", "name: s\nsteps:\n  - id: poem\n    stream: true\n    prompt: Write two short lines about the sea.\noutputs: {poem: '{{ steps.poem.output }}'}\n")
    result = run_dse("run", str(workflow), "--config", str(CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    poem = result.stdout.split("== poem ==", 1)[1].strip()
    assert poem
    streamed, finished = result.stderr.split("[ok] poem", 1)
    assert poem.split()[0] in streamed, "the text appeared on the terminal before the step finished"
    assert "local/smollm2 @ http://127.0.0.1:" in finished and "tokens " in finished
    first = float(finished.split("first token ", 1)[1].split("s", 1)[0])
    seconds = float(finished.split("tokens ", 1)[1].split()[1].rstrip("s"))
    assert 0 < first <= seconds, "the time to the first token, from the stream, within the step's time"


def test_fan_out_spreads_over_both_replicas(write, tmp_path: Path) -> None:
    workflow = write(
        "fan.yaml",
        "name: fan\nsteps:\n  - id: name\n    for_each: [apple, pear, plum, fig, kiwi, lime]\n"
        "    prompt: 'Say the word {{ item }} and nothing else.'\noutputs: {names: '{{ steps.name.output | join(\", \") }}'}\n",
    )
    result = run_dse("run", str(workflow), "--config", str(CONFIG), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    served = document["calls"]["local"]
    assert len(served) == 2 and all(n >= 1 for n in served.values()) and sum(served.values()) == 6
    step = document["steps"][0]
    assert len(step["output"]) == 6 and all(isinstance(o, str) and o for o in step["output"])


def test_explain_workflow_branches_fans_out_and_tolerates_a_failing_check(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "calc.py").write_text((git_repo / "calc.py").read_text() + "x = 1   \n")
    (git_repo / "util.py").write_text("def helper():\n    return 42\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", "add", "."], cwd=git_repo, check=True)
    subprocess.run(["git", "commit", "-qm", "trailing space"], cwd=git_repo, check=True, env=env)
    workflow = str(Path(__file__).resolve().parents[2] / "workflows" / "explain.yaml")
    result = run_dse("run", workflow, "--config", str(CONFIG), "--input", f"target={git_repo}", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    steps = {s["id"]: s for s in document["steps"]}
    assert steps["whitespace"]["status"] == "failed", "git diff --check finds the trailing space"
    assert steps["summary"]["status"] == "done", "continue_on_error lets the run go on"
    assert len(steps["explain"]["output"]) == 2 and steps["explain"]["calls"] == 2
    assert document["status"] == "done" and document["outputs"]["summary"]


def test_embed_uses_the_default_embedding_backend(tmp_path: Path) -> None:
    result = run_dse("embed", "a red apple", "a green pear", "--config", str(CONFIG), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["backend"] == "local_embed" and document["model"] == "smollm2"
    first, second = document["vectors"]
    assert len(first) == len(second) > 100 and first != second
