"""History as a user browses it: `dse show last` and id prefixes, `--full`, `dse runs` filters and limits, `dse runs prune`, `--quiet`.

Journals come from real runs (command steps, or a stub server for a model's prompt and answer)
or are written as `RunJournal` writes them, with ids, ages and states chosen by the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import CONFIG
from hypothesis import given, settings
from hypothesis import strategies as st
from stubs import StubServer, openai_chat

from dse.cli import main
from dse.errors import InputError
from dse.workflow import journal as journal_module
from dse.workflow.journal import RUNS, RunJournal, read_run, resolve_run


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def recorded(state: Path, run_id: str, *, workflow: str = "alpha", status: str = "done", created: float = 1.0e9, age: float = 0.0) -> Path:
    """A finished (or, with status "killed", unfinished) run as the journal records it, last written `age` seconds ago."""
    directory = state / RUNS / run_id
    directory.mkdir(parents=True)
    meta = {"id": run_id, "workflow": f"/w/{workflow}.yaml", "workflow_name": workflow, "config": "/c.yaml", "inputs": {}, "created": created}
    (directory / "run.json").write_text(json.dumps(meta))
    events = [{"event": "run_started", "at": created}, {"event": "step_finished", "at": created + 1, "id": "a", "status": "done"}]
    if status == "interrupted":
        events.append({"event": "run_interrupted", "at": created + 2})
    elif status != "killed":
        events.append({"event": "run_finished", "at": created + 2, "status": status, "outputs": {}})
    (directory / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    written = time.time() - age
    for name in ("run.json", "events.jsonl"):
        os.utime(directory / name, (written, written))
    return directory


def real_run(capsys, state: Path, workflow: Path, *extra: str) -> tuple[int, dict]:
    code, out, err = cli(capsys, "run", str(workflow), "--config", str(CONFIG), "--state-dir", str(state), "--json", *extra)
    return code, json.loads(out)


# --- which run: last, a prefix, a typo ---------------------------------------------------------

IDS = st.lists(st.from_regex(r"2026112[89]-0[0-9]{5}-[0-9a-f]{4}", fullmatch=True), max_size=8, unique=True)


@settings(max_examples=60, deadline=None)
@given(ids=IDS, data=st.data())
def test_a_reference_names_the_one_run_it_is_a_prefix_of_else_says_which_or_what_is_near(ids: list[str], data: st.DataObject) -> None:
    prefixes = st.sampled_from(ids).flatmap(lambda i: st.integers(1, len(i)).map(lambda n: i[:n])) if ids else st.nothing()
    ref = data.draw(st.one_of(prefixes, st.just("last"), st.text("0126-89abf", max_size=21)))
    with tempfile.TemporaryDirectory() as root:
        state = Path(root)
        for run_id in ids:
            (state / RUNS / run_id).mkdir(parents=True)
            (state / RUNS / run_id / "run.json").write_text("{}")
        matches = [run_id for run_id in ids if ref and run_id.startswith(ref)]
        if ref == "last" and ids:
            assert resolve_run(state, ref) == max(ids)
        elif ref in ids or len(matches) == 1:
            assert resolve_run(state, ref) == (ref if ref in ids else matches[0])
        else:
            with pytest.raises(InputError) as raised:
                resolve_run(state, ref)
            message = str(raised.value)
            if matches:
                assert f"{len(matches)} runs start with it" in message and all(m in message for m in matches)
            else:
                assert message.startswith(f"no run {ref!r}") or (ref == "last" and "no runs yet" in message)


def test_show_and_resume_take_last_or_a_unique_prefix_and_refuse_the_ambiguous_and_the_unknown(capsys, write, tmp_path: Path) -> None:
    state = tmp_path / "state"
    marker = tmp_path / "fixed"
    workflow = write("wf.yaml", f"name: flaky\nsteps:\n  - id: a\n    run: [test, -e, '{marker}']\n")
    code, failed = real_run(capsys, state, workflow)
    assert code == 1 and failed["status"] == "failed"
    code, other = real_run(capsys, state, write("ok.yaml", "name: ok\nsteps:\n  - id: a\n    run: [echo, hi]\n"))
    first, second = failed["id"], other["id"]

    code, out, _ = cli(capsys, "show", "--state-dir", str(state))
    assert code == 0 and out.startswith(f"run {second}: ok"), "no RUN is the newest"
    code, out, _ = cli(capsys, "show", "last", "--state-dir", str(state))
    assert code == 0 and out.startswith(f"run {second}: ok")
    unique = next(first[:n] for n in range(1, len(first) + 1) if not second.startswith(first[:n]))
    code, out, _ = cli(capsys, "show", unique, "--state-dir", str(state))
    assert code == 0 and out.startswith(f"run {first}: flaky")

    common = os.path.commonprefix([first, second])
    code, _, err = cli(capsys, "show", common, "--state-dir", str(state))
    assert code == 2 and "is ambiguous: 2 runs start with it" in err and first in err and second in err and "Traceback" not in err
    typo = first[:-1] + ("0" if first[-1] != "0" else "1")
    code, _, err = cli(capsys, "show", typo, "--state-dir", str(state))
    assert code == 2 and f"no run {typo!r}" in err and first in err.split("closest: ", 1)[1]

    marker.write_text("")
    code, out, err = cli(capsys, "run", "--resume", unique, "--config", str(CONFIG), "--state-dir", str(state), "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == first and read_run(state / RUNS / first).status == "done"
    code, out, _ = cli(capsys, "run", "--resume", "last", "--config", str(CONFIG), "--state-dir", str(state), "--json")
    assert code == 0 and json.loads(out)["id"] == second
    code, _, err = cli(capsys, "run", "--resume", common, "--config", str(CONFIG), "--state-dir", str(state))
    assert code == 2 and "is ambiguous" in err


def test_last_is_the_run_started_last_even_within_one_second(capsys, tmp_path: Path) -> None:
    """Ids sort by start time only to the second; runs started in the same second go by run.json's `created`."""
    state = tmp_path / "state"
    recorded(state, "20261128-100000-0000", created=2000.5)
    recorded(state, "20261128-100000-ffff", created=2000.1)
    recorded(state, "20261128-095959-ffff", created=1999.9)
    assert resolve_run(state, "last") == "20261128-100000-0000"
    code, out, _ = cli(capsys, "runs", "--state-dir", str(state))
    assert listed_ids(out) == ["20261128-100000-0000", "20261128-100000-ffff", "20261128-095959-ffff"]


