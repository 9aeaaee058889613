"""Pull progress on stderr: a bar per layer on a terminal (rich), plain lines when piped.

Piped output is read by people scrolling a CI log, so it gets one line per status change and
one per tenth of each layer downloaded, never a line per progress event (Ollama sends many a second).
"""

from __future__ import annotations

from typing import Any, TextIO

from .fit import size_text

_STEP = 10  # percent between plain progress lines


class PullProgress:
    def __init__(self, model: str, stream: TextIO) -> None:
        self.model = model
        self.stream = stream
        self._status: dict[str, str] = {}
        self._shown: dict[tuple[str, str], int] = {}
        self._bars: Any = None
        self._tasks: dict[tuple[str, str], Any] = {}
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            self._bars = Progress(*columns, console=Console(file=stream))
            self._bars.start()

    def __call__(self, endpoint: str, event: dict[str, Any]) -> None:
        status = str(event.get("status") or "")
        if endpoint not in self._status:
            self._say(f"pulling {self.model} on {endpoint}")
        digest, total = event.get("digest"), event.get("total")
        if digest and isinstance(total, int) and total > 0:
            self._layer(endpoint, status, str(digest), total, int(event.get("completed") or 0))
        elif status != self._status.get(endpoint):
            self._say(status)
        self._status[endpoint] = status

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def _layer(self, endpoint: str, status: str, digest: str, total: int, completed: int) -> None:
        key = (endpoint, digest)
        if self._bars is not None:
            if key not in self._tasks:
                self._tasks[key] = self._bars.add_task(status, total=total)
            self._bars.update(self._tasks[key], completed=completed)
            return
        percent = min(100, completed * 100 // total)
        step = percent // _STEP * _STEP
        if step > self._shown.get(key, -1):
            self._shown[key] = step
            self._say(f"{status}: {percent}% of {size_text(total)}")

    def _say(self, line: str) -> None:
        if self._bars is not None:
            self._bars.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)
