"""The run journal: an append-only, fsync'd record of everything a run did.

One directory per run (`.dse/runs/<id>/`): `run.json` says what was asked (workflow, inputs,
config), `events.jsonl` says what happened, one JSON line per event, flushed to disk before
the next step can depend on it. A run killed with SIGKILL therefore loses nothing that had
finished, and `dse run --resume <id>` knows exactly what to redo. Lines are plain JSON so
`jq` and `grep` work on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

RUNS = "runs"


def new_run_id() -> str:
    """Sortable by start time, unique without coordination: `20261122-043012-3f9a`."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + secrets.token_hex(2)


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class RunJournal:
    """Writes one run's journal; every write is durable before it returns."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.run_id = directory.name
        self._events = open(directory / "events.jsonl", "a", encoding="utf-8")

    @classmethod
    def create(
        cls, state_dir: Path, *, workflow: str, workflow_name: str, config: str, inputs: Mapping[str, Any]
    ) -> RunJournal:
        run_id = new_run_id()
        directory = state_dir / RUNS / run_id
        directory.mkdir(parents=True, exist_ok=False)
        meta = {
            "id": run_id,
            "workflow": str(Path(workflow).resolve()),
            "workflow_name": workflow_name,
            "workflow_digest": file_digest(workflow),
            "config": str(Path(config).resolve()),
            "inputs": dict(inputs),
            "created": time.time(),
        }
        _write_atomic(directory / "run.json", meta)
        return cls(directory)

    @classmethod
    def reopen(cls, state_dir: Path, run_id: str) -> RunJournal:
        return cls(run_directory(state_dir, run_id))

    def event(self, name: str, /, **fields: Any) -> None:
        """Append one event and fsync it, so a crash right after still leaves it on disk."""
        line = json.dumps({"event": name, "at": time.time(), **fields}, default=str, ensure_ascii=False)
        self._events.write(line + "\n")
        self._events.flush()
        os.fsync(self._events.fileno())

    def close(self) -> None:
        self._events.close()


def run_directory(state_dir: Path, run_id: str) -> Path:
    directory = state_dir / RUNS / run_id
    if not (directory / "run.json").is_file():
        known = [r.id for r in list_runs(state_dir)][:5]
        raise InputError(
            f"no run {run_id!r} in {state_dir / RUNS}",
            hint=f"recent runs: {', '.join(known)}" if known else "`dse runs` lists the runs",
        )
    return directory


@dataclass
class RunRecord:
    """A run as read back from its journal: what was asked, what each step last did, how it ended.

    `calls` is how many calls each endpoint served, per backend, summed over the run and its resumptions.
    """

    id: str
    meta: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "running"
    outputs: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    events: int = 0

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for step in self.steps.values():
            counts[step["status"]] = counts.get(step["status"], 0) + 1
        return {
            "id": self.id,
            "workflow": self.meta.get("workflow_name"),
            "status": self.status,
            "started": self.started,
            "seconds": round(self.finished - self.started, 3) if self.finished and self.started else None,
            "steps": counts,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_run(directory: Path) -> RunRecord:
    """Replay the events; a torn last line (the process died mid-write) is ignored, never fatal."""
    meta = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    record = RunRecord(directory.name, meta)
    for event in _events(directory / "events.jsonl"):
        record.events += 1
        kind = event.get("event")
        if kind in ("run_started", "run_resumed"):
            record.status = "running"
            record.started = record.started or event["at"]
        elif kind == "step_finished":
            record.steps[event["id"]] = event
        elif kind == "calls_per_endpoint":
            for backend, served in (event.get("calls") or {}).items():
                totals = record.calls.setdefault(backend, {})
                for url, count in served.items():
                    totals[url] = totals.get(url, 0) + count
        elif kind == "run_finished":
            record.status, record.outputs, record.finished = event["status"], event.get("outputs", {}), event["at"]
        elif kind == "run_interrupted":
            record.status, record.finished = "interrupted", event["at"]
        elif kind == "run_failed":
            record.status, record.finished = "failed", event["at"]
            record.outputs = {"error": event.get("error")}
    if record.status == "running" and record.events:
        record.status = "running or killed"
    return record


def list_runs(state_dir: Path) -> list[RunRecord]:
    root = state_dir / RUNS
    if not root.is_dir():
        return []
    runs = [read_run(d) for d in sorted(root.iterdir(), reverse=True) if (d / "run.json").is_file()]
    return runs


def _events(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
