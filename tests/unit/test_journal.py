"""The run journal: durable events, torn lines tolerated, exact reuse of finished steps on resume."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.backends import ChatResponse, Message, Usage
from dse.config import load_config
from dse.errors import BackendUnavailable
from dse.routing import Resolver, Target
from dse.runners import InProcessRunner
from dse.workflow import Scheduler, bind_inputs, build_plan, load_workflow
from dse.workflow.results import StepResult
from dse.workflow.journal import RunJournal, list_runs, read_run

CONFIG = "llm:\n  backend: fake\n  fake: {type: openai, api_key: x, base_url: 'http://127.0.0.1:9/v1'}\n"


class Model:
    def __init__(self, fail_on: str | None = None, delays: dict[str, float] | None = None) -> None:
        self.fail_on, self.delays, self.prompts = fail_on, delays or {}, []

    async def chat(self, target: Target, messages: list[Message], retry=None) -> ChatResponse:
        prompt = messages[-1].content
        self.prompts.append(prompt)
        await asyncio.sleep(self.delays.get(prompt, 0))
        if prompt == self.fail_on:
            raise BackendUnavailable("server down")
        return ChatResponse(f"<{prompt}>", "m", "fake", "http://stub", Usage(2, 3))


def setup(tmp_path: Path, workflow_text: str):
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "wf.yaml").write_text(workflow_text)
    config = load_config(tmp_path / "config.yaml", environ={})
    workflow = load_workflow(tmp_path / "wf.yaml")
    return workflow, build_plan(workflow, config, Resolver(config))


WORKFLOW = (
    "name: chain\nsteps:\n  - id: a\n    prompt: one\n  - id: b\n    prompt: 'two {{ steps.a.output }}'\n"
    "  - id: c\n    prompt: 'three {{ steps.b.output }}'\n  - id: side\n    prompt: side\n"
    "outputs: {last: '{{ steps.c.output }}'}\n"
)


def test_a_failed_run_resumes_with_exactly_the_unfinished_work(tmp_path: Path) -> None:
    workflow, plan = setup(tmp_path, WORKFLOW)
    state = tmp_path / ".dse"
    journal = RunJournal.create(state, workflow=workflow.path, workflow_name="chain", config=str(tmp_path / "config.yaml"), inputs={})
    first = Model(fail_on="two <one>")
    result = asyncio.run(Scheduler(plan, InProcessRunner(first), journal=journal).run({}))
    journal.close()
    assert result.status == "failed" and result.steps["c"].error == "dependency failed"

    record = read_run(journal.directory)
    assert record.status == "failed"
    assert {k: v["status"] for k, v in record.steps.items()} == {"a": "done", "b": "failed", "c": "skipped", "side": "done"}
    assert record.steps["b"]["error"] == "server down" and record.steps["a"]["prompt"] == "one"

    reuse = {k: StepResult.from_record(v) for k, v in record.steps.items() if v["status"] == "done"}
    again = Model()
    journal = RunJournal.reopen(state, journal.run_id)
    resumed = asyncio.run(Scheduler(plan, InProcessRunner(again), journal=journal, reuse=reuse).run({}))
    journal.close()
    assert again.prompts == ["two <one>", "three <two <one>>"], "only the failed step and its dependant run again"
    assert resumed.status == "done" and resumed.outputs == {"last": "<three <two <one>>>"}
    assert resumed.steps["a"].reused and resumed.steps["side"].reused
    assert read_run(journal.directory).status == "done"


def test_events_are_json_lines_and_a_torn_line_is_ignored(tmp_path: Path) -> None:
    workflow, plan = setup(tmp_path, WORKFLOW)
    journal = RunJournal.create(tmp_path / ".dse", workflow=workflow.path, workflow_name="chain", config="c", inputs={"x": 1})
    asyncio.run(Scheduler(plan, InProcessRunner(Model()), journal=journal).run({}))
    journal.close()
    path = journal.directory / "events.jsonl"
    lines = path.read_text().splitlines()
    kinds = [json.loads(line)["event"] for line in lines]
    assert kinds.count("step_finished") == 4 and kinds[-1] == "run_finished"
    with open(path, "a") as handle:
        handle.write('{"event": "step_fini')
    record = read_run(journal.directory)
    assert record.status == "done" and record.meta["inputs"] == {"x": 1}
    assert [r.id for r in list_runs(tmp_path / ".dse")] == [journal.run_id]


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], list[float]]:
    n = draw(st.integers(2, 18))
    edges = [(a, b) for b in range(n) for a in range(b) if draw(st.booleans()) and draw(st.booleans())]
    delays = [draw(st.sampled_from([0, 0.001, 0.003])) for _ in range(n)]
    return n, edges, delays


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dag=dags(), parallel=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_every_step_starts_after_all_its_dependencies_finished(tmp_path: Path, dag, parallel: int, seed: int) -> None:
    n, edges, delays = dag
    order = list(range(n))
    random.Random(seed).shuffle(order)
    lines = []
    for i in order:
        needs = [f"s{a}" for a, b in edges if b == i]
        lines.append(f"  - id: s{i}\n    prompt: p{i}\n" + (f"    needs: [{', '.join(needs)}]\n" if needs else ""))
    workflow, plan = setup(tmp_path, f"name: dag\nmax_parallel: {parallel}\nsteps:\n" + "".join(lines))
    model = Model(delays={f"p{i}": d for i, d in enumerate(delays)})
    result = asyncio.run(Scheduler(plan, InProcessRunner(model)).run(bind_inputs(workflow, {})))
    assert result.status == "done"
    for a, b in edges:
        assert result.steps[f"s{a}"].finished_at <= result.steps[f"s{b}"].started_at


SECRET = "sk-live-0123456789abcdef"
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.sampled_from([SECRET, f"x{SECRET}y", "sk-live", '"\\\n\u00e9']),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.just(SECRET), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(["output", "error", "prompt", "id"]), _json_values, max_size=4))
def test_a_journal_line_is_the_scrubbed_record_whichever_way_it_was_written(tmp_path: Path, fields) -> None:
    """Lines without a secret are written as serialised; others are scrubbed value by value: both must give the same line."""
    from dse.redact import MASK, Redactor

    directory = tmp_path / "run"
    directory.mkdir(exist_ok=True)
    (directory / "events.jsonl").write_text("")
    redactor = Redactor([SECRET])
    journal = RunJournal(directory, redactor)
    journal.event("item_finished", **fields)
    journal.close()
    line = (directory / "events.jsonl").read_text().split("\n")[-2]  # U+0085, U+2028 are data inside a line
    written = json.loads(line)
    expected = redactor.value(json.loads(json.dumps({"event": "item_finished", **fields}, default=str)))
    assert {k: v for k, v in written.items() if k != "at"} == expected
    assert SECRET not in line and (MASK in line) == (SECRET in json.dumps(fields, ensure_ascii=False))


def test_item_events_reach_the_os_at_once_even_when_their_fsync_waits(tmp_path: Path, monkeypatch) -> None:
    """A killed process loses no finished item: every event is flushed; only the fsync of item events is batched."""
    import os

    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    directory = tmp_path / "run"
    directory.mkdir()
    journal = RunJournal(directory, Redactor_())
    journal.event("step_started", id="each")
    before = len(synced)
    for index in range(50):
        journal.event("item_finished", id="each", index=index)
        assert (directory / "events.jsonl").read_text().count("\n") == index + 2, "on disk before the next item"
    assert len(synced) - before <= 2, "not one fsync per item"
    journal.event("step_finished", id="each")
    assert len(synced) > before, "the step's own event syncs what its items wrote"
    journal.close()


def Redactor_():
    from dse.redact import Redactor

    return Redactor()
