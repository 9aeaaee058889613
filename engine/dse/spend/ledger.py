"""The usage ledger: one SQLite row for every attempt a router makes, at `<state dir>/usage.db`.

Where a budget or a daily request limit applies, a row is written when the attempt is admitted
(`pending`, holding its worst-case cost against the limit for every process) and settled when
it ends; elsewhere it is written once, when it ends. It ends `ok`, `failed`, or `interrupted`
by Ctrl-C, and is committed at once, so a run that is stopped leaves no attempt unrecorded. Budgets read their spend here, in the same
transaction that admits a call, which is what makes a limit hold across runs and processes.
The file is plain SQLite: `sqlite3 .dse/usage.db 'select * from calls'` works.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from . import store

FILE = "usage.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    day TEXT NOT NULL,
    run_id TEXT,
    step_id TEXT,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    latency REAL,
    outcome TEXT NOT NULL,
    error_kind TEXT,
    cost REAL,
    reserved REAL,
    from_cache INTEGER NOT NULL DEFAULT 0,
    rate_wait REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_day ON calls (day, backend);
CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id);
CREATE TABLE IF NOT EXISTS totals (
    scope TEXT NOT NULL,
    backend TEXT NOT NULL,
    usd REAL NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (scope, backend)
) WITHOUT ROWID;
"""

PENDING, OK, FAILED, INTERRUPTED = "pending", "ok", "failed", "interrupted"


def _counted(row: str) -> str:
    """What a row counts against a budget: a call in flight its worst case, an ended one its cost, or its worst case while that is unknown."""
    return f"COALESCE(CASE WHEN {row}.outcome = '{PENDING}' THEN {row}.reserved ELSE COALESCE({row}.cost, {row}.reserved) END, 0)"


def _add(row: str, usd: str, calls: str) -> str:
    """A trigger statement adding to the totals of the row's backend in its run and on its day."""
    return f"""
    INSERT INTO totals (scope, backend, usd, calls)
    SELECT scope, {row}.backend, {usd}, {calls} FROM (SELECT 'day:' || {row}.day AS scope UNION ALL SELECT 'run:' || {row}.run_id)
    WHERE scope IS NOT NULL
    ON CONFLICT (scope, backend) DO UPDATE SET usd = usd + excluded.usd, calls = calls + excluded.calls;"""


# The triggers carry a version: a ledger written by an older dse gets this version's in place of
# its own, in one transaction, so no row is written between the two without one.
_TOTALS = f"""
BEGIN IMMEDIATE;
DROP TRIGGER IF EXISTS calls_added;
DROP TRIGGER IF EXISTS calls_settled;
DROP TRIGGER IF EXISTS calls_removed;
CREATE TRIGGER IF NOT EXISTS calls_added_2 AFTER INSERT ON calls WHEN NOT NEW.from_cache
BEGIN {_add("NEW", _counted("NEW"), "1")} END;
CREATE TRIGGER IF NOT EXISTS calls_settled_2 AFTER UPDATE OF outcome, cost, reserved ON calls WHEN NOT NEW.from_cache
BEGIN {_add("NEW", f"{_counted('NEW')} - {_counted('OLD')}", "0")} END;
CREATE TRIGGER IF NOT EXISTS calls_removed_2 AFTER DELETE ON calls WHEN NOT OLD.from_cache
BEGIN {_add("OLD", f"-{_counted('OLD')}", "-1")} END;
COMMIT;
"""
"""Spend per run and per day for each backend, kept by SQLite in the statement that writes a row.

So a budget check reads a row per backend however long the ledger grows, and every process's
rows count, in its own transaction. Answers from the cache count nowhere; a row is settled,
never moved to another run, day or backend.
"""

GROUPS = {"backend": "backend", "model": "backend || ':' || model", "day": "day", "run": "run_id", "step": "run_id || '/' || step_id"}


def today(at: float | None = None) -> str:
    """The local calendar day a per-day limit counts in."""
    return time.strftime("%Y-%m-%d", time.localtime(at))


@dataclass(frozen=True)
class Ended:
    """How an attempt ended, as its row keeps it."""

    endpoint: str | None
    outcome: str
    error_kind: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    latency: float
    cost: float | None

    def values(self) -> tuple[Any, ...]:
        return astuple(self)


@dataclass(frozen=True)
class Spent:
    """What counts against a limit: USD spent (or held by calls in flight) and calls made."""

    usd: float
    calls: int


