"""Workflow loading, the DAG, sandboxed templating and the scheduler, against a recording model."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from dse.backends import ChatResponse, Message, Usage
from dse.config import load_config
from dse.errors import InputError, InputErrors
from dse.routing import Resolver, Target
from dse.runners import InProcessRunner
from dse.workflow import Scheduler, bind_inputs, build_plan, load_workflow
from dse.workflow.templating import render

CONFIG = """\
llm:
  backend: fake
  fake: {type: openai, api_key: x, base_url: "http://127.0.0.1:9/v1", models: {generator: m1}}
tools:
  echo:
    system: "You repeat."
    prompt: "Repeat: {{ text }}"
"""


class RecordingModel:
    """Answers every call with a function of its prompt, and records when each call ran.

    `together=N` makes each call whose prompt `meets` wait until N such calls are in flight at
    once: calls that can run concurrently meet, calls run one after another never do (and fail
    after a generous timeout). That tests concurrency by what happens, not by the clock.
    `peak` is the most calls that were ever in flight at the same time.
    """

    def __init__(
        self,
        answer=lambda prompt: f"answer to {prompt}",
        delay: float = 0.0,
        together: int = 1,
        meets=lambda prompt: True,
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.together = together
        self.meets = meets
        self.calls: list[tuple[Target, list[Message], float, float]] = []
        self.in_flight = 0
        self.peak = 0
        self.arrived = 0

    async def chat(self, target: Target, messages: list[Message], retry=None, json_output=None) -> ChatResponse:
        started = time.monotonic()
        prompt = messages[-1].content
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.together > 1 and self.meets(prompt):
                # Calls meet in groups of `together`, in arrival order: the group is complete
                # once the arrivals reach the next multiple of `together`.
                self.arrived += 1
                complete = -(-self.arrived // self.together) * self.together
                try:
                    async with asyncio.timeout(30):
                        while self.arrived < complete:
                            await asyncio.sleep(0.001)
                except TimeoutError:
                    raise AssertionError(f"{prompt!r} waited 30 s for {self.together} calls in flight at once") from None
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        text = self.answer(prompt)
        self.calls.append((target, messages, started, time.monotonic()))
        return ChatResponse(text, target.model, target.backend, "http://stub", Usage(3, 5), 0.01)


def plan_for(write, workflow_text: str):
    config = load_config(write("config.yaml", CONFIG), environ={})
    workflow = load_workflow(write("wf.yaml", workflow_text))
    return build_plan(workflow, config, Resolver(config))


def run(plan, model, inputs=None, **kw):
    return asyncio.run(Scheduler(plan, InProcessRunner(model), **kw).run(bind_inputs(plan.workflow, inputs or {})))


def test_template_references_become_dependencies(write) -> None:
    plan = plan_for(
        write,
        "name: t\nsteps:\n"
        "  - id: b\n    prompt: 'use {{ steps.a.output }}'\n"
        "  - id: a\n    run: [echo, hi]\n"
        "  - id: c\n    needs: [a]\n    when: \"steps.b.output != ''\"\n    run: [echo, done]\n",
    )
    assert sorted(plan.graph.edges) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert plan.order == ["a", "b", "c"]


def test_unknown_step_reference_is_located_with_suggestion(write) -> None:
    with pytest.raises(InputError) as info:
        plan_for(write, "name: t\nsteps:\n  - id: alpha\n    run: [echo]\n  - id: beta\n    prompt: '{{ steps.alpah.output }}'\n")
    assert info.value.location is not None and info.value.location.line == 5
    assert "did you mean 'alpha'?" in str(info.value)


def test_all_plan_errors_are_reported_together(write) -> None:
    with pytest.raises(InputErrors) as info:
        plan_for(write, "name: t\nsteps:\n  - id: a\n    tool: nope\n  - id: b\n    tool: echo\n    backend: nowhere\n")
    assert [e.location.line for e in info.value.errors] == [3, 5]


def test_a_model_output_is_never_rendered_again(write) -> None:
    plan = plan_for(
        write,
        "name: t\nsteps:\n  - id: a\n    prompt: first\n  - id: b\n    prompt: 'got {{ steps.a.output }}'\n"
        "outputs:\n  final: '{{ steps.b.output }}'\n",
    )
    model = RecordingModel(lambda prompt: "{{ 7*7 }}" if prompt == "first" else prompt)
    result = run(plan, model)
    assert result.outputs["final"] == "got {{ 7*7 }}"
    assert model.calls[1][1][-1].content == "got {{ 7*7 }}"


def test_sandbox_blocks_unsafe_attribute_access() -> None:
    with pytest.raises(InputError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_template_typos_are_found_before_running(write) -> None:
    with pytest.raises(InputError, match="undeclared input 'traget'") as info:
        plan_for(write, "name: t\ninputs: {target: {type: string, default: x}}\nsteps:\n  - id: a\n    prompt: '{{ inputs.traget }}'\n")
    assert info.value.location.line == 5 and info.value.location.key == "steps[0].prompt"
    assert "did you mean 'target'?" in str(info.value)
    with pytest.raises(InputError, match="unknown name 'stpes'"):
        plan_for(write, "name: t\nsteps:\n  - id: a\n    prompt: '{{ stpes.x }}'\n")
    with pytest.raises(InputError, match="template syntax error"):
        plan_for(write, "name: t\nsteps:\n  - id: a\n    prompt: '{{ oops '\n")
    with pytest.raises(InputError, match="env.HOME, which the workflow does not declare"):
        plan_for(write, "name: t\nsteps:\n  - id: a\n    run: [echo, '{{ env.HOME }}']\n")


def test_strict_undefined_still_fails_a_step_at_run_time(write) -> None:
    plan = plan_for(write, "name: t\nsteps:\n  - id: a\n    run: [echo, x]\n  - id: b\n    prompt: '{{ steps.a.output.missing }}'\n")
    result = run(plan, RecordingModel())
    assert result.steps["b"].status == "failed" and "missing" in result.steps["b"].error


def test_tool_prompt_with_inputs_and_system(write) -> None:
    plan = plan_for(write, "name: t\nsteps:\n  - id: a\n    tool: echo\n    with: {text: '{{ inputs.word }}'}\ninputs: {word: {type: string}}\n")
    model = RecordingModel()
    result = run(plan, model, {"word": "bird"})
    target, messages, _, _ = model.calls[0]
    assert [m.role for m in messages] == ["system", "user"] and messages[1].content == "Repeat: bird"
    assert target.backend == "fake" and target.model == "m1"
    step = result.steps["a"]
    assert step.status == "done" and step.prompt_tokens == 3 and step.completion_tokens == 5 and step.endpoint == "http://stub"


def test_independent_steps_overlap_and_dependants_wait(write) -> None:
    plan = plan_for(
        write,
        "name: diamond\nsteps:\n  - id: top\n    prompt: top\n  - id: left\n    prompt: 'L {{ steps.top.output }}'\n"
        "  - id: right\n    prompt: 'R {{ steps.top.output }}'\n  - id: bottom\n    prompt: '{{ steps.left.output }} {{ steps.right.output }}'\n",
    )
    # The two middle steps must be in flight at the same time, or they never meet and fail.
    model = RecordingModel(together=2, meets=lambda prompt: prompt.split()[0] in ("L", "R"))
    result = run(plan, model)
    assert result.status == "done", {s.id: s.error for s in result.steps.values()}
    assert model.peak == 2, "the two middle steps overlap, nothing else runs beside them"
    order = [m[-1].content.split()[0] for _, m, _, _ in model.calls]
    assert order[0] == "top" and sorted(order[1:3]) == ["L", "R"] and len(order) == 4
    times = {m[-1].content.split()[0]: (start, end) for _, m, start, end in model.calls}
    assert times["top"][1] <= min(times["L"][0], times["R"][0])
    assert model.calls[-1][2] >= max(times["L"][1], times["R"][1])


def test_max_parallel_bounds_concurrency(write) -> None:
    steps = "".join(f"  - id: s{i}\n    prompt: p{i}\n" for i in range(6))
    plan = plan_for(write, f"name: t\nmax_parallel: 2\nsteps:\n{steps}")
    # Every call waits for a second one: two run at once, never a third.
    model = RecordingModel(together=2)
    result = run(plan, model)
    assert result.status == "done", {s.id: s.error for s in result.steps.values()}
    assert model.peak == 2 and len(model.calls) == 6


def test_when_skips_and_dependants_of_a_skipped_step_still_run(write) -> None:
    plan = plan_for(
        write,
        "name: t\nsteps:\n  - id: a\n    run: [echo, trivial]\n  - id: b\n    when: \"steps.a.output != 'trivial'\"\n    prompt: x\n"
        "  - id: c\n    run: [echo, '{{ steps.b.status }}']\n",
    )
    result = run(plan, RecordingModel())
    assert [result.steps[s].status for s in "abc"] == ["done", "skipped", "done"]
    assert result.steps["c"].output == "skipped" and result.status == "done"


def test_failure_skips_dependants_unless_continue_on_error(write) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    plan = plan_for(
        write,
        f"name: t\nsteps:\n  - id: bad\n    run: {failing}\n  - id: after\n    run: [echo, '{{{{ steps.bad.status }}}}']\n"
        f"  - id: soft\n    continue_on_error: true\n    run: {failing}\n  - id: after_soft\n    run: [echo, '{{{{ steps.soft.status }}}}']\n",
    )
    result = run(plan, RecordingModel())
    assert result.steps["bad"].status == "failed" and "exited with code 3" in result.steps["bad"].error
    assert result.steps["after"].status == "skipped" and result.steps["after"].error == "dependency failed"
    assert result.steps["after_soft"].status == "done" and result.steps["after_soft"].output == "failed"
    assert result.status == "failed"


def test_run_argv_values_cannot_inject_arguments(write, tmp_path: Path) -> None:
    plan = plan_for(
        write,
        "name: t\ninputs: {x: {type: string}}\nsteps:\n"
        f"  - id: a\n    run: ['{sys.executable}', -c, 'import sys; print(sys.argv[1:])', '{{{{ inputs.x }}}}']\n",
    )
    result = run(plan, RecordingModel(), {"x": "a; rm -rf / && echo $HOME"})
    assert result.steps["a"].output == "['a; rm -rf / && echo $HOME']"


def test_step_timeout_and_retry(write) -> None:
    plan = plan_for(write, "name: t\nsteps:\n  - id: slow\n    timeout: 0.2\n    retry: {attempts: 2, backoff: 0}\n    run: [sleep, '60']\n")
    started = time.monotonic()
    result = run(plan, RecordingModel())
    assert result.steps["slow"].status == "failed" and result.steps["slow"].attempts == 2
    assert "timed out" in result.steps["slow"].error
    # Two attempts left to run would take two minutes: the bound tells a timeout from none, on any machine.
    assert time.monotonic() - started < 30


def test_inputs_are_typed(write) -> None:
    plan = plan_for(write, "name: t\ninputs:\n  n: {type: integer, default: 1}\n  flag: {type: boolean}\nsteps:\n  - id: a\n    run: [echo]\n")
    assert bind_inputs(plan.workflow, {"n": "4", "flag": "yes"}) == {"n": 4, "flag": True}
    with pytest.raises(InputError, match="must be integer"):
        bind_inputs(plan.workflow, {"n": "four"})
    with pytest.raises(InputError, match="unknown input"):
        bind_inputs(plan.workflow, {"m": "1"})


def test_for_each_fans_out_in_order_with_item_and_index(write) -> None:
    plan = plan_for(
        write,
        "name: t\ninputs: {names: {type: array, default: [ann, bob, cy]}}\nsteps:\n"
        "  - id: greet\n    for_each: '{{ inputs.names }}'\n    prompt: 'hi {{ index }} {{ item }}'\n"
        "  - id: count\n    for_each: [1, 2]\n    run: [echo, 'n{{ item }}']\n",
    )
    # The three items must all be in flight at once, or they never meet and fail.
    model = RecordingModel(lambda prompt: prompt.upper(), together=3)
    result = run(plan, model)
    assert result.steps["greet"].output == ["HI 0 ANN", "HI 1 BOB", "HI 2 CY"]
    assert result.steps["greet"].prompt == ["hi 0 ann", "hi 1 bob", "hi 2 cy"]
    assert result.steps["count"].output == ["n1", "n2"]
    assert model.peak == 3, "items run concurrently"


def test_output_json_is_parsed_validated_and_retried_once(write) -> None:
    plan = plan_for(
        write,
        "name: t\nsteps:\n  - id: a\n    prompt: give json\n    output: json\n"
        "    output_schema: {type: object, required: [score], properties: {score: {type: integer}}}\n"
        "  - id: b\n    run: [echo, '{{ steps.a.output.score + 1 }}']\n",
    )
    answers = iter(["Sure! {\"score\": \"high\"}", "```json\n{\"score\": 41}\n```"])
    model = RecordingModel(lambda prompt: next(answers))
    result = run(plan, model)
    assert result.steps["a"].output == {"score": 41} and result.steps["b"].output == "42"
    retry_prompt = model.calls[1][1][-1].content
    assert "not valid JSON" in retry_prompt and "score" in retry_prompt
    assert result.steps["a"].attempts == 2


def test_output_json_fails_after_the_corrective_retry(write) -> None:
    plan = plan_for(write, "name: t\nsteps:\n  - id: a\n    prompt: give json\n    output: json\n")
    result = run(plan, RecordingModel(lambda prompt: "no json here"))
    assert result.steps["a"].status == "failed" and "no JSON value" in result.steps["a"].error


def test_sub_workflow_runs_with_inputs_and_returns_outputs(write) -> None:
    write("child.yaml", "name: child\ninputs: {word: {type: string}}\nsteps:\n  - id: up\n    prompt: '{{ inputs.word }}'\noutputs: {shout: '{{ steps.up.output }}!'}\n")
    plan = plan_for(write, "name: parent\nsteps:\n  - id: sub\n    workflow: child.yaml\n    with: {word: hey}\n  - id: after\n    run: [echo, '{{ steps.sub.output.shout }}']\n")
    result = run(plan, RecordingModel(lambda prompt: prompt.upper()))
    assert result.steps["sub"].output == {"shout": "HEY!"} and result.steps["after"].output == "HEY!"


def test_sub_workflow_errors_are_found_at_plan_time(write) -> None:
    write("child.yaml", "name: child\ninputs: {word: {type: string}}\nsteps:\n  - id: up\n    tool: nope\n")
    with pytest.raises(InputError, match="unknown tool 'nope'"):
        plan_for(write, "name: parent\nsteps:\n  - id: sub\n    workflow: child.yaml\n")
    write("loop.yaml", "name: loop\nsteps:\n  - id: again\n    workflow: loop.yaml\n")
    with pytest.raises(InputError, match="includes itself"):
        plan_for(write, "name: parent\nsteps:\n  - id: sub\n    workflow: loop.yaml\n")
    with pytest.raises(InputError, match="unknown input 'wrod'"):
        write("child.yaml", "name: child\ninputs: {word: {type: string}}\nsteps:\n  - id: up\n    prompt: x\n")
        plan_for(write, "name: parent\nsteps:\n  - id: sub\n    workflow: child.yaml\n    with: {wrod: x}\n")


def test_a_large_generated_workflow_plans_and_runs(write) -> None:
    steps = ["  - id: s0\n    prompt: start\n"]
    for i in range(1, 2000):
        deps = sorted({(i * 7) % i, (i * 13) % i, i - 1})
        refs = " ".join(f"{{{{ steps.s{d}.status }}}}" for d in deps)
        steps.append(f"  - id: s{i}\n    prompt: '{refs}'\n")
    plan = plan_for(write, "name: big\nmax_parallel: 16\nsteps:\n" + "".join(steps))
    result = run(plan, RecordingModel(lambda prompt: "ok"))
    assert result.status == "done" and len(result.steps) == 2000
    assert all(r.status == "done" for r in result.steps.values())
    for step_id in plan.graph:
        for dep in plan.graph.predecessors(step_id):
            assert result.steps[dep].finished_at <= result.steps[step_id].started_at


def test_a_fan_out_reports_its_items_as_they_finish(write) -> None:
    from dse.console import step_line

    plan = plan_for(write, "name: f\nsteps:\n  - id: each\n    for_each: [a, b, c]\n    prompt: 'say {{ item }}'\n")
    seen: list[tuple[str, int, int | None]] = []
    result = run(plan, RecordingModel(), on_event=lambda r: seen.append((r.status, r.items_done, r.items_total)))
    assert [done for status, done, _ in seen if status == "running"] == [0, 1, 2, 3]
    assert seen[-1] == ("done", 3, 3)
    assert "3/3 items" in step_line(result.steps["each"])


def test_a_fan_out_over_a_commands_output_never_renders_that_output(write) -> None:
    """Command output (a JSON list here) that looks like a template stays data when `for_each` parses it."""
    plan = plan_for(
        write,
        "name: f\nsteps:\n  - id: list\n    run: [printf, '[\"%s%s 7*7 %s%s\", \"%s%s inputs %s%s\"]', '{', '{', '}', '}', '{', '{', '}', '}']\n"
        "  - id: each\n    for_each: '{{ steps.list.output }}'\n    prompt: 'say {{ item }}'\n",
    )
    model = RecordingModel()
    result = run(plan, model)
    assert result.steps["each"].status == "done", result.steps["each"].error
    assert sorted(m[-1].content for _, m, _, _ in model.calls) == ["say {{ 7*7 }}", "say {{ inputs }}"]


def test_a_json_document_holding_a_markdown_fence_is_read_whole() -> None:
    """A command's JSON whose strings carry ``` (a README diff) is the document, not an answer wrapped in a fence."""
    import json as jsonlib

    from dse.workflow.steps.json_answer import parse_json

    document = {"files": [{"diff": "+```yaml\n+a: 1\n+```\n"}]}
    assert parse_json(jsonlib.dumps(document), None) == document
    assert parse_json('Here it is:\n```json\n{"verdict": "trivial"}\n```', None) == {"verdict": "trivial"}


def test_a_fan_out_that_may_fail_runs_every_item_and_keeps_the_answers(write) -> None:
    plan = plan_for(
        write,
        "name: f\nsteps:\n  - id: each\n    for_each: [a, bad, c, bad]\n    continue_on_error: true\n    prompt: 'say {{ item }}'\n"
        "  - id: after\n    run: [echo, '{{ steps.each.output | select | list | length }}']\n",
    )

    class Failing(RecordingModel):
        async def chat(self, target, messages, retry=None, **kw):
            if "bad" in messages[-1].content:
                from dse.errors import BadRequest

                raise BadRequest("refused", backend="fake")
            return await super().chat(target, messages, retry)

    result = run(plan, Failing())
    each = result.steps["each"]
    assert each.status == "failed" and each.error.startswith("2 of 4 items failed; item 1:")
    assert each.output == ["answer to say a", None, "answer to say c", None]
    assert result.steps["after"].output == "2", "dependants run and see the answers that came back"
