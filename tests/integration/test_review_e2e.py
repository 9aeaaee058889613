"""The main job, end to end: `dse run review` in a user's repository, on the real embedded model.

The repository (conftest `review_repo`) has uncommitted changes in four files, one of them
binary, plus a new file, one staged change, and a two-commit branch. Each mode must review
exactly its files, list what it skipped, and get every JSON answer through the backend's
constraint: the number of model calls is one triage, one per file part and one summary, with
no repair calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import llama_server_pids, run_dse

pytestmark = pytest.mark.integration


def review(repo: Path, *inputs: str, json_out: bool = True):
    """`dse run review` from inside the repository, which has no config: the packaged default serves."""
    args = ["run", "review", "-i", "skip_trivial=false", *(a for i in inputs for a in ("-i", i))]
    return run_dse(*args, *(["--json"] if json_out else []), cwd=repo, timeout=600)


def calls(document: dict) -> int:
    return sum(s["calls"] for s in document["steps"] if s["kind"] == "llm")


@pytest.mark.parametrize(
    "mode, rev, files, skipped",
    [
        ("worktree", "", ["app.py", "new.py", "notes.md", "staged.py"], ["logo.png"]),
        ("staged", "", ["staged.py"], []),
        ("range", "main...feature", ["feature.py", "util.py"], []),
    ],
)
def test_each_mode_reviews_its_files_and_says_what_it_skipped(review_repo: Path, mode: str, rev: str, files: list[str], skipped: list[str]) -> None:
    result = review(review_repo, f"mode={mode}", f"rev={rev}")
    assert "using the packaged default" in result.stderr
    assert result.stdout.strip(), f"exit {result.returncode}, nothing on stdout; stderr: {result.stderr[-3000:]}"
    document = json.loads(result.stdout)
    steps = {s["id"]: s for s in document["steps"]}
    problems = {s["id"]: (s["error"], s["truncated"], s["calls"]) for s in document["steps"] if s["error"] or s["truncated"]}
    assert result.returncode == 0 and not problems, problems
    reviewed = steps["files"]["output"]
    assert len(reviewed) == len(steps["changes"]["output"]["files"])
    assert all(r["severity"] in ("none", "minor", "major") and isinstance(r["findings"], list) for r in reviewed)
    assert steps["triage"]["output"]["verdict"] in ("trivial", "substantive")
    assert steps["summary"]["output"]["verdict"] in ("approve", "request changes")
    report = document["outputs"]["report"]
    for path in files:
        assert f"### {path}" in report, report
    changed = len(files) + len(skipped)
    assert f"Reviewed {len(files)} of {changed} files ({len(skipped)} skipped" in report, report
    for path in skipped:
        assert f"{path}, binary file" in report
    parts = len(steps["changes"]["output"]["files"])
    assert calls(document) == 1 + parts + 1, "every JSON answer came through the constraint: no repair calls"
    assert sum(document["calls"]["local"].values()) == calls(document)


def test_the_report_goes_to_a_file_and_the_servers_stop(review_repo: Path) -> None:
    before = llama_server_pids()
    result = review(review_repo, "mode=commit", "rev=HEAD", "output=review.md", json_out=False)
    assert result.returncode == 0, result.stderr
    written = (review_repo / "review.md").read_text()
    assert written.startswith("# Review of commit ") and "### util.py" in written
    assert "Reviewed 1 of 1 files (0 skipped)" in written
    assert "[ok] files" in result.stderr and "1/1 items" in result.stderr
    assert llama_server_pids() <= before
