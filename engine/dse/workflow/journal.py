"""The run journal: an append-only, fsync'd record of everything a run did.

One directory per run (`.dse/runs/<id>/`): `run.json` says what was asked (workflow, inputs,
config), `events.jsonl` says what happened, one JSON line per event, written to the OS as it
happens and fsync'd before the next step can depend on it (a fan-out's per-item events are
fsync'd in batches, see `RunJournal.event`). A run killed with SIGKILL therefore loses nothing
that had finished, and `dse run --resume <id>` knows exactly what to redo. Lines are plain JSON so
`jq` and `grep` work on them.

The process writing a journal holds an exclusive `flock` on its `events.jsonl` until it closes
it; the kernel drops the lock when the process dies however it dies. That is how a reader tells
a run that is still going from one that was killed (`is_running`), why `dse runs prune` never
removes a live run, and why two processes never resume the same run at once.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import itertools
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, Location
from ..redact import Redactor
from .results import TOLERATED, StepResult

RUNS = "runs"
# Events written once per fan-out item: flushed to the OS each, fsync'd at most every _SYNC_EVERY seconds.
_BATCHED = frozenset({"item_finished"})
_SYNC_EVERY = 1.0


def new_run_id() -> str:
    """Sortable by start time, unique without coordination: `20261122-043012-3f9a`."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + secrets.token_hex(2)


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class RunJournal:
    """Writes one run's journal; every write survives the process being killed once it returns."""

    def __init__(self, directory: Path, redactor: Redactor) -> None:
        self.directory = directory
        self.run_id = directory.name
        self._redactor = redactor
        self._events = open(directory / "events.jsonl", "a", encoding="utf-8")
        if not _lock(self._events, fcntl.LOCK_EX):
            self._events.close()
            raise InputError(
                f"run {self.run_id} is still running: another dse process is writing its journal",
                hint="wait for it to end, or stop it (Ctrl-C) before resuming it",
            ) from None
        self._unsynced = False
        self._synced = time.monotonic()

    @classmethod
    def create(
        cls,
        state_dir: Path,
        *,
        workflow: str,
        workflow_name: str,
        config: str,
        inputs: Mapping[str, Any],
        redactor: Redactor = Redactor(),
        source: str | None = None,
        graph: Iterable[Mapping[str, Any]] = (),
    ) -> RunJournal:
        """A new run's journal; `redactor` scrubs the config's secrets from everything written.

        `source` is the file the workflow was read from, when that is not `workflow` itself (a
        config's `workflows:` entry, `CONFIG#NAME`): its digest tells a resume whether it changed.
        `graph` is the plan's steps in order, each `{id, kind, tool, needs}`: the step graph as it
        was run, which the HTML report draws even after the workflow file changed or went away.
        """
        run_id = new_run_id()
        directory = state_dir / RUNS / run_id
        directory.mkdir(parents=True, exist_ok=False)
        meta = {
            "id": run_id,
            "workflow": str(Path(workflow).resolve()),
            "workflow_name": workflow_name,
            "workflow_digest": file_digest(source or workflow),
            "config": str(Path(config).resolve()),
            "inputs": dict(inputs),
            "created": time.time(),
            "graph": [dict(step) for step in graph],
        }
        journal = cls(directory, redactor)
        _write_atomic(directory / "run.json", journal._redactor.value(meta))
        return journal

    @classmethod
    def reopen(cls, state_dir: Path, run_id: str, redactor: Redactor = Redactor()) -> RunJournal:
        return cls(run_directory(state_dir, run_id), redactor)

    def event(self, name: str, /, **fields: Any) -> None:
        """Append one event and hand it to the OS, so a killed process still leaves it on disk; secrets never reach it.

        Every event but `item_finished` is also fsync'd before this returns, so it survives the
        machine going down too. A fan-out writes one `item_finished` per item; those are fsync'd
        at most once a second, and always by the next other event (their step's `step_finished`)
        and by `close`: a crash of the machine, not of the process, may cost the last second of items,
        which a resume sends again.
        """
        record = {"event": name, "at": time.time(), **fields}
        line = json.dumps(record, default=str, ensure_ascii=False)
        if self._redactor.in_json(line):  # rare: scrub the parsed values, as read back, then write that
            line = json.dumps(self._redactor.value(json.loads(line)), ensure_ascii=False)
        self._events.write(line + "\n")
        self._events.flush()
        self._unsynced = True
        now = time.monotonic()
        if name not in _BATCHED or now - self._synced >= _SYNC_EVERY:
            self._sync(now)

    def _sync(self, now: float) -> None:
        os.fsync(self._events.fileno())
        self._unsynced, self._synced = False, now

    def close(self) -> None:
        if self._unsynced and not self._events.closed:
            self._sync(time.monotonic())
        self._events.close()