def test_a_run_still_running_cannot_be_resumed_by_a_second_process(capsys, write, tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, done = real_run(capsys, state, write("ok.yaml", "name: ok\nsteps:\n  - id: a\n    run: [echo, hi]\n"))
    held = RunJournal.reopen(state, done["id"])
    try:
        code, _, err = cli(capsys, "run", "--resume", "last", "--config", str(CONFIG), "--state-dir", str(state))
        assert code == 2 and "is still running" in err
    finally:
        held.close()
    code, _, err = cli(capsys, "run", "--resume", "last", "--config", str(CONFIG), "--state-dir", str(state))
    assert code == 0, err


# --- dse show --full ----------------------------------------------------------------------------


def test_show_prints_prompts_and_outputs_with_real_newlines_cut_short_unless_full(capsys, write, tmp_path: Path) -> None:
    prompt = "\n".join(f"prompt line {i}" for i in range(40))
    answer = "\n".join(f"answer line {i}" for i in range(40))
    with StubServer() as server:
        server.route("POST", "/v1/chat/completions", openai_chat(answer))
        config = write(
            "config.yaml",
            f"llm:\n  backend: s\n  s: {{type: openai, api_key: sk-test, base_url: '{server.url}/v1', models: {{generator: m}}}}\n",
        )
        workflow = write(
            "wf.yaml",
            "name: long\ninputs: {text: {type: string}}\nsteps:\n  - id: ask\n    prompt: '{{ inputs.text }}'\n"
            "  - id: short\n    run: [echo, brief]\noutputs: {answer: '{{ steps.ask.output }}'}\n",
        )
        state = tmp_path / "state"
        code, out, err = cli(capsys, "run", str(workflow), "--config", str(config), "--state-dir", str(state), "-i", f"text={prompt}", "--json")
    assert code == 0, err

    code, short, _ = cli(capsys, "show", "last", "--state-dir", str(state))
    lines = short.splitlines()
    assert code == 0 and "\\n" not in short.split("\nspent: ", 1)[1], "newlines are newlines, not `\\n`"
    assert [line for line in lines if line.startswith("inputs: ")][0].endswith(f"... ({len(json.dumps({'text': prompt}))} characters)")
    assert "  prompt:" in lines and "    prompt line 0" in lines and "    prompt line 7" in lines
    assert "  output:" in lines and "    answer line 0" in lines and "  output: brief" in lines, "a one-line output stays on its line"
    assert "    prompt line 39" not in lines and "    answer line 39" not in lines
    notes = [line for line in lines if "--full shows all" in line]
    assert len(notes) == 2 and all("more characters in 32 more lines not shown" in note for note in notes)
    assert short.rstrip().endswith(f"== answer ==\n{answer}"), "the run's own outputs are never cut"

    code, full, _ = cli(capsys, "show", "last", "--full", "--state-dir", str(state))
    lines = full.splitlines()
    assert code == 0 and "--full shows all" not in full
    assert [f"    prompt line {i}" for i in range(40)] == [line for line in lines if line.startswith("    prompt line")]
    assert [f"    answer line {i}" for i in range(40)] == [line for line in lines if line.startswith("    answer line")]


# --- dse runs -----------------------------------------------------------------------------------


def listed_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:] if line[:1].isdigit()]


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """25 runs, newest first: workflows alpha and beta in turn, done, failed, interrupted and killed in turn, an hour apart."""
    state = tmp_path / "state"
    states = ["done", "failed", "interrupted", "killed"]
    ids = []
    for age in range(25):
        run_id = f"20261128-{23 - age // 60:02d}{59 - age % 60:02d}00-{age:04x}"
        recorded(state, run_id, workflow="alpha" if age % 2 == 0 else "beta", status=states[age % 4], created=1.8e9 - age * 3600)
        ids.append(run_id)
    return state, ids


