"""The packaged review workflow's logic against a stub model: triage as a gate, the report's counts, the saved file.

The stub answers by what each prompt asks (triage, one file, the summary), so the workflow's
branching is tested without a real model; the real model is in tests/integration/test_review_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dse import defaults
from stubs import Received, Reply, StubServer, openai_chat


def answer(verdict: str):
    def reply(request: Received) -> Reply:
        prompt = request.json["messages"][-1]["content"]
        if "trivial (typos" in prompt:
            text = {"verdict": verdict}
        elif "List at most three" in prompt:
            text = {"severity": "minor", "findings": [f"look again at {prompt.split('File: ')[1].split()[0]}"]}
        else:
            text = {"verdict": "request changes", "summary": "Two small things."}
        return openai_chat(json.dumps(text))

    return reply


@pytest.fixture
def config(stub: StubServer, tmp_path: Path) -> Path:
    tools = yaml.safe_load(defaults.config_path().read_text())["tools"]
    llm = {"backend": "s", "s": {"type": "vllm", "base_url": f"{stub.url}/v1", "models": {"triage": "m", "generator": "m", "evaluator": "m"}}}
    path = tmp_path / "review-config.yaml"
    path.write_text(yaml.safe_dump({"llm": llm, "tools": tools}))
    return path


def review(repo: Path, config: Path, *inputs: str) -> dict:
    args = [a for i in inputs for a in ("-i", i)]
    result = subprocess.run(
        [sys.executable, "-m", "dse", "run", "review", "--config", str(config), "--json", *args], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_changed_file_is_reviewed_and_counted(stub: StubServer, config: Path, review_repo: Path) -> None:
    stub.route("POST", "/v1/chat/completions", answer("trivial"))
    document = review(review_repo, config, "output=reports/review.md")
    report = document["outputs"]["report"]
    assert "Triage: trivial. Reviewed 4 of 5 files (1 skipped: logo.png, binary file)" in report
    for path in ("app.py", "new.py", "notes.md", "staged.py"):
        assert f"### {path}: minor\n- look again at {path}" in report
    assert "**Verdict: request changes.** Two small things." in report
    assert (review_repo / "reports" / "review.md").read_text().strip() == report.strip()
    assert len(stub.calls("POST", "/v1/chat/completions")) == 1 + 4 + 1
    sent = stub.calls("POST", "/v1/chat/completions")[1].json
    assert sent["response_format"]["type"] == "json_schema", "the findings' schema travels as a constraint"


def test_skip_trivial_lets_triage_list_the_files_without_a_call_each(stub: StubServer, config: Path, review_repo: Path) -> None:
    stub.route("POST", "/v1/chat/completions", answer("trivial"))
    report = review(review_repo, config, "skip_trivial=true", "mode=staged")["outputs"]["report"]
    assert "**Not reviewed file by file:** triage found the change trivial." in report
    assert "Reviewed 0 of 1 files (0 skipped)" in report and "## Files\n- staged.py" in report
    assert len(stub.calls("POST", "/v1/chat/completions")) == 1, "triage only"


def test_a_clean_tree_reviews_the_last_commit(stub: StubServer, config: Path, review_repo: Path) -> None:
    subprocess.run(["git", "-C", str(review_repo), "stash", "-q", "--include-untracked"], check=True)
    stub.route("POST", "/v1/chat/completions", answer("substantive"))
    document = review(review_repo, config, "skip_trivial=true")
    report = document["outputs"]["report"]
    assert report.startswith("# Review of commit ") and "### util.py: minor" in report
    prompt = stub.calls("POST", "/v1/chat/completions")[1].json["messages"][-1]["content"]
    assert "The change: change util" in prompt, "the commit message is the context of each file's review"


def test_a_file_that_cannot_be_reviewed_is_named_and_the_others_are_reviewed(stub: StubServer, config: Path, review_repo: Path) -> None:
    from stubs import openai_error

    fine = answer("substantive")

    def reply(request: Received) -> Reply:
        if "File: notes.md" in request.json["messages"][-1]["content"]:
            return openai_error(400, "this file upsets the model")
        return fine(request)

    stub.route("POST", "/v1/chat/completions", reply)
    args = ["run", "review", "--config", str(config), "--json"]
    result = subprocess.run([sys.executable, "-m", "dse", *args], cwd=review_repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, "a tolerated failure: the review goes on, and says what it could not do"
    document = json.loads(result.stdout)
    steps = {s["id"]: s for s in document["steps"]}
    assert steps["files"]["status"] == "failed"
    text = document["outputs"]["report"]
    assert "Reviewed 3 of 5 files (1 skipped: logo.png, binary file; could not review: notes.md)" in text, text
    assert "### notes.md: could not be reviewed\n- 1 of 4 items failed" in text
    assert "### app.py: minor" in text and steps["summary"]["status"] == "done"
