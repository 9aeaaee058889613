"""Templates are bounded: in work, size, nesting and time, at `dse validate` and while running.

Every hostile template ends in a located error or in a render that stayed within its budget.
Boundedness is asserted through the budget itself (work units spent, characters produced),
never through a clock; the subprocess tests use a timeout only as a safety net.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CONFIG, ROOT
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from dse.backends import ChatResponse, Message, Usage
from dse.config import load_config
from dse.errors import InputError, Location
from dse.routing import Resolver, Target
from dse.runners import InProcessRunner
from dse.workflow import Scheduler, bind_inputs, build_plan, load_workflow
from dse.workflow import templating
from dse.workflow.template_env import bounded
from dse.workflow.template_limits import CHARS_PER_UNIT, Budget, Limits

MODEL_CONFIG = """\
llm:
  backend: fake
  fake: {type: openai, api_key: x, base_url: "http://127.0.0.1:9/v1", models: {generator: m1}}
"""

#: A loop whose every iteration scans two megabytes: slow per unit of work, so a deadline
#: (not the work budget) is what stops it, and stopping it early is observable.
SLOW = "{% set s = 'ab' * 1000000 %}{% for i in range(99999) %}{% if 'c' in s %}{% endif %}{% endfor %}"

WHERE = Location("wf.yaml", 7, 5, "steps[0].prompt")


class EchoModel:
    """Answers every call with its prompt."""

    async def chat(self, target: Target, messages: list[Message], retry: object = None) -> ChatResponse:
        return ChatResponse(messages[-1].content, target.model, target.backend, "http://stub", Usage(1, 1), 0.01)


def plan_for(write, workflow_text: str):
    config = load_config(write("config.yaml", MODEL_CONFIG), environ={})
    return build_plan(load_workflow(write("wf.yaml", workflow_text)), config, Resolver(config))


def run(plan, inputs=None):
    return asyncio.run(Scheduler(plan, InProcessRunner(EchoModel())).run(bind_inputs(plan.workflow, inputs or {})))


def render_within(template: str, limits: Limits, **context: object) -> tuple[str | InputError, Budget]:
    """Render under a budget of its own, with time out of the picture: work and size decide."""
    budget = Budget(limits, seconds=3600)
    with bounded(budget):
        try:
            return templating.render(template, context, where=WHERE), budget
        except InputError as error:
            return error, budget


# ---- dse validate: what is evident from the text -----------------------------------------


@pytest.mark.parametrize(
    ("key", "body", "message"),
    [
        ("run", "run: [echo, '{{ 10**5000 }}']", "10 ** 5000 would have about"),
        ("run", "run: [echo, '{{ 9**(9**9) }}']", "9 ** 387420489 would have about"),
        ("prompt", "prompt: '{{ \"a\" * 10**9 }}'", "repeating a value 1000000000 times"),
        ("prompt", "prompt: '{{ [1, 2] * 999999999 }}'", "repeating a value 999999999 times"),
        ("when", "when: '10**5000 > 1'\n    run: [echo]", "10 ** 5000 would have about"),
        ("prompt", "prompt: '{{ " + "9" * 1300 + " }}'", "an integer literal would have about"),
        ("prompt", "prompt: '{{ " + "9" * 5000 + " }}'", "a number in the template has too many digits"),
    ],
)
def test_huge_constant_arithmetic_is_a_located_error_at_plan_time(write, key: str, body: str, message: str) -> None:
    with pytest.raises(InputError, match="template error") as info:
        plan_for(write, f"name: t\nsteps:\n  - id: a\n    run: [echo]\n  - id: b\n    {body}\n")
    assert message in str(info.value)
    assert (info.value.location.line, info.value.location.key) == (6, f"steps[1].{key}")


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("{{ inputs.t.__class__ }}", "__class__"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
        ("{{ inputs.t['__globals__'] }}", "__globals__"),
        ("{{ inputs.t|attr('__init__') }}", "__init__"),
    ],
)
def test_names_the_sandbox_refuses_are_refused_at_plan_time(write, template: str, name: str) -> None:
    with pytest.raises(InputError) as info:
        plan_for(write, f"name: t\ninputs: {{t: {{type: string}}}}\nsteps:\n  - id: a\n    run: [echo]\n  - id: b\n    prompt: \"{template}\"\n")
    assert f"reads {name!r}" in str(info.value) and "Python internals" in str(info.value)
    assert (info.value.location.line, info.value.location.key) == (7, "steps[1].prompt")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", "nests brackets more than 100 levels deep"),
        ("{{ " + " + ".join(["1"] * 500) + " }}", "nests more than 100 levels deep"),
        ("{% for a in [1] %}" * 25 + "x" + "{% endfor %}" * 25, "nests too deeply for Python to compile"),
    ],
)
def test_deep_nesting_is_a_located_error_at_plan_time(write, template: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        plan_for(write, f"name: t\nsteps:\n  - id: a\n    run: [echo, '{template}']\n")
    assert info.value.location.key == "steps[0].run"


# ---- rendering: what only the data reveals -----------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{{ 'a' * n }}", id="repeat-text"),
        pytest.param("{{ [1] * n }}", id="repeat-list"),
        pytest.param("{{ 9 ** n }}", id="power"),
        pytest.param("{{ (n ** 100) * (n ** 100) }}", id="product"),
        pytest.param("{{ range(n) }}", id="range"),
        pytest.param("{{ 'x'|center(n) }}", id="center"),
        pytest.param("{{ 'x'|indent(n, true) }}", id="indent"),
        pytest.param("{{ [1, 2]|batch(n, 0)|list }}", id="batch"),
        pytest.param("{{ '%0*d' % (n, 1) }}", id="percent-format"),
        pytest.param("{{ '{:>{}}'.format(1, n) }}", id="str-format"),
        pytest.param("{{ 'x'.ljust(n) }}", id="ljust"),
        pytest.param("{{ ('ab' * 1000)|replace('', 'c' * 1000) }}", id="replace"),
    ],
)
def test_amplifying_operations_are_refused_before_they_run(template: str) -> None:
    outcome, budget = render_within(template, Limits(max_output=100_000), n=10**8)
    assert isinstance(outcome, InputError) and outcome.location == WHERE
    assert budget.work < 100, "refused by predicting the result, not after building it"


def test_nested_loops_stop_at_the_work_budget() -> None:
    limits = Limits(max_work=10_000)
    outcome, budget = render_within("{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}", limits)
    assert isinstance(outcome, InputError) and "units of work" in str(outcome)
    assert limits.max_work < budget.work <= limits.max_work + 2


def test_literal_text_written_in_a_loop_is_paid_for() -> None:
    literal = "y" * 2000
    outcome, budget = render_within(
        "{% set b %}{% for i in range(10000) %}" + literal + "{% endfor %}{% endset %}{{ b|length }}", Limits(max_work=100_000)
    )
    assert isinstance(outcome, InputError) and "units of work" in str(outcome)
    assert budget.work <= 100_000 + len(literal) // CHARS_PER_UNIT + 1


def test_the_rendered_text_is_capped() -> None:
    outcome, _ = render_within("{% for i in range(1000) %}{{ x }}{% endfor %}", Limits(max_output=100_000), x="y" * 1000)
    assert isinstance(outcome, InputError) and "the rendered text would be more than 100000" in str(outcome)


def test_a_value_that_would_print_far_larger_than_it_looks_is_refused() -> None:
    doubling = "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 10 + "{{ a }}"  # a megabyte once printed
    outcome, budget = render_within(doubling, Limits(max_output=100_000))
    assert isinstance(outcome, InputError) and "a printed value would be more than" in str(outcome)
    assert budget.work < 10_000


def test_an_ordinary_template_renders_unchanged() -> None:
    text, _ = render_within(
        "{{ name }}: {% for i in items %}{{ loop.index }}={{ i }}{{ ', ' if not loop.last }}{% endfor %}; "
        "{{ items|join('-') }} {{ '%03d'|format(7) }} {{ '{:>4}'.format('x') }} {{ 2 ** 10 }} {{ 'a' ~ 'b' }} {{ 'x' * 3 }}",
        Limits(),
        name="n",
        items=[1, 2, 3],
    )
    assert text == "n: 1=1, 2=2, 3=3; 1-2-3 007    x 1024 ab xxx"


# ---- hostile templates, generated -------------------------------------------------------

_constants = st.sampled_from(["9", "10", "2", "'ab'", "[1, 2]"])
_atoms = st.one_of(_constants, st.sampled_from(["n", "range(99)", "x", "(n * n)", "n ** 3"]))
_wrappers = [
    "({} ** {})",
    "({} * {})",
    "({} + {})",
    "({} ~ {})",
    "{}|center({})",
    "{}|string|replace('', {}|string)",
    "{}|join({}|string)",
    "[{}, {}]",
    "{}.__class__.__mro__[{}]",
    "'%0*d' % ({}, {})",
]
_expressions = st.recursive(
    _atoms,
    lambda inner: st.tuples(st.sampled_from(_wrappers), inner, inner).map(lambda t: t[0].format(t[1], t[2])),
    max_leaves=12,
)
_constant_expressions = st.recursive(
    _constants,
    lambda inner: st.tuples(st.sampled_from(["({} ** {})", "({} * {})", "({} + {})"]), inner, inner).map(lambda t: t[0].format(t[1], t[2])),
    max_leaves=6,
)
_templates = st.one_of(
    _expressions.map(lambda e: "{{ " + e + " }}"),
    _constant_expressions.map(lambda e: "{{ " + e + " }}"),
    st.tuples(st.integers(1, 6), _expressions).map(
        lambda t: "{% for i in range(99999) %}" * t[0] + "{{ " + t[1] + " }}" + "{% endfor %}" * t[0]
    ),
    st.integers(1, 400).map(lambda depth: "{{ " + "[" * depth + "1" + "]" * depth + " }}"),
)


#: The classes found by hand, always tried first.
_KNOWN = [
    "{{ 9 ** (9 ** 9) }}",
    "{{ 'ab' * (10 ** 9) }}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ " + "[" * 300 + "1" + "]" * 300 + " }}",
]


def _known(test: Callable[..., None]) -> Callable[..., None]:
    for template in _KNOWN:
        test = example(template)(test)
    return test


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@_known
@given(_templates)
def test_hostile_templates_end_in_a_located_error_or_a_bounded_render(template: str) -> None:
    limits = Limits(max_work=20_000, max_output=50_000)
    outcome, budget = render_within(template, limits, n=99999, x="x" * 1000)
    event("error: " + str(outcome).split("template error: ")[-1][:40] if isinstance(outcome, InputError) else "rendered")
    if isinstance(outcome, InputError):
        assert outcome.location == WHERE and str(outcome).startswith(f"{WHERE}: template error")
    else:
        assert len(outcome) <= limits.max_output
    # The budget is checked after each charge, so the last one may overshoot by one value's worth.
    assert budget.work <= limits.max_work + 1 + limits.max_output // CHARS_PER_UNIT


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@_known
@given(_templates)
def test_hostile_templates_are_validated_without_running_away(tmp_path_factory, template: str) -> None:
    """`dse validate` compiles and folds constants: it ends in a plan or a located error, whatever the text."""
    directory = tmp_path_factory.mktemp("wf")
    (directory / "config.yaml").write_text(MODEL_CONFIG)
    (directory / "wf.yaml").write_text(f"name: t\nsteps:\n  - id: a\n    with: {{n: 99999, x: xxx}}\n    prompt: {json.dumps(template)}\n")
    config = load_config(directory / "config.yaml", environ={})
    try:
        build_plan(load_workflow(directory / "wf.yaml"), config, Resolver(config))
    except InputError as error:
        assert error.location is not None and (error.location.line, error.location.key) == (5, "steps[0].prompt"), error


# ---- running: the step's timeout, cancellation and Ctrl-C --------------------------------


def test_a_runaway_template_under_a_step_timeout_fails_that_step(write) -> None:
    plan = plan_for(write, f'name: t\nsteps:\n  - id: slow\n    timeout: 0.5\n    prompt: "{SLOW}"\n  - id: after\n    run: [echo, ok]\n')
    result = run(plan)
    assert result.steps["slow"].status == "failed" and "timed out after 0.5s" in result.steps["slow"].error
    assert "steps[0].prompt" in result.steps["slow"].error
    assert result.steps["after"].status == "done", "the other steps were not held up"


@pytest.mark.parametrize(
    ("template", "message"),
    [("{{ 'a' * inputs.n }}", "repeating a value"), ("{{ 1 // (inputs.n - inputs.n) }}", "ZeroDivisionError")],
)
def test_a_template_failing_at_run_time_fails_its_step_at_its_key(write, template: str, message: str) -> None:
    plan = plan_for(write, f'name: t\ninputs: {{n: {{type: integer}}}}\nsteps:\n  - id: a\n    run: [echo, "{template}"]\n')
    result = run(plan, {"n": 10**9})
    assert result.steps["a"].status == "failed"
    assert message in result.steps["a"].error and "wf.yaml:5:5: steps[0].run: template error" in result.steps["a"].error


def test_a_cancelled_render_stops_working() -> None:
    """Abandoned, the worker stops at its next operation; without that it would run out its budget."""
    started, outcome = threading.Event(), []

    def work() -> str:
        started.set()
        try:
            return templating.render("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", {})
        except InputError as error:
            outcome.append(error)
            raise

    async def main() -> None:
        task = asyncio.create_task(templating.run_bounded(work, limits=Limits(max_work=5_000_000)))
        await asyncio.to_thread(started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())  # returns once the worker has ended: asyncio.run waits for its threads
    assert len(outcome) == 1 and "rendering was cancelled" in str(outcome[0])


def test_validate_exits_2_with_a_located_error_on_a_constant_that_would_never_finish(write) -> None:
    path = write("wf.yaml", "name: t\nsteps:\n  - id: a\n    run: [echo, '{{ 9**(9**9) }}']\n")
    result = subprocess.run(
        [sys.executable, "-m", "dse", "validate", str(path), "--config", str(CONFIG)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}:4:5: steps[0].run: template error: 9 ** 387420489 would have about" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_during_a_runaway_render_exits_promptly(write, tmp_path: Path) -> None:
    """Ctrl-C acts while the template runs: the step never reaches the error at its end, the run is interrupted."""
    path = write("wf.yaml", f'name: t\nsteps:\n  - id: slow\n    run: [echo, "{SLOW}{{{{ 1 // 0 }}}}"]\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "dse", "run", str(path), "--config", str(CONFIG), "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "running" in line:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert "dse: interrupted" in stderr and "failed" not in stderr and "ZeroDivisionError" not in stderr