def run_directory(state_dir: Path, run_id: str) -> Path:
    """The directory of the run with exactly this id; `resolve_run` turns `last` or a prefix into one."""
    directory = state_dir / RUNS / run_id
    if not (directory / "run.json").is_file():
        raise _no_run(state_dir, run_id, run_ids(state_dir))
    return directory


LAST = "last"
"""The run reference that means the newest run."""


def run_ids(state_dir: Path) -> list[str]:
    """The recorded runs' ids, newest first: ids sort by start time to the second, and runs started
    in the same second by the time their run.json records, so `last` is the run started last."""
    root = state_dir / RUNS
    if not root.is_dir():
        return []
    names = sorted((d.name for d in root.iterdir() if (d / "run.json").is_file()), reverse=True)
    ordered: list[str] = []
    for _second, same in itertools.groupby(names, key=lambda name: name[:_SECOND]):
        ties = list(same)
        ordered += sorted(ties, key=lambda name: _created_or_0(root / name), reverse=True) if len(ties) > 1 else ties
    return ordered


_SECOND = len("20261122-043012")  # the part of an id that is its start time


def created_at(meta: Mapping[str, Any]) -> float | None:
    """When run.json says the run was created (epoch seconds); None for a journal that does not say."""
    created = meta.get("created")
    return float(created) if isinstance(created, (int, float)) else None


def _created_or_0(directory: Path) -> float:
    """`created_at` of a run's directory; 0 where run.json cannot say (the id's order then stands)."""
    try:
        return created_at(read_meta(directory / "run.json")) or 0.0
    except InputError:
        return 0.0


def resolve_run(state_dir: Path, ref: str) -> str:
    """The id of the run `ref` names: `last` (the newest run), a full id, or a prefix only one id starts with.

    An ambiguous prefix names its candidates, an unknown reference the ids closest to it: both are
    input errors, so a typo is fixed from the message rather than by listing every run.
    """
    ids = run_ids(state_dir)
    if ref == LAST:
        if not ids:
            raise InputError(f"no runs yet in {state_dir / RUNS}", hint="`dse run WORKFLOW` records one")
        return ids[0]
    if ref in ids:
        return ref
    matches = [run_id for run_id in ids if ref and run_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:_SHOWN]) + (f" and {len(matches) - _SHOWN} more" if len(matches) > _SHOWN else "")
        raise InputError(f"run {ref!r} is ambiguous: {len(matches)} runs start with it: {shown}", hint="type more of the id")
    raise _no_run(state_dir, ref, ids)


_SHOWN = 10  # candidates an ambiguous prefix lists


def _no_run(state_dir: Path, ref: str, ids: list[str]) -> InputError:
    """No run is `ref`: name the ids that look most like it (compared over the length typed), else the newest."""
    def likeness(run_id: str) -> float:
        return difflib.SequenceMatcher(None, ref, run_id[: len(ref)]).ratio()

    close = sorted((run_id for run_id in ids if likeness(run_id) >= 0.6), key=likeness, reverse=True)[:3]
    if close:
        hint = f"closest: {', '.join(close)}"
    else:
        hint = f"newest runs: {', '.join(ids[:3])} (or `last`)" if ids else "`dse runs` lists the runs"
    return InputError(f"no run {ref!r} in {state_dir / RUNS}", hint=hint)


def is_running(directory: Path) -> bool:
    """Whether a live process is writing this run's journal: it holds the lock (see the module's docstring)."""
    try:
        handle = open(directory / "events.jsonl", "rb")
    except OSError:
        return False
    with handle:
        return not _lock(handle, fcntl.LOCK_SH)


@contextlib.contextmanager
def held(directory: Path) -> Iterator[bool]:
    """Hold a run's journal lock for the block, as its writer would; yields False, holding nothing, while a process runs it.

    What `dse runs prune` removes it removes under this lock, so no resumption starts on a run half gone.
    """
    try:
        handle = open(directory / "events.jsonl", "rb")
    except FileNotFoundError:
        yield True  # no events file: no process ever wrote one to lock
        return
    with handle:
        yield _lock(handle, fcntl.LOCK_EX)


_LOCK_TRIES, _LOCK_PAUSE = 5, 0.01


