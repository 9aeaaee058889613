"""Who ran what, when: a run's steps as bars on one row per endpoint, its retries and fallbacks marked where they happened.

Every time comes from the journal's epoch `at` stamps, so steps, items and notes share one
clock whatever process wrote them: a `step_finished` is written as its step ends and says how
long it ran (`seconds`), a fan-out's `item_finished` the same for each item (and which endpoint
answered it), and a `note` is written when the router retried, fell back, opened a breaker or
waited. A lane is an endpoint (a replica); commands and sub-workflows run on this machine.
Bars that overlap in time on one lane are stacked, so a lane is as tall as its busiest moment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..console import note_line, state
from ..routing.notes import FALLBACK, Note
from ..workflow.journal import RunRecord
from ..workflow.results import SKIPPED, StepResult

LOCAL = "this machine"
"""The lane of commands and sub-workflows: they run where dse runs."""

LABEL_WIDTH, PLOT_WIDTH, AXIS_HEIGHT = 250, 830, 26
BAR_HEIGHT, BAR_GAP, LANE_PAD = 16, 3, 6
_TICKS = 8
_MAX_ROWS = 16  # bars stacked in one lane at most
_LABEL_CHAR = 6.2  # px per character of a bar's label (10px sans-serif)


@dataclass(frozen=True)
class _Span:
    """A bar before layout, in epoch seconds."""

    step_id: str
    lane: str
    start: float
    end: float
    state: str
    label: str
    detail: str
    item: int | None = None


@dataclass(frozen=True)
class Bar:
    step_id: str
    lane: str
    state: str
    label: str
    detail: str
    item: int | None
    start: float
    end: float
    x: float
    y: float
    width: float

    @property
    def label_fits(self) -> bool:
        return self.width >= len(self.label) * _LABEL_CHAR + 6


@dataclass(frozen=True)
class Mark:
    """A routing note (`kind` retry, fallback, breaker, refused, rate_wait) at the moment and on the lane it concerns."""

    step_id: str | None
    kind: str
    detail: str
    at: float
    x: float
    y: float


@dataclass(frozen=True)
class Lane:
    key: str
    backends: str
    y: float
    height: float


@dataclass(frozen=True)
class Tick:
    x: float
    text: str


@dataclass(frozen=True)
class Timeline:
    lanes: list[Lane]
    bars: list[Bar]
    marks: list[Mark]
    ticks: list[Tick]
    seconds: float
    lead: float
    """Seconds from the run's start to its first step (managed servers starting, mostly): not drawn."""
    height: float
    width: float = LABEL_WIDTH + PLOT_WIDTH + 14


def build(record: RunRecord) -> Timeline:
    """The run's timeline: a bar per step (per item for a fan-out whose items say where they ran), a mark per note.

    It starts with the first step or note, not with the run: what came before (managed servers
    starting) is `lead` seconds, said beside the drawing rather than drawn as empty space.
    """
    backends: dict[str, set[str]] = {}
    spans = [span for step in record.steps.values() for span in _spans(step, record.items.get(step["id"], {}), backends)]
    notes = [(_note_lane(note, record.steps.get(str(note.get("step_id")))), note) for note in record.notes]
    for lane, note in notes:
        backends.setdefault(lane, set()).add(str(note.get("backend") or ""))
    times = [span.start for span in spans] + [float(note["at"]) for _, note in notes]
    origin = min(times, default=record.started or 0.0)
    seconds = max([span.end for span in spans] + times, default=origin) - origin or 1.0
    first: dict[str, float] = {}
    for lane, at in [(span.lane, span.start) for span in spans] + [(lane, float(note["at"])) for lane, note in notes]:
        first[lane] = min(first.get(lane, at), at)
    lanes, bars, marks = [], [], []
    y = float(AXIS_HEIGHT)
    for lane in sorted(first, key=lambda lane: (first[lane], lane)):
        rows = _stack([span for span in spans if span.lane == lane])
        height = max(len(rows), 1) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP + 2 * LANE_PAD
        lanes.append(Lane(lane, ", ".join(sorted(b for b in backends.get(lane, ()) if b)), y, height))
        for number, row in enumerate(rows):
            for span in row:
                start, end = span.start - origin, span.end - origin
                x = _x(start, seconds)
                bars.append(
                    Bar(span.step_id, lane, span.state, span.label, span.detail, span.item, start, end,
                        x, y + LANE_PAD + number * (BAR_HEIGHT + BAR_GAP), max(_x(end, seconds) - x, 2.0))
                )
        for where, note in notes:
            if where == lane:
                at = float(note["at"]) - origin
                marks.append(Mark(note.get("step_id"), str(note.get("kind")), note_text(note), at, _x(at, seconds), y + height / 2))
        y += height
    lead = origin - record.started if record.started and spans else 0.0
    return Timeline(lanes, bars, marks, _ticks(seconds), seconds, max(lead, 0.0), height=y + 4)


