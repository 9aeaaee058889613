"""The recorded runs as a history: a filtered listing that reads only what it shows, and pruning.

Run ids sort by start time, so "the newest N" is the first N directory names in reverse order.
A listing reads a run's small run.json to filter by workflow or start time and replays its
events only for a run it may show; pruning reads no events at all. Neither ever touches a run
that is still running: its process holds the journal's lock (see `journal.is_running`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .journal import RUNS, RunRecord, created_at, held, read_listed, read_meta, run_ids

STATUSES = ("done", "failed", "interrupted", "running", "killed", "unreadable")
"""What `RunRecord.status` can be, as a listing filters on it."""


@dataclass(frozen=True)
class RunQuery:
    """Which runs to list: the newest `limit` (None for all) that pass every filter given.

    `workflow` matches the workflow's `name:` or its file's name (with or without `.yaml`);
    `since` (epoch seconds) keeps runs started then or later.
    """

    limit: int | None = None
    status: str | None = None
    workflow: str | None = None
    since: float | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InputError(f"--status {self.status!r}: expected one of {', '.join(STATUSES)}")

    def filters_meta(self) -> bool:
        return self.workflow is not None or self.since is not None

    def takes_meta(self, meta: dict[str, Any]) -> bool:
        """Whether run.json keeps the run in: its workflow, and its start where it records one."""
        if self.workflow is not None:
            path = Path(str(meta.get("workflow", "")))
            if self.workflow not in (meta.get("workflow_name"), path.name, path.stem):
                return False
        created = created_at(meta)
        return self.since is None or created is None or created >= self.since

    def takes(self, record: RunRecord) -> bool:
        """Whether the replayed run is kept: its status, and its start where run.json had none."""
        if self.since is not None and created_at(record.meta) is None and (record.started or 0.0) < self.since:
            return False
        return self.status is None or record.status == self.status


@dataclass
class RunListing:
    """The runs a query found, newest first; `more` when the limit stopped it before every run was looked at."""

    records: list[RunRecord] = field(default_factory=list)
    more: bool = False


def find_runs(state_dir: Path, query: RunQuery) -> RunListing:
    """The runs `query` selects, reading each journal's events only once its run.json passed the filters."""
    listing = RunListing()
    for run_id in run_ids(state_dir):
        if query.limit is not None and len(listing.records) >= query.limit:
            listing.more = True
            break
        directory = state_dir / RUNS / run_id
        try:
            meta = read_meta(directory / "run.json")
        except InputError as exc:
            record = RunRecord(run_id, {}, status="unreadable", problem=str(exc))
            if not query.filters_meta() and query.takes(record):
                listing.records.append(record)
            continue
        if query.takes_meta(meta):
            record = read_listed(directory, meta)
            if query.takes(record):
                listing.records.append(record)
    return listing


@dataclass(frozen=True)
class PrunedRun:
    """A run pruning removed (or, in a dry run, would remove): `written` is when its journal was last written."""

    id: str
    workflow: str | None
    written: float
    bytes: int


@dataclass
class Pruning:
    """What `prune_runs` did: the runs removed, those it selected but kept because they are still running, the rest kept."""

    removed: list[PrunedRun] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    kept: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [vars(run) for run in self.removed],
            "bytes": sum(run.bytes for run in self.removed),
            "running": self.running,
            "kept": self.kept,
        }


def prune_runs(state_dir: Path, *, keep: int | None = None, before: float | None = None, dry_run: bool = False) -> Pruning:
    """Remove old runs: those beyond the newest `keep`, those whose journal was last written before `before`.

    Given both, a run goes only when both select it: the newest `keep` are kept whatever their
    age, and so is every run written since `before`. A run still running is never removed: the
    lock its process holds is taken before anything is deleted, so a resumption cannot start
    on a run half gone either.
    """
    if keep is None and before is None:
        raise InputError("dse runs prune needs --keep N, --older-than SPAN|DATE, or both", hint="dse runs prune --keep 20 --dry-run")
    ids = run_ids(state_dir)
    pruning = Pruning(dry_run=dry_run, kept=min(len(ids), keep or 0))
    for run_id in ids[keep or 0 :]:
        directory = state_dir / RUNS / run_id
        written = _written(directory)
        if before is not None and written >= before:
            pruning.kept += 1
            continue
        with held(directory) as claimed:
            if not claimed:
                pruning.running.append(run_id)
                pruning.kept += 1
                continue
            pruned = PrunedRun(run_id, _workflow_name(directory), written, _size(directory))
            if not dry_run:
                try:
                    shutil.rmtree(directory)
                except OSError as exc:
                    raise InputError(f"cannot remove run {run_id}: {exc.strerror or exc}", hint=f"removed before it: {len(pruning.removed)} runs") from None
            pruning.removed.append(pruned)
    return pruning


def _written(directory: Path) -> float:
    """When the run's journal was last written to (its files' newest modification time)."""
    times = [path.stat().st_mtime for path in (directory / "events.jsonl", directory / "run.json") if path.exists()]
    return max(times, default=directory.stat().st_mtime)


def _workflow_name(directory: Path) -> str | None:
    try:
        return str(read_meta(directory / "run.json").get("workflow_name") or "") or None
    except InputError:
        return None


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