def _lock(handle: IO[Any], kind: int) -> bool:
    """Take a `kind` flock (LOCK_EX or LOCK_SH) on an open file; False if another process keeps a conflicting one.

    A check (`is_running`) holds its shared lock for microseconds, so a few quick tries tell a
    check passing by from a writer that holds the lock for its whole run.
    """
    for attempt in range(_LOCK_TRIES):
        try:
            fcntl.flock(handle.fileno(), kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _LOCK_TRIES:
                time.sleep(_LOCK_PAUSE)
    return False


@dataclass
class Spend:
    """Tokens and USD that steps took: `cost` is None once any part's price is unknown, never counted as 0.

    `priced_cost` is what the parts with a known price cost; `calls` is how many calls the steps
    made, `cached_calls` how many of them the response cache answered, `rate_waited` the
    seconds they waited for rate-limit turns.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0
    priced_cost: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    rate_waited: float = 0.0

    def add(self, step: Mapping[str, Any] | StepResult | Spend) -> None:
        """Add one step's (or fan-out item's) record: a journal event, a `StepResult`, or another total."""
        prompt, completion = int(_field(step, "prompt_tokens") or 0), int(_field(step, "completion_tokens") or 0)
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        # A journal written before prices were kept has no cost: unknown where tokens were spent.
        cost = _field(step, "cost", None if prompt or completion else 0.0)
        self.priced_cost += float(_field(step, "priced_cost", cost) or 0.0)
        self.cost = None if self.cost is None or cost is None else self.cost + float(cost)
        self.calls += int(_field(step, "calls") or 0)
        self.cached_calls += int(_field(step, "cached_calls") or 0)
        self.rate_waited += float(_field(step, "rate_waited") or 0.0)

    @classmethod
    def of(cls, steps: Iterable[Mapping[str, Any] | StepResult]) -> Spend:
        total = cls()
        for step in steps:
            total.add(step)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self)}


@dataclass
class RunRecord:
    """A run as read back from its journal: what was asked, what each step last did, how it ended.

    `calls` is how many calls each endpoint received, per backend, summed over the run and its resumptions.
    `items` holds, per fan-out step, each item that finished (by index, with its digest and output).
    `spend` is what the whole run took over all its resumptions, each call counted once (see `_Tally`).
    `notes` are the router's retries, fallbacks, opened breakers, refusals and rate-limit waits,
    each as its `note` event (with `at` and `step_id`), in the order they happened.
    """

    id: str
    meta: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    status: str = "running"
    outputs: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    events: int = 0
    problem: str | None = None
    spend: Spend = field(default_factory=Spend)
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        """Whether the journal says how the (latest resumption of the) run ended."""
        return self.finished is not None

    @property
    def seconds(self) -> float | None:
        """How long the (latest resumption of the) run took; None until it ended."""
        return round(self.finished - self.started, 3) if self.finished and self.started else None

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for step in self.steps.values():
            state = TOLERATED if step.get("tolerated") else step["status"]  # a failure the run went on from
            counts[state] = counts.get(state, 0) + 1
        return {
            "id": self.id,
            "workflow": self.meta.get("workflow_name"),
            "status": self.status,
            "started": self.started,
            "seconds": self.seconds,
            "steps": counts,
            "problem": self.problem,
            "spend": self.spend.as_dict(),
        }

    def as_dict(self) -> dict[str, Any]:
        """The record's fields by name, for `dse show --json`: the run record of schemas/records.schema.json.

        It shares its keys with `dse run --json` (`workflow`, `seconds`, `steps` as a list in the workflow's order).

        Unlike `dataclasses.asdict` this does not deep-copy what the journal parsed (only `spend`
        is a dataclass), which for a fan-out of 10,000 items took longer than reading the journal:
        the nested dicts and lists are the record's own, not to be changed.
        """
        order = {step["id"]: n for n, step in enumerate(self.meta.get("graph") or [])}  # the workflow's order, as `dse run --json`
        return {
            **{f.name: getattr(self, f.name) for f in dataclass_fields(self)},
            "workflow": self.meta.get("workflow_name"),
            "seconds": self.seconds,
            "steps": sorted(self.steps.values(), key=lambda step: order.get(step["id"], len(order))),
            "spend": self.spend.as_dict(),
        }


def _field(record: Mapping[str, Any] | object, name: str, default: Any = None) -> Any:
    return record.get(name, default) if isinstance(record, Mapping) else getattr(record, name, default)


class _Tally:
    """A run's spend as its journal replays: every step execution once, and the items of a fan-out cut short.

    A step's `step_finished` holds all it spent in that invocation (a reused step writes none,
    a resumed fan-out counts only the items it sent again); the `item_finished` events of a
    fan-out that never finished (killed, then resumed) are the only trace of what its items
    spent, so they count until their step finishes in the same invocation.
    """

    def __init__(self, spend: Spend) -> None:
        self.spend = spend
        self.open_items: dict[str, Spend] = {}

    def invocation(self) -> None:
        for items in self.open_items.values():
            self.spend.add(items)
        self.open_items.clear()

    def item(self, event: Mapping[str, Any]) -> None:
        self.open_items.setdefault(event["id"], Spend()).add(event)

    def step(self, event: Mapping[str, Any]) -> None:
        self.open_items.pop(event["id"], None)
        self.spend.add(event)


def read_run(directory: Path, meta: dict[str, Any] | None = None) -> RunRecord:
    """Replay the events; a torn last line (the process died mid-write) is ignored, never fatal.

    A journal that is damaged otherwise (run.json is not the object `create` writes, a line
    before the last is not JSON, an event lacks what its kind needs) is an InputError located
    in the file: `dse show` says what is wrong, `dse runs` lists the run as unreadable.
    `meta` is run.json as `read_meta` returned it, when the caller has read it already. A run
    with no end event is `running` while its process lives (`is_running`), else `killed`.
    """
    record = RunRecord(directory.name, read_meta(directory / "run.json") if meta is None else meta)
    tally = _Tally(record.spend)
    events_path = directory / "events.jsonl"
    for line_number, event in _events(events_path):
        try:
            _replay(record, event, tally)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            why = f"the event has no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InputError(f"damaged run journal: {why}", location=Location(str(events_path), line_number)) from None
    tally.invocation()
    if not record.ended:
        record.status = "running" if is_running(directory) else "killed"
    return record


def read_meta(path: Path) -> dict[str, Any]:
    """A run's run.json, checked to be what `create` writes; an InputError located in it otherwise."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"damaged run journal: {exc.msg}", location=Location(str(path), exc.lineno, exc.colno)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read run journal: {exc}", location=Location(str(path))) from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), t) for k, t in _META_TYPES.items()):
        raise InputError(
            "damaged run journal: expected an object with " + ", ".join(f"{k} ({t.__name__})" for k, t in _META_TYPES.items()),
            location=Location(str(path), 1),
        )
    return meta