def test_runs_lists_under_a_header_the_newest_twenty_unless_told(capsys, history) -> None:
    state, ids = history
    code, out, _ = cli(capsys, "runs", "--state-dir", str(state))
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == ["RUN", "WORKFLOW", "STATUS", "STARTED", "TIME", "TOKENS", "COST", "STEPS"]
    assert listed_ids(out) == ids[:20] and rows[-1].startswith("(the newest 20 shown") and "--limit 0" in rows[-1]
    code, out, _ = cli(capsys, "runs", "--limit", "3", "--state-dir", str(state))
    assert listed_ids(out) == ids[:3]
    code, out, _ = cli(capsys, "runs", "--limit", "0", "--state-dir", str(state))
    assert listed_ids(out) == ids and "newest" not in out
    code, out, _ = cli(capsys, "runs", "--limit", "0", "--json", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)] == ids
    with pytest.raises(SystemExit) as refused:
        main(["runs", "--limit", "-1", "--state-dir", str(state)])
    assert refused.value.code == 2 and "--limit: must be 0 or more, got -1" in capsys.readouterr().err


def test_runs_filters_by_status_workflow_and_start(capsys, history) -> None:
    state, ids = history
    code, out, _ = cli(capsys, "runs", "--status", "failed", "--limit", "0", "--json", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)] == ids[1::4] and {r["status"] for r in json.loads(out)} == {"failed"}
    code, out, _ = cli(capsys, "runs", "--status", "killed", "--limit", "2", "--json", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)] == ids[3::4][:2], "the limit counts runs that match"
    code, out, _ = cli(capsys, "runs", "--workflow", "beta", "--limit", "0", "--json", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)] == ids[1::2]
    code, out, _ = cli(capsys, "runs", "--workflow", "alpha.yaml", "--status", "done", "--limit", "0", "--json", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)] == ids[0::4]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1.8e9 - 4.5 * 3600))
    code, out, _ = cli(capsys, "runs", "--since", since, "--json", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)] == ids[:5]
    code, out, _ = cli(capsys, "runs", "--workflow", "gamma", "--state-dir", str(state))
    assert code == 0 and out.strip() == "no runs"
    code, _, err = cli(capsys, "runs", "--status", "finished", "--state-dir", str(state))
    assert code == 2 and "--status 'finished': expected one of done, failed" in err
    code, _, err = cli(capsys, "runs", "--since", "yesterday", "--state-dir", str(state))
    assert code == 2 and "--since 'yesterday'" in err