def _ticks(seconds: float) -> list[Tick]:
    """Ticks at round times (1, 2 or 5 times a power of ten apart), about _TICKS of them."""
    magnitude = 10 ** math.floor(math.log10(seconds / _TICKS))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= seconds / _TICKS)
    return [Tick(_x(i * step, seconds), f"{round(i * step, 6):g}s") for i in range(int(seconds / step + 1e-9) + 1)]


def clock(epoch: float | None) -> str:
    """An epoch time as local date and time, as a person reads it."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "unknown"


def _spans(step: Mapping[str, Any], items: Mapping[int, Mapping[str, Any]], backends: dict[str, set[str]]) -> list[_Span]:
    """A step's bars in epoch seconds; a skipped step has none (its section says why)."""
    result = StepResult.from_record(step)
    if result.status == SKIPPED:
        return []
    word = state(result)[1]
    timed = {index: item for index, item in items.items() if "seconds" in item}
    if timed:
        return [
            _Span(result.id, lane, item["at"] - float(item["seconds"]), item["at"], "done",
                  f"{result.id}[{index}]", _item_text(result.id, index, lane, item), index)
            for index, item in sorted(timed.items())
            for lane in _used_by(item.get("endpoints") or _lanes(result), result.backend, backends)
        ]
    detail = f"{result.id}: {word} in {result.seconds:.2f}s" + (f" - {result.error}" if result.error else "")
    return [
        _Span(result.id, lane, step["at"] - result.seconds, step["at"], word, result.id, detail)
        for lane in _used_by(_lanes(result), result.backend, backends)
    ]


def _item_text(step_id: str, index: int, lane: str, item: Mapping[str, Any]) -> str:
    tokens = f", tokens {item.get('prompt_tokens') or 0}+{item.get('completion_tokens') or 0}" if item.get("prompt_tokens") else ""
    return f"{step_id} item {index} on {lane}: {float(item['seconds']):.2f}s{tokens}"


def _used_by(lanes: Iterable[str], backend: str | None, backends: dict[str, set[str]]) -> list[str]:
    """`lanes`, each recorded as used by `backend`: a lane's label names the backends that called it."""
    out = list(lanes)
    for lane in out:
        backends.setdefault(lane, set()).add(backend or "")
    return out


def _lanes(result: StepResult) -> list[str]:
    """Where a step ran: the endpoints that answered it; for a model call none answered, the last one tried."""
    used = result.endpoints or ([result.endpoint] if result.endpoint else [])
    if used:
        return used
    if result.kind != "llm":
        return [LOCAL]
    tried = [str(t["endpoint"]) for t in result.tries if t.get("endpoint")]
    return [tried[-1] if tried else f"{result.backend or 'model'}: no endpoint reached"]


def _note_lane(note: Mapping[str, Any], step: Mapping[str, Any] | None) -> str:
    """The endpoint a note concerns; a fallback names none, so it marks the last endpoint its step tried on the backend it left."""
    if note.get("endpoint"):
        return str(note["endpoint"])
    if note.get("kind") == FALLBACK and step is not None:
        tried = [str(t["endpoint"]) for t in step.get("tries") or [] if t.get("backend") == note.get("backend") and t.get("endpoint")]
        if tried:
            return tried[-1]
    return f"{note.get('backend') or 'model'}: no endpoint reached"


def note_text(note: Mapping[str, Any]) -> str:
    names = {f.name for f in fields(Note)}
    return note_line(Note(**{k: v for k, v in note.items() if k in names})).strip()


def _stack(spans: list[_Span]) -> list[list[_Span]]:
    """Spans in rows, each in the first row free when it starts, so overlapping spans do not share a row;
    past _MAX_ROWS rows (more at once than a lane can show) a span joins the row that frees up first."""
    rows: list[list[_Span]] = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        row = next((r for r in rows if r[-1].end <= span.start), None)
        if row is None and len(rows) < _MAX_ROWS:
            rows.append([span])
        else:
            (row or min(rows, key=lambda r: r[-1].end)).append(span)
    return rows


def _x(at: float, seconds: float) -> float:
    return LABEL_WIDTH + max(0.0, min(at / seconds, 1.0)) * PLOT_WIDTH
