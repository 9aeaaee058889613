"""Managed `llama-server` processes: started on free loopback ports, kept running, stopped without fail.

A server that outlives `dse` holds memory and a port until someone notices, so every process
is tied to us three ways: an explicit `stop()` on close (terminate, then kill), an `atexit`
hook for paths that skip it, and Linux's parent-death signal for a `dse` that is SIGKILLed.

A replica that dies while `dse` runs (the OOM killer, a crash) is started again by the
cluster's supervisor on the same port, because the router knows replicas by URL: calls in
flight there fail and are retried elsewhere, and once the replica answers again its circuit
breaker's half-open probe lets it back into the pool.
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
# How often the supervisor looks for dead replicas, and how it backs off restarting one that keeps dying.
_WATCH_INTERVAL = 0.2
_MAX_RESTARTS = 5
_RESTART_BACKOFF = 0.5
_MAX_RESTART_BACKOFF = 10.0


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
    """One running `llama-server`; `process` is replaced when the supervisor restarts it."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    command: list[str]
    restarts: int = 0
    terminating: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Ask it to exit, once: llama-server can hang on a second SIGTERM during its own shutdown."""
        if self.process.poll() is None and not self.terminating:
            self.terminating = True
            self.process.terminate()

    def stop(self, grace: float = 5.0) -> None:
        """Terminate, wait up to `grace` seconds, then kill: never leave it running."""
        if self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def note(self, line: str) -> None:
        """A line of our own in the replica's log, between llama-server's, so its history reads in one place."""
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"[dse {time.strftime('%H:%M:%S')}] {line}\n")


class LocalCluster:
    """The replicas of one managed backend: start them all, wait until each is healthy, restart any that dies.

    `detached` replicas (`dse models load`) outlive this process: no parent-death signal, no
    `atexit` stop and no supervisor; whoever records their pids stops them.
    """

    def __init__(self, backend: str, settings: ManagedSettings, log_dir: Path, *, detached: bool = False) -> None:
        self.backend = backend
        self.settings = settings
        self.log_dir = log_dir
        self.detached = detached
        self.servers: list[ManagedServer] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    async def start(self) -> list[str]:
        """Start every replica concurrently and return their URLs once all answer `/health` 200."""
        binary = find_llama_server(self.settings.binary)
        model = find_model(self.settings.model)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.detached:
            atexit.register(self.stop)
        outcomes = await asyncio.gather(
            *(self._start_one(binary, model, i) for i in range(self.settings.replicas)), return_exceptions=True
        )
        self.servers = [o for o in outcomes if isinstance(o, ManagedServer)]
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            self.stop()
            raise failure
        if not self.detached:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name=f"{self.backend} supervisor")
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
                *(["--embeddings", "--pooling", "mean"] if s.embeddings else []),
            ]  # fmt: skip
            server = ManagedServer(f"{self.backend}-{index}", f"http://{s.host}:{port}", _spawn(command, log_path, self.detached), log_path, command)
            try:
                await wait_healthy(server, s.startup_timeout)
                return server
            except BackendUnavailable:
                server.stop()
                if "address already in use" not in server.log_tail(40).lower():
                    raise
            except BaseException:
                server.stop()
                raise
        raise BackendUnavailable(f"{self.backend}: no free port after {_PORT_ATTEMPTS} attempts", backend=self.backend)

    async def _supervise(self) -> None:
        """Look for dead replicas every `_WATCH_INTERVAL` seconds and revive each in its own task."""
        reviving: dict[str, asyncio.Task[None]] = {}
        async with asyncio.TaskGroup() as group:
            while True:
                for server in self.servers:
                    task = reviving.get(server.name)
                    if not server.alive() and server.restarts < _MAX_RESTARTS and (task is None or task.done()):
                        reviving[server.name] = group.create_task(self._revive(server))
                await asyncio.sleep(_WATCH_INTERVAL)

    async def _revive(self, server: ManagedServer) -> None:
        """Start a dead replica again with the same command (so the same port), backing off between tries.

        Never raises: a replica that will not come back is logged and left out, and the breaker
        keeps calls away from it; the other replicas carry on.
        """
        while not (self._stopping or server.alive()) and server.restarts < _MAX_RESTARTS:
            server.restarts += 1
            delay = min(_MAX_RESTART_BACKOFF, _RESTART_BACKOFF * 2 ** (server.restarts - 1))
            server.note(
                f"{server.name} exited with code {server.process.returncode}; restarting it on {server.url} "
                f"in {delay:g}s (restart {server.restarts} of {_MAX_RESTARTS})"
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            server.process, server.terminating = _spawn(server.command, server.log_path), False
            try:
                await wait_healthy(server, self.settings.startup_timeout)
            except BackendUnavailable as exc:
                server.stop()
                server.note(f"restart {server.restarts} failed: {exc.message}")
                continue
            server.note(f"{server.name} is healthy again (pid {server.pid})")
            return
        if not (self._stopping or server.alive()):
            server.note(f"{server.name} stays down after {_MAX_RESTARTS} restarts; see the lines above")

    def stop(self) -> None:
        """Stop the supervisor, then every replica; safe to call twice, from `atexit`, or after a failed start."""
        self._stopping = True
        if self._supervisor is not None:
            with contextlib.suppress(RuntimeError):  # from `atexit`, the supervisor's event loop is already closed
                self._supervisor.cancel()
            self._supervisor = None
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            server.stop()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _spawn(command: list[str], log_path: Path, detached: bool = False) -> subprocess.Popen[bytes]:
    """Start `llama-server`, appending to its log; a detached one is not killed when `dse` exits.

    Always from the event loop's thread, never a worker thread: Linux sends the parent-death
    signal when the *thread* that forked the child exits, not the process.
    """
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if detached else _die_with_parent,
        )


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
