"""The ledger's running totals, which budget checks read instead of summing every row of a run or day.

Whatever rows are written, settled, answered from the cache or deleted by hand, `spent()` must
say what a sum over the rows says: a call in flight counts its worst case, an ended one its
cost, an unknown price nothing, and a cached answer neither spend nor a call.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dse.spend.ledger import FAILED, OK, PENDING, Ended, Spent, UsageLedger

Step = Callable[[UsageLedger], None]

RUNS = ("a", "b", None)
BACKENDS = ("x", "y")
money = st.one_of(st.none(), st.sampled_from([0.0, 1e-6, 0.25, 3.0]))


def begin(run: str | None, backend: str, reserved: float | None) -> Step:
    def step(ledger: UsageLedger) -> None:
        ledger.begin(run_id=run, step_id=None, backend=backend, model="m", reserved=reserved, rate_wait=0.0)
    return step


def settle(pick: int, outcome: str, cost: float | None) -> Step:
    def step(ledger: UsageLedger) -> None:
        ids = [row["id"] for row in ledger.rows()]
        if ids:
            ledger.settle(ids[pick % len(ids)], Ended("e", outcome, None, 1, 1, 0, 0.1, cost))
    return step


def hit(run: str | None, backend: str) -> Step:
    return lambda ledger: ledger.cache_hit(run_id=run, step_id=None, backend=backend, model="m")


def delete(pick: int) -> Step:
    """A row removed by hand with the sqlite3 shell: the totals follow."""
    def step(ledger: UsageLedger) -> None:
        ids = [row["id"] for row in ledger.rows()]
        if ids:
            ledger._db.execute("DELETE FROM calls WHERE id = ?", (ids[pick % len(ids)],))
    return step


steps = st.lists(
    st.one_of(
        st.builds(begin, st.sampled_from(RUNS), st.sampled_from(BACKENDS), money),
        st.builds(settle, st.integers(0, 40), st.sampled_from([OK, FAILED]), money),
        st.builds(hit, st.sampled_from(RUNS), st.sampled_from(BACKENDS)),
        st.builds(delete, st.integers(0, 40)),
    ),
    max_size=40,
)


def summed(ledger: UsageLedger, column: str, value: str, backend: str | None) -> Spent:
    """What the rows themselves say, counted the way a budget counts them: an ended call of unknown cost counts its worst case."""
    rows = [
        r for r in ledger.rows() if r[column] == value and not r["from_cache"] and backend in (None, r["backend"])
    ]
    counted = (r["reserved"] if r["outcome"] == PENDING else r["cost"] if r["cost"] is not None else r["reserved"] for r in rows)
    return Spent(sum(usd or 0.0 for usd in counted), len(rows))


@settings(max_examples=60, deadline=None)
@given(steps)
def test_spent_is_what_the_rows_add_up_to_after_any_writes(writes: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        ledger = UsageLedger(Path(directory) / "usage.db")
        try:
            for write in writes:
                write(ledger)
            scopes = [("run_id", run) for run in ("a", "b")] + [("day", day) for day in {r["day"] for r in ledger.rows()}]
            for column, value in scopes:
                for backend in (None, *BACKENDS):
                    got = ledger.spent(backend=backend, **{column: value})
                    want = summed(ledger, column, value, backend)
                    assert got.calls == want.calls and abs(got.usd - want.usd) < 1e-9, (column, value, backend, got, want)
        finally:
            ledger.close()


def test_an_answer_of_unknown_cost_holds_its_worst_case_against_a_budget(tmp_path: Path) -> None:
    """Counting it as nothing would let a server that never reports usage spend past any budget."""
    ledger = UsageLedger(tmp_path / "usage.db")
    try:
        row = ledger.begin(run_id="a", step_id=None, backend="x", model="m", reserved=0.5, rate_wait=0.0)
        ledger.settle(row, Ended("e", OK, None, 0, 0, 0, 0.1, None))
        assert ledger.spent(run_id="a").usd == 0.5
    finally:
        ledger.close()


def test_a_ledger_written_by_an_older_dse_gets_this_versions_triggers(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    UsageLedger(path).close()
    with sqlite3.connect(path) as db:  # what an older dse left: its own trigger, counting every row twice
        db.execute("CREATE TRIGGER calls_added AFTER INSERT ON calls BEGIN UPDATE totals SET usd = usd * 2; END")
    ledger = UsageLedger(path)
    try:
        names = {name for (name,) in ledger._run("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()}
        assert names == {"calls_added_2", "calls_settled_2", "calls_removed_2"}
    finally:
        ledger.close()
