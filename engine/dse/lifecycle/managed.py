"""Managed llama.cpp servers that outlive the command that started them (`dse models load`).

Their pids and URLs are recorded in `<state dir>/managed/<backend>.json`, which is how
`dse models unload` and `ps` find them later, and how a run adopts them instead of starting
servers of its own. A recorded pid is trusted only while /proc shows it is still a live
llama-server on the recorded port: pids are reused, and unload must never signal a stranger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from ..config.model import BackendConfig, ManagedSettings
from ..errors import StateFileUnusable
from ..local import LocalCluster

DIRECTORY = "managed"
_STOP_GRACE = 5.0
_POLL = 0.05


@dataclass(frozen=True)
class RecordedServer:
    pid: int
    url: str
    log: str

    def running(self) -> bool:
        """A live (not zombie) llama-server with this pid, listening on this record's port."""
        proc = Path(f"/proc/{self.pid}")
        try:
            state = (proc / "stat").read_text().rsplit(") ", 1)[1][:1]
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            return False
        port = str(urlparse(self.url).port)
        return state != "Z" and "llama-server" in argv[0] and port in argv

    def resident(self) -> int | None:
        """Bytes of memory the process holds (VmRSS), or None when /proc does not say."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None


@dataclass(frozen=True)
class Record:
    """What `dse models load` started for one backend, and with which settings."""

    backend: str
    model: str
    settings: dict[str, Any]
    servers: tuple[RecordedServer, ...]
    started: float

    def matches(self, managed: ManagedSettings) -> bool:
        """Started with the settings the config has now: otherwise a run must not take these servers for its own."""
        return self.settings == dataclasses.asdict(managed)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "servers": [dataclasses.asdict(s) for s in self.servers]}


def record_path(state_dir: Path, backend: str) -> Path:
    return state_dir / DIRECTORY / f"{backend}.json"


def read_record(state_dir: Path, backend: str) -> Record | None:
    path = record_path(state_dir, backend)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        servers = tuple(RecordedServer(int(s["pid"]), str(s["url"]), str(s["log"])) for s in data["servers"])
        return Record(str(data["backend"]), str(data["model"]), dict(data["settings"]), servers, float(data["started"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateFileUnusable(f"{path}: not a record of managed servers ({exc})", hint=f"stop the servers it lists by hand, then remove {path}") from None


def records(state_dir: Path) -> list[Record]:
    """Every recorded backend, by name."""
    found = [read_record(state_dir, path.stem) for path in sorted((state_dir / DIRECTORY).glob("*.json"))]
    return [r for r in found if r is not None]


async def start(backend: str, settings: ManagedSettings, state_dir: Path) -> Record:
    """Start the backend's replicas detached, wait until each is healthy, then record them."""
    cluster = LocalCluster(backend, settings, state_dir / "logs", detached=True)
    await cluster.start()
    servers = tuple(RecordedServer(s.pid, s.url, str(s.log_path)) for s in cluster.servers)
    record = Record(backend, settings.model, dataclasses.asdict(settings), servers, time.time())
    path = record_path(state_dir, backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record.as_dict(), indent=2), encoding="utf-8")
    partial.replace(path)
    return record


async def stop(state_dir: Path, record: Record) -> list[RecordedServer]:
    """SIGTERM every recorded server still running, SIGKILL any left after the grace period, then drop the record."""
    live = [s for s in record.servers if s.running()]
    for server in live:
        _signal(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE
    while any(s.running() for s in live) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL)
    for server in live:
        if server.running():
            _signal(server.pid, signal.SIGKILL)
    record_path(state_dir, record.backend).unlink(missing_ok=True)
    return live


async def healthy(server: RecordedServer, timeout: float = 2.0) -> bool:
    if not server.running():
        return False
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(timeout=timeout) as client:
            return (await client.get(f"{server.url}/health")).status_code == 200
    return False


async def all_healthy(record: Record, timeout: float = 2.0) -> bool:
    return all(await asyncio.gather(*(healthy(s, timeout) for s in record.servers)))


async def adopt(state_dir: Path, backend: BackendConfig) -> list[str] | None:
    """The URLs of this backend's loaded servers when a run can use them as they are: recorded with today's settings, all healthy."""
    if backend.managed is None:
        return None
    record = read_record(state_dir, backend.name)
    if record is None or not record.matches(backend.managed) or not await all_healthy(record):
        return None
    return [s.url for s in record.servers]


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