def test_runs_replays_only_the_journals_it_lists(capsys, history, monkeypatch) -> None:
    state, ids = history
    replayed: list[str] = []
    real = journal_module.read_run

    def counting(directory: Path, meta: dict | None = None):
        replayed.append(directory.name)
        return real(directory, meta)

    monkeypatch.setattr(journal_module, "read_run", counting)
    cli(capsys, "runs", "--limit", "3", "--state-dir", str(state))
    assert replayed == ids[:3]
    replayed.clear()
    cli(capsys, "runs", "--workflow", "beta", "--limit", "2", "--state-dir", str(state))
    assert replayed == [ids[1], ids[3]], "run.json rules out the other workflow's runs before their events are read"


# --- dse runs prune -----------------------------------------------------------------------------


@pytest.fixture
def aged(tmp_path: Path) -> tuple[Path, list[str]]:
    """Six finished runs, newest first, last written 0 to 5 days ago."""
    state = tmp_path / "state"
    ids = [f"20261128-0{9 - age}0000-beef" for age in range(6)]
    for age, run_id in enumerate(ids):
        recorded(state, run_id, created=1.8e9 - age * 86400, age=age * 86400 + 60)
    return state, ids


def remaining(state: Path) -> list[str]:
    return sorted((d.name for d in (state / RUNS).iterdir()), reverse=True)


def test_prune_keep_removes_all_but_the_newest_and_says_what_it_removed(capsys, aged) -> None:
    state, ids = aged
    code, out, _ = cli(capsys, "runs", "prune", "--keep", "2", "--dry-run", "--state-dir", str(state))
    assert code == 0 and remaining(state) == ids, "a dry run removes nothing"
    assert [line.split()[2] for line in out.splitlines()[:-1]] == ids[2:] and out.startswith("would remove")
    assert out.splitlines()[-1].startswith("would remove 4 runs") and "kept 2" in out
    code, out, _ = cli(capsys, "runs", "prune", "--keep", "4", "--json", "--state-dir", str(state))
    document = json.loads(out)
    assert code == 0 and remaining(state) == ids[:4]
    assert [r["id"] for r in document["removed"]] == ids[4:] and document["kept"] == 4 and document["dry_run"] is False
    assert document["bytes"] == sum(r["bytes"] for r in document["removed"]) > 0 and document["running"] == []
    code, out, _ = cli(capsys, "runs", "prune", "--keep", "1", "--state-dir", str(state))
    assert remaining(state) == ids[:1] and [line.split()[1] for line in out.splitlines()[:-1]] == ids[1:4]


def test_prune_older_than_takes_a_span_or_a_date_and_with_keep_removes_only_what_both_select(capsys, aged, tmp_path: Path) -> None:
    state, ids = aged
    code, out, _ = cli(capsys, "runs", "prune", "--keep", "2", "--older-than", "3d", "--json", "--dry-run", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)["removed"]] == ids[3:], "older than 3 days and not among the newest 2"
    code, out, _ = cli(capsys, "runs", "prune", "--keep", "4", "--older-than", "1d", "--json", "--dry-run", "--state-dir", str(state))
    assert [r["id"] for r in json.loads(out)["removed"]] == ids[4:], "the newest 4 stay whatever their age"
    date = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2.5 * 86400))
    code, out, _ = cli(capsys, "runs", "prune", "--older-than", date, "--state-dir", str(state))
    assert code == 0 and remaining(state) == ids[:3]
    code, out, _ = cli(capsys, "runs", "prune", "--older-than", "12h", "--state-dir", str(state))
    assert remaining(state) == ids[:1]