# What `RunJournal.create` always writes and `--resume` reads back.
_META_TYPES: dict[str, type] = {"workflow": str, "config": str, "inputs": dict}


def _replay(record: RunRecord, event: Any, tally: _Tally) -> None:
    """Apply one event to the record; a malformed one raises KeyError, TypeError, AttributeError or ValueError."""
    if not isinstance(event, dict):
        raise TypeError(f"a line holds a JSON {type(event).__name__}, not an event object")
    record.events += 1
    kind = event.get("event")
    at = event["at"]
    if not isinstance(at, (int, float)):
        raise TypeError(f"'at' is {type(at).__name__}, not a time")
    if kind in ("run_started", "run_resumed"):
        tally.invocation()
        record.status, record.finished = "running", None
        record.started = record.started or at
    elif kind == "step_finished":
        if not isinstance(event["id"], str) or not isinstance(event["status"], str):
            raise TypeError("a step_finished event needs a string id and status")
        record.steps[event["id"]] = event
        tally.step(event)
    elif kind == "item_finished":
        if not isinstance(event["id"], str) or not isinstance(event["index"], int) or not isinstance(event["digest"], str):
            raise TypeError("an item_finished event needs a string id and digest and an integer index")
        record.items.setdefault(event["id"], {})[event["index"]] = event
        tally.item(event)
    elif kind == "calls_per_endpoint":
        for backend, served in (event.get("calls") or {}).items():
            totals = record.calls.setdefault(backend, {})
            for url, count in served.items():
                totals[url] = totals.get(url, 0) + int(count)
    elif kind == "run_finished":
        record.status, record.outputs, record.finished = str(event["status"]), dict(event.get("outputs") or {}), at
    elif kind == "run_interrupted":
        record.status, record.finished = "interrupted", at
    elif kind == "note":
        record.notes.append(event)
    elif kind == "run_failed":
        record.status, record.finished = "failed", at
        record.outputs = {"error": event.get("error")}


def list_runs(state_dir: Path) -> list[RunRecord]:
    """Every run, newest first; `workflow.history.find_runs` reads only the ones a listing shows."""
    return [read_listed(state_dir / RUNS / run_id) for run_id in run_ids(state_dir)]


def read_listed(directory: Path, meta: dict[str, Any] | None = None) -> RunRecord:
    """`read_run` for a listing: a damaged journal is a run listed as unreadable, with why, not fatal."""
    try:
        return read_run(directory, meta)
    except InputError as exc:
        return RunRecord(directory.name, {}, status="unreadable", problem=str(exc))


def _events(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed line); only the last line may be torn, garbage before it is damage."""
    if not path.is_file():
        return
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")  # not splitlines(): U+2028 and friends are data inside a line
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read run journal: {exc}", location=Location(str(path))) from None
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise InputError(f"damaged run journal: {exc.msg}", location=Location(str(path), number, exc.colno)) from None


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
