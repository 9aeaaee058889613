"""The main job, end to end: `dse run workflows/review.yaml` on a real repository and real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import CONFIG, ROOT, llama_server_pids, run_dse

pytestmark = pytest.mark.integration
WORKFLOW = str(ROOT / "workflows" / "review.yaml")


def test_review_prints_a_summary_from_the_real_model(git_repo: Path, tmp_path: Path) -> None:
    before = llama_server_pids()
    result = run_dse("run", WORKFLOW, "--config", str(CONFIG), "--input", f"target={git_repo}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    progress = result.stderr
    for step in ("changes", "diff", "triage", "summary"):
        assert f"] {step}" in progress
    assert "local/smollm2 @ http://127.0.0.1:" in progress and "tokens " in progress
    report = result.stdout.split("== report ==", 1)[1].strip()
    assert len(report) > 20, result.stdout
    assert llama_server_pids() <= before


def test_review_json_is_one_document(git_repo: Path, tmp_path: Path) -> None:
    result = run_dse("run", WORKFLOW, "--config", str(CONFIG), "--input", f"target={git_repo}", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "done"
    steps = {s["id"]: s for s in document["steps"]}
    assert "Add average" in steps["changes"]["output"]
    assert "def average" in steps["diff"]["output"]
    for step_id in ("triage", "summary"):
        assert steps[step_id]["backend"] == "local" and steps[step_id]["completion_tokens"] > 0
    assert document["outputs"]["report"].strip()
    assert sum(document["calls_per_endpoint"]["local"].values()) == sum(
        1 for s in steps.values() if s["kind"] == "llm" and s["status"] == "done"
    )