class UsageLedger:
    """One open connection; every method is one short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self.guarded():
            self._db = store.connect(path, _SCHEMA + _TOTALS)

    def guarded(self) -> AbstractContextManager[None]:
        """Around every use: a damaged file or a full disk is an error naming the file, not a traceback."""
        hint = f"move {self.path} aside (it is the record of past calls' tokens and cost); the next run starts a new one"
        return store.guarded(self.path, "usage ledger", hint)

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self.guarded():
            return self._db.execute(sql, args)

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front, so a check and the row it admits are one step for every process."""
        self._run("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._run("ROLLBACK")
            raise
        self._run("COMMIT")

    def spent(self, *, run_id: str | None = None, day: str | None = None, backend: str | None = None) -> Spent:
        """What counts against a limit in one run or on one day, for one backend or (None) all of them."""
        assert (run_id is None) != (day is None), "a limit counts in one run or on one day"
        scope = f"run:{run_id}" if run_id is not None else f"day:{day}"
        only, args = ("AND backend = ?", (scope, backend)) if backend is not None else ("", (scope,))
        usd, calls = self._run(f"SELECT COALESCE(SUM(usd), 0), COALESCE(SUM(calls), 0) FROM totals WHERE scope = ? {only}", args).fetchone()
        return Spent(float(usd), int(calls))

    @contextmanager
    def admitting(self) -> Iterator[UsageLedger]:
        """Checks made inside see every process's rows, and no other process writes until the row is in."""
        with self._immediate():
            yield self

    def begin(self, *, run_id: str | None, step_id: str | None, backend: str, model: str, reserved: float | None, rate_wait: float) -> int:
        """A pending row for an attempt about to be sent; its id settles it."""
        now = time.time()
        cursor = self._run(
            "INSERT INTO calls (at, day, run_id, step_id, backend, model, outcome, reserved, rate_wait) VALUES (?,?,?,?,?,?,?,?,?)",
            (now, today(now), run_id, step_id, backend, model, PENDING, reserved, rate_wait),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def settle(self, row: int, ended: Ended) -> None:
        self._run(
            "UPDATE calls SET endpoint=?, outcome=?, error_kind=?, input_tokens=?, output_tokens=?, cached_tokens=?, latency=?, cost=? WHERE id=?",
            (*ended.values(), row),
        )

    def record(self, *, run_id: str | None, step_id: str | None, backend: str, model: str, rate_wait: float, ended: Ended) -> None:
        """An attempt no limit had to hold a place for, written once when it ended: one commit instead of two."""
        now = time.time() - ended.latency
        self._run(
            "INSERT INTO calls (at, day, run_id, step_id, backend, model, rate_wait, endpoint, outcome, error_kind,"
            " input_tokens, output_tokens, cached_tokens, latency, cost) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (now, today(now), run_id, step_id, backend, model, rate_wait, *ended.values()),
        )

    def cache_hit(self, *, run_id: str | None, step_id: str | None, backend: str, model: str) -> None:
        """A call answered from the response cache: nothing was sent, nothing was spent."""
        now = time.time()
        self._run(
            "INSERT INTO calls (at, day, run_id, step_id, backend, model, endpoint, outcome, cost, from_cache, latency)"
            " VALUES (?,?,?,?,?,?,?,?,0,1,0)",
            (now, today(now), run_id, step_id, backend, model, "cache", OK),
        )

    def report(
        self, *, by: Sequence[str] = (), since: float | None = None, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Totals per group (`GROUPS`), in the groups' order (oldest day first); `cost` is None where some row's price is unknown."""
        where, args = _where(run_id=run_id, since=since)
        keys = [f"{GROUPS[name]} AS {name}" for name in by]
        select = ", ".join(
            [
                *keys,
                "COUNT(*) AS attempts",
                "SUM(from_cache) AS cached_calls",
                f"SUM(outcome = '{OK}' AND from_cache = 0) AS ok",
                f"SUM(outcome = '{FAILED}') AS failed",
                f"SUM(outcome = '{INTERRUPTED}') AS interrupted",
                f"SUM(outcome = '{PENDING}') AS pending",
                "COALESCE(SUM(input_tokens), 0) AS input_tokens",
                "COALESCE(SUM(output_tokens), 0) AS output_tokens",
                "COALESCE(SUM(cached_tokens), 0) AS cached_tokens",
                "COALESCE(SUM(cost), 0) AS priced_cost",
                f"SUM(cost IS NULL AND outcome != '{PENDING}') AS unpriced",
                "COALESCE(SUM(latency), 0) AS latency",
                "MIN(at) AS first_at",
                "MAX(at) AS last_at",
            ]
        )
        group = f"GROUP BY {', '.join(by)} ORDER BY {', '.join(by)}" if by else ""
        rows = self._run(f"SELECT {select} FROM calls {where} {group}", args)
        names = [d[0] for d in rows.description]
        out = []
        for values in rows.fetchall():
            row = dict(zip(names, values))
            if row["attempts"] == 0:
                continue
            row["cost"] = None if row["unpriced"] else row["priced_cost"]
            out.append(row)
        return out

    def rows(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every row, oldest first: the raw ledger, for tests and scripts."""
        where, args = _where(run_id=run_id)
        cursor = self._run(f"SELECT * FROM calls {where} ORDER BY id", args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]


def _where(*, run_id: str | None = None, since: float | None = None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if run_id is not None:
        clauses.append("run_id = ?")
        args.append(run_id)
    if since is not None:
        clauses.append("at >= ?")
        args.append(since)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args