def test_prune_never_removes_a_run_whose_process_lives_and_removes_it_once_killed(capsys, write, tmp_path: Path) -> None:
    """A real process holds a run open; `dse runs` says running, prune keeps it; after SIGKILL it is `killed` and prunable."""
    state = tmp_path / "state"
    workflow = write("wf.yaml", "name: held\nsteps: []\n")
    script = (
        "import sys\nfrom pathlib import Path\nfrom dse.workflow.journal import RunJournal\n"
        "j = RunJournal.create(Path(sys.argv[1]), workflow=sys.argv[2], workflow_name='held', config=sys.argv[2], inputs={})\n"
        "j.event('run_started')\nprint(j.run_id, flush=True)\nsys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(state), str(workflow)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        run_id = holder.stdout.readline().strip()
        code, out, _ = cli(capsys, "runs", "--status", "running", "--json", "--state-dir", str(state))
        assert [r["id"] for r in json.loads(out)] == [run_id]
        code, out, _ = cli(capsys, "runs", "prune", "--keep", "0", "--older-than", "0s", "--json", "--state-dir", str(state))
        assert json.loads(out)["running"] == [run_id] and json.loads(out)["removed"] == [] and remaining(state) == [run_id]
        code, out, _ = cli(capsys, "runs", "prune", "--keep", "0", "--state-dir", str(state))
        assert out.strip().endswith(f"still running: {run_id}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, out, _ = cli(capsys, "runs", "--json", "--state-dir", str(state))
    assert json.loads(out)[0]["status"] == "killed"
    code, out, _ = cli(capsys, "runs", "prune", "--keep", "0", "--state-dir", str(state))
    assert code == 0 and out.startswith(f"removed {run_id}") and remaining(state) == []


def test_prune_and_list_refuse_each_others_options(capsys, aged) -> None:
    state, ids = aged
    for args, message in [
        (["runs", "prune"], "needs --keep N, --older-than SPAN|DATE, or both"),
        (["runs", "prune", "--keep", "1", "--status", "done"], "--status is for listing runs"),
        (["runs", "--keep", "1"], "--keep is an option of `dse runs prune`"),
        (["runs", "--dry-run"], "--dry-run is an option of `dse runs prune`"),
        (["runs", "prune", "--older-than", "soon"], "--older-than 'soon': expected a date"),
    ]:
        code, _, err = cli(capsys, *args, "--state-dir", str(state))
        assert code == 2 and message in err, args
    assert remaining(state) == ids


# --- dse run --quiet ----------------------------------------------------------------------------


def test_quiet_prints_one_output_as_it_is_and_several_each_under_its_name(capsys, write, tmp_path: Path) -> None:
    steps = "steps:\n  - id: a\n    run: [printf, 'two\\nlines']\n  - id: b\n    run: [echo, other]\n"
    one = write("one.yaml", f"name: one\n{steps}outputs: {{text: '{{{{ steps.a.output }}}}'}}\n")
    several = write("two.yaml", f"name: two\n{steps}outputs: {{text: '{{{{ steps.a.output }}}}', more: '{{{{ steps.b.output }}}}'}}\n")
    state = str(tmp_path / "state")
    code, out, _ = cli(capsys, "run", str(one), "--config", str(CONFIG), "--state-dir", state, "--quiet")
    assert code == 0 and out == "two\nlines\n"
    code, out, _ = cli(capsys, "run", str(several), "--config", str(CONFIG), "--state-dir", state, "-q")
    assert code == 0 and out == "== text ==\ntwo\nlines\n== more ==\nother\n"
