"""Shared test helpers: run the real `dse` command, watch llama-server processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "config.yaml"


def run_dse(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`dse ARGS` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "dse", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def llama_server_pids() -> set[int]:
    """Every live llama-server process on this machine, read from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"llama-server" in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                if (entry / "stat").read_text().split(") ", 1)[1][0] != "Z":
                    pids.add(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
