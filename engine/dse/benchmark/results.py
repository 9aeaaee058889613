"""What `dse bench` measured, kept in `<state dir>/bench.db`: one row per (backend, model) per bench.

Every bench adds rows and none is overwritten, so a user can compare today's figures with
last month's in SQLite; the selector reads only the newest generation speed of each
(backend, model). Reading never creates the file: planning in a directory that was never
benched writes nothing there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..routing.catalog import MeasuredSpeed
from ..spend import store

FILE = "bench.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    measured_at REAL NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    runs INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    ttft REAL,
    generation_tps REAL,
    prompt_tps REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    vram_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS measurements_newest ON measurements (backend, model, measured_at);
"""
_COLUMNS = (
    "measured_at", "backend", "model", "endpoint", "runs", "calls", "ttft", "generation_tps", "prompt_tps",
    "prompt_tokens", "completion_tokens", "vram_bytes",
)
_HINT = "remove it: the next `dse bench` writes a new one (the selector then uses catalog speeds until it does)"


@dataclass(frozen=True)
class Measurement:
    """One (backend, model)'s figures from one bench: medians over every timed call, or why there are none.

    `ttft` is seconds to the first token; `generation_tps` the tokens after the first over
    the time after the first; `prompt_tps` the prompt's tokens over the time to the first
    token (for a remote API mostly network latency). `endpoint` is each endpoint that
    answered, comma-separated; `vram_bytes` what the server says the model holds in GPU
    memory, None where it does not say (llama.cpp never does).
    """

    backend: str
    model: str
    measured_at: float
    runs: int
    endpoint: str = ""
    calls: int = 0
    ttft: float | None = None
    generation_tps: float | None = None
    prompt_tps: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    vram_bytes: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def save(state_dir: Path, measurements: list[Measurement]) -> Path:
    """Add the measurements that have figures; one that failed is reported, never kept."""
    path = state_dir / FILE
    rows = [tuple(getattr(m, name) for name in _COLUMNS) for m in measurements if m.error is None]
    with store.guarded(path, "bench results file", _HINT):
        db = store.connect(path, _SCHEMA)
        try:
            db.executemany(f"INSERT INTO measurements ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        finally:
            db.close()
    return path


def measured_speeds(state_dir: Path) -> dict[tuple[str, str], MeasuredSpeed]:
    """The newest measured generation speed of each (backend, model); empty where nothing was benched."""
    path = state_dir / FILE
    if not path.is_file():
        return {}
    with store.guarded(path, "bench results file", _HINT):
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT backend, model, generation_tps, MAX(measured_at) FROM measurements "
                "WHERE generation_tps IS NOT NULL GROUP BY backend, model"
            ).fetchall()
        finally:
            db.close()
    return {(backend, model): MeasuredSpeed(tps, at) for backend, model, tps, at in rows}
