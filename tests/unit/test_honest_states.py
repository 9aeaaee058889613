"""Honest states: a failure a step was allowed (`continue_on_error`) is tolerated, not fatal, and keeps its evidence."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from dse import console
from dse.cli import main
from dse.config import load_config
from dse.redact import Redactor
from dse.routing import Resolver
from dse.runners import InProcessRunner
from dse.workflow import Scheduler, bind_inputs, build_plan, load_workflow
from dse.workflow.journal import read_run
from dse.workflow.steps.command import KEPT, exit_message

CONFIG = "llm:\n  backend: fake\n  fake: {type: openai, api_key: x, base_url: 'http://127.0.0.1:9/v1', models: {generator: m1}}\n"
PY = sys.executable
# What `git diff --check` does: its findings on stdout, nothing on stderr, exit code 2.
FINDINGS = "import sys; print('calc.py:3: trailing whitespace.'); print('+    return 1   '); sys.exit(2)"
CHECK = (
    "name: honest\nsteps:\n"
    f"  - id: check\n    run: ['{PY}', -c, \"{FINDINGS}\"]\n    continue_on_error: true\n"
    "  - id: after\n    run: [echo, \"{{ steps.check.status }}\"]\n"
    "outputs: {seen: '{{ steps.after.output }}'}\n"
)


def run(write, workflow: str, redactor: Redactor = Redactor()):
    config = load_config(write("config.yaml", CONFIG), environ={})
    plan = build_plan(load_workflow(write("wf.yaml", workflow)), config, Resolver(config))
    scheduler = Scheduler(plan, InProcessRunner(caller=None), redactor=redactor)  # type: ignore[arg-type]
    return asyncio.run(scheduler.run(bind_inputs(plan.workflow, {})))


def test_a_tolerated_failure_is_its_own_state_and_keeps_what_the_command_printed(write) -> None:
    result = run(write, CHECK)
    check = result.steps["check"]
    assert (check.status, check.tolerated) == ("failed", True), "templates still read status 'failed'"
    assert result.status == "done" and result.outputs["seen"] == "failed"
    assert check.error == f"{PY} exited with code 2: stdout: calc.py:3: trailing whitespace. | +    return 1", (
        "the finding on stdout is in the error, said to come from stdout"
    )
    assert check.stdout == "calc.py:3: trailing whitespace.\n+    return 1   \n" and check.stderr is None
    line = console.step_line(check)
    assert line.startswith("[!!] check") and " tolerated " in line
    assert console.run_text(result, {}).startswith("workflow honest: done, 1 failure tolerated (check) in ")


def test_a_fatal_failure_stays_fatal_and_keeps_stderr(write) -> None:
    script = "import sys; print('partial', flush=True); sys.stderr.write('fatal: bad revision' + chr(10)); sys.exit(128)"
    result = run(write, f"name: fatal\nsteps:\n  - id: hard\n    run: ['{PY}', -c, \"{script}\"]\n  - id: after\n    needs: [hard]\n    run: [echo, x]\n")
    hard = result.steps["hard"]
    assert (hard.status, hard.tolerated, result.status) == ("failed", False, "failed")
    assert hard.error.endswith("exited with code 128: fatal: bad revision"), "stderr first, where it says why"
    assert (hard.stdout, hard.stderr) == ("partial\n", "fatal: bad revision\n")
    assert console.step_line(hard).startswith("[XX] hard           failed ")
    assert result.steps["after"].status == "skipped"
    assert "tolerated" not in console.run_text(result, {})


def test_captured_output_is_bounded_with_a_note_of_what_was_cut(write) -> None:
    script = "import sys; print('x' * 10000 + 'END'); sys.stderr.write('e' * 5000 + 'LAST'); sys.exit(1)"
    step = run(write, f"name: big\nsteps:\n  - id: loud\n    run: ['{PY}', -c, \"{script}\"]\n").steps["loud"]
    assert step.stdout is not None and step.stderr is not None
    assert step.stdout == f"[... {10004 - KEPT} characters cut ...]\n" + ("x" * 10000 + "END\n")[-KEPT:]
    assert step.stderr == f"[... {5004 - KEPT} characters cut ...]\n" + ("e" * 5000 + "LAST")[-KEPT:]
    assert len(step.error) < 400, "the error quotes a short excerpt, not the whole output"


def test_a_timed_out_command_keeps_what_it_had_printed(write) -> None:
    script = "import sys, time; print('started', flush=True); time.sleep(60)"
    step = run(write, f"name: slow\nsteps:\n  - id: slow\n    timeout: 2\n    run: ['{PY}', -c, \"{script}\"]\n").steps["slow"]
    assert step.error == "timed out after 2s" and step.stdout == "started\n"


def test_captured_output_is_scrubbed_of_secrets(write) -> None:
    script = "import sys; print('token s3cr3t-value'); sys.stderr.write('auth s3cr3t-value failed'); sys.exit(1)"
    workflow = f"name: leak\nsteps:\n  - id: leak\n    run: ['{PY}', -c, \"{script}\"]\n    continue_on_error: true\n"
    step = run(write, workflow, Redactor(["s3cr3t-value"])).steps["leak"]
    assert (step.stdout, step.stderr) == ("token ***\n", "auth *** failed")
    assert "s3cr3t" not in step.error


def test_a_fan_out_keeps_its_first_failed_items_evidence(write) -> None:
    script = "import sys; print('item', sys.argv[1]); sys.exit(int(sys.argv[1]) % 2)"
    workflow = (
        "name: fan\nsteps:\n  - id: each\n    for_each: ['2', '3', '5']\n    continue_on_error: true\n"
        f"    run: ['{PY}', -c, \"{script}\", '{{{{ item }}}}']\n"
    )
    step = run(write, workflow).steps["each"]
    assert step.tolerated and step.output == ["item 2", None, None]
    assert step.stdout == "item 3\n" and step.error.startswith("2 of 3 items failed; item 1: ")


def test_a_sub_workflow_names_only_its_fatal_failures(write) -> None:
    write(
        "child.yaml",
        "name: child\nsteps:\n"
        f"  - id: soft\n    run: ['{PY}', -c, 'raise SystemExit(1)']\n    continue_on_error: true\n"
        f"  - id: hard\n    run: ['{PY}', -c, 'raise SystemExit(3)']\n",
    )
    step = run(write, "name: parent\nsteps:\n  - id: sub\n    workflow: child.yaml\n").steps["sub"]
    assert step.status == "failed" and "hard:" in step.error and "soft:" not in step.error


def test_the_journal_runs_and_show_carry_the_tolerated_state_and_output(capsys, write, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config, workflow = write("config.yaml", CONFIG), write("wf.yaml", CHECK)
    assert main(["run", str(workflow), "--config", str(config), "--state-dir", str(state)]) == 0
    out, err = capsys.readouterr()
    assert "done, 1 failure tolerated (check)" in out
    assert any(line.startswith("[!!] check") and "tolerated" in line for line in err.splitlines()), err
    (directory,) = (state / "runs").iterdir()
    finished = [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]
    event = next(e for e in finished if e.get("event") == "step_finished" and e.get("id") == "check")
    assert event["tolerated"] is True and event["stdout"] == "calc.py:3: trailing whitespace.\n+    return 1   \n"
    assert read_run(directory).summary()["steps"] == {"tolerated": 1, "done": 1}
    assert main(["show", directory.name, "--state-dir", str(state)]) == 0
    shown = capsys.readouterr().out
    assert "- done, 1 failure tolerated (check)" in shown.splitlines()[0]
    assert "  stdout:\n    calc.py:3: trailing whitespace.\n    +    return 1" in shown, "real lines, not an escaped blob"


@pytest.mark.parametrize(
    ("stdout", "stderr", "expected"),
    [
        ("found\n", "why\n", "git exited with code 2: why"),
        ("a\nb\nc\nd\n", "", "git exited with code 2: stdout: b | c | d"),
        ("", "  \n", "git exited with code 2, printing nothing"),
        ("", "x" * 1000, "git exited with code 2: ..." + "x" * 300),
    ],
)
def test_the_exit_message_quotes_where_the_command_said_why(stdout: str, stderr: str, expected: str) -> None:
    assert exit_message("git", 2, stdout, stderr) == expected
