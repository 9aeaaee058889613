"""Managed `llama-server` processes: started on free loopback ports, stopped without fail.

A server that outlives `dse` holds memory and a port until someone notices, so every process
is tied to us three ways: an explicit `stop()` on close (terminate, then kill), an `atexit`
hook for paths that skip it, and Linux's parent-death signal for a `dse` that is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..config.model import ManagedSettings
from ..errors import BackendUnavailable
from .assets import BUNDLED_MODELS, find_llama_server, find_model

_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3


def free_port(host: str) -> int:
    """A port the OS says is free now; `llama-server` may still lose a race for it, so callers retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: kill it when `dse` dies, however it dies.

    SIGKILL, not SIGTERM: the kernel sends this signal again each time a thread of the parent
    exits, and llama-server hangs on a second SIGTERM during its own shutdown.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ManagedServer:
    """One running `llama-server`."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """Terminate, wait up to `grace` seconds, then kill: never leave it running."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class LocalCluster:
    """The replicas of one managed backend: start them all, wait until each is healthy."""

    def __init__(self, backend: str, settings: ManagedSettings, log_dir: Path) -> None:
        self.backend = backend
        self.settings = settings
        self.log_dir = log_dir
        self.servers: list[ManagedServer] = []

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    async def start(self) -> list[str]:
        """Start every replica concurrently and return their URLs once all answer `/health` 200."""
        binary = find_llama_server(self.settings.binary)
        model = find_model(self.settings.model)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self.servers = list(
                await asyncio.gather(*(self._start_one(binary, model, i) for i in range(self.settings.replicas)))
            )
        except BaseException:
            self.stop()
            raise
        return self.urls

    async def _start_one(self, binary: Path, model: Path, index: int) -> ManagedServer:
        s = self.settings
        log_path = self.log_dir / f"{self.backend}-{index}.log"
        for _ in range(_PORT_ATTEMPTS):
            port = free_port(s.host)
            command = [
                str(binary),
                "--model", str(model),
                "--host", s.host,
                "--port", str(port),
                "--threads", str(s.threads),
                "--threads-batch", str(s.threads),
                "--ctx-size", str(s.ctx_size * s.parallel),
                "--parallel", str(s.parallel),
                "--alias", s.model if s.model in BUNDLED_MODELS else model.stem,
                "--no-webui",
                "--metrics",
                "--repeat-penalty", str(s.repeat_penalty),
            ]  # fmt: skip
            with open(log_path, "ab") as log:
                log.write(f"$ {' '.join(command)}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            server = ManagedServer(f"{self.backend}-{index}", f"http://{s.host}:{port}", process, log_path)
            try:
                await wait_healthy(server, s.startup_timeout)
                return server
            except BackendUnavailable:
                server.stop()
                if "address already in use" not in server.log_tail(40).lower():
                    raise
        raise BackendUnavailable(f"{self.backend}: no free port after {_PORT_ATTEMPTS} attempts", backend=self.backend)

    def stop(self) -> None:
        """Stop every replica; safe to call twice, from `atexit`, or after a failed start."""
        for server in self.servers:
            server.stop()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


async def wait_healthy(server: ManagedServer, timeout: float) -> None:
    """Poll `/health` until 200; 503 means the model is still loading, a dead process is an error."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise BackendUnavailable(
                    f"{server.name} exited with code {server.process.returncode} while starting",
                    backend=server.name,
                    hint=f"its log ({server.log_path}) ends with:\n{server.log_tail()}",
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{server.url}/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise BackendUnavailable(
        f"{server.name} did not become healthy within {timeout:g}s",
        backend=server.name,
        hint=f"raise managed.startup_timeout, or read {server.log_path}",
    )
