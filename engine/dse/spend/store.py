"""The SQLite files spend control keeps under the state directory: opened one way, their failures said one way.

WAL lets one process read while another writes; a writer waits up to 30 s for another's
statement rather than fail; `synchronous=NORMAL` commits without waiting for the disk, which
keeps a committed row through a crash of dse (not of the machine) at a fraction of the cost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StateFileUnusable


@contextmanager
def guarded(path: Path, what: str, hint: str) -> Iterator[None]:
    """SQLite's and the file system's errors as one that names the file and what to do, not a traceback."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StateFileUnusable(f"the {what} {path} cannot be used: {exc}", hint=hint) from exc


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode with `schema` in place; raises what `guarded` catches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
