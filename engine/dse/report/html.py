"""`dse show RUN --html PATH`: one self-contained HTML file of a run, read back from its journal.

Self-contained means it opens from a file, offline, years later: inline CSS, inline SVG drawn
here (the step graph and the timeline), no script at all, and a Content-Security-Policy that
forbids loading anything. Everything shown is text the journal holds (model answers, prompts,
errors, command output), so the template escapes every value (jinja2 autoescape): an answer
containing `<script>` reads as that text. The journal is already scrubbed of the config's
secrets; nothing else is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from ..console import money, run_state, spend_line, state, truncation, value_text
from ..errors import InputError
from ..workflow.journal import RunRecord
from ..workflow.results import SKIPPED, StepResult
from . import graph, timeline

NOT_RUN = "not run"
"""The state of a planned step the journal has no record of: the run ended (or was killed) before it."""


@dataclass(frozen=True)
class Attempt:
    """A failed try of a step's call, and what followed it: retried (same backend), fell back (another), or the end."""

    where: str
    kind: str
    error: str
    waited: str
    then: str


@dataclass(frozen=True)
class StepView:
    """One step as its report section shows it; texts already formatted, left to the template to escape."""

    id: str
    anchor: str
    state: str
    what: str
    seconds: str = ""
    tokens: str = ""
    cost: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    output: str | None = None
    error: str | None = None
    printed: list[tuple[str, str]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render(record: RunRecord) -> str:
    """The report as HTML text."""
    planned = _planned(record)
    views = [_view(step_id, what, f"step-{number}", record) for number, (step_id, what, _needs) in enumerate(planned, 1)]
    states = {view.id: view.state for view in views}
    drawn = graph.layout([graph.GraphStep(step_id, what, states[step_id], needs) for step_id, what, needs in planned])
    results = [StepResult.from_record(step) for step in record.steps.values()]
    template = _environment().from_string(resources.files(__package__).joinpath("report.html.j2").read_text(encoding="utf-8"))
    return template.render(
        record=record,
        workflow=record.meta.get("workflow_name") or record.meta.get("workflow") or "?",
        status=run_state(record.status, results),
        started=timeline.clock(record.started),
        seconds=f"{record.finished - record.started:.2f}s" if record.finished and record.started else "not ended",
        spend=spend_line(record.spend),
        inputs=json.dumps(record.meta.get("inputs") or {}, indent=2, ensure_ascii=False, default=str),
        outputs={name: value_text(value, terminal=False) for name, value in record.outputs.items()},
        graph=drawn,
        edges_known="graph" in record.meta,
        timeline=timeline.build(record),
        steps=views,
        anchors={view.id: view.anchor for view in views},
    )


def write(record: RunRecord, path: Path) -> None:
    """Write the report to `path`; a path that cannot be written is an InputError saying why (a FIFO is refused: it would block)."""
    if path.exists() and not path.is_file():
        raise InputError(f"cannot write the report to {path}: not a regular file", hint="name a file in a writable directory")
    text = render(record)
    try:
        path.write_text(text, encoding="utf-8", errors="replace")  # a lone surrogate from a server's JSON becomes '?'
    except OSError as exc:
        raise InputError(f"cannot write the report to {path}: {exc.strerror or exc}", hint="name a file in a writable directory") from None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _planned(record: RunRecord) -> list[tuple[str, str, tuple[str, ...]]]:
    """(id, what it is, what it needs) per step: the graph the journal recorded at the run's start, else the steps it finished."""
    recorded = record.meta.get("graph")
    if isinstance(recorded, list) and recorded:
        steps = [(str(s["id"]), str(s.get("tool") or s.get("kind") or "step"), tuple(map(str, s.get("needs") or ()))) for s in recorded]
    else:
        steps = []
    known = {step_id for step_id, _, _ in steps}
    steps += [(step_id, str(step.get("kind") or "step"), ()) for step_id, step in record.steps.items() if step_id not in known]
    return steps


def _view(step_id: str, what: str, anchor: str, record: RunRecord) -> StepView:
    step = record.steps.get(step_id)
    if step is None:
        return StepView(step_id, anchor, NOT_RUN, what)
    result = StepResult.from_record(step)
    prompts = [result.prompt] if isinstance(result.prompt, str) else list(result.prompt or [])
    model = result.kind == "llm" and result.status != SKIPPED
    return StepView(
        step_id,
        anchor,
        state(result)[1],
        what,
        seconds=f"{result.seconds:.2f}s" if "seconds" in step and result.status != SKIPPED else "",
        tokens=f"{result.prompt_tokens}+{result.completion_tokens}" if model else "",
        cost=money(_cost(step)) if model else "",
        facts=_facts(result, step),
        prompts=prompts,
        output=None if result.output is None else value_text(result.output, terminal=False),
        error=result.error,
        printed=[(name, text) for name in ("stdout", "stderr") if (text := step.get(name))],
        attempts=_attempts(result),
        notes=[timeline.note_text(note) for note in record.notes if note.get("step_id") == step_id],
    )


def _facts(result: StepResult, step: dict[str, Any]) -> list[tuple[str, str]]:
    facts = []
    if result.backend:
        facts.append(("model", f"{result.backend}/{result.model}"))
    endpoints = result.endpoints or ([result.endpoint] if result.endpoint else [])
    if endpoints:
        facts.append(("endpoints", ", ".join(endpoints)))
    if "seconds" in step and result.status != SKIPPED:
        facts.append(("ran", f"{result.seconds:.2f}s, ended {timeline.clock(step['at'])}"))
    if result.items_total is not None:
        facts.append(("items", f"{result.items_done}/{result.items_total} done"))
    if result.kind == "llm" and result.status != SKIPPED:
        facts.append(("tokens", f"{result.prompt_tokens} in + {result.completion_tokens} out"))
        facts.append(("cost", money(_cost(step))))
        calls = f"{_count(result.calls, 'call')}, {_count(result.attempts, 'attempt')}"
        facts.append(("calls", calls + (f", {result.cached_calls} answered by the cache" if result.cached_calls else "")))
    if result.first_token is not None:
        facts.append(("first token", f"{result.first_token:.2f}s"))
    if result.rate_waited:
        facts.append(("rate limit", f"waited {result.rate_waited:.1f}s"))
    if (cut := truncation(result)) is not None:
        facts.append(("cut", cut))
    if result.reused:
        facts.append(("reused", "from the run this one resumed"))
    return facts


def _cost(step: dict[str, Any]) -> float | None:
    """The step's USD; a journal written before prices were kept has none: unknown where tokens were spent (as `Spend` reads it)."""
    if "cost" in step:
        return step["cost"] if step["cost"] is None else float(step["cost"])
    return None if step.get("prompt_tokens") or step.get("completion_tokens") else 0.0


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _attempts(result: StepResult) -> list[Attempt]:
    """The step's failed tries, each with what came next: the same backend again, another (a fallback), or nothing."""
    rows = []
    for number, tried in enumerate(result.tries):
        backend = tried.get("backend")
        later = result.tries[number + 1].get("backend") if number + 1 < len(result.tries) else None
        after = later or (result.backend if result.status != "failed" else None)
        if backend is None:
            then = "tried again" if number + 1 < len(result.tries) or result.status != "failed" else "gave up"
        else:
            then = "retried" if after == backend else f"fell back to {after}" if after else "gave up"
        where = " @ ".join(str(part) for part in (backend, tried.get("endpoint")) if part) or f"attempt {tried.get('attempt', number + 1)}"
        waited = tried.get("waited")
        rows.append(Attempt(where, str(tried.get("error_kind") or ""), str(tried.get("error") or ""), f"{waited:.2g}s" if waited else "", then))
    return rows
