"""`dse serve` in a subprocess, as a user runs it, for the gateway's tests and benchmark.

The server is started with `--port 0 --json`, so the first line it prints is the URL it took;
stopping sends SIGTERM, as a process manager does, and waits for the drain to finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

STARTUP_TIMEOUT = 180.0  # managed llama-servers load their model first


class ServedGateway:
    """`with ServedGateway(config, state_dir) as gw:` then `gw.url`; `gw.stderr()` is what it printed so far."""

    def __init__(self, config: Path, state_dir: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.state_dir = state_dir
        self.env = env or {}
        self.args = args
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []
        self.exit_code: int | None = None

    def __enter__(self) -> ServedGateway:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dse", "serve", "--config", str(self.config), "--port", "0", "--json", "--state-dir", str(self.state_dir), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
        )
        threading.Thread(target=self._drain_stderr, daemon=True, name="gateway-stderr").start()
        line = self._first_line()
        self.url = json.loads(line)["url"]
        return self

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        if not found or not found[0]:
            self.stop()
            raise RuntimeError(f"dse serve did not start:\n{self.stderr()}")
        return found[0]

    def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def stderr(self) -> str:
        return "".join(self._stderr)

    def children(self) -> set[int]:
        """The pids of the processes `dse serve` started itself (its managed llama-servers), read from /proc."""
        assert self.process is not None
        found: set[int] = set()
        for task in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            found |= {int(pid) for pid in task.read_text().split()}
        return found

    def terminate(self) -> None:
        """SIGTERM, as a process manager stops it; `wait()` for the drain to end."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 120.0) -> int:
        assert self.process is not None
        self.exit_code = self.process.wait(timeout)
        return self.exit_code

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.wait()
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
