"""Running the gateway: check who may connect, start the managed backends, serve, drain on SIGTERM, stop everything.

Uvicorn serves the Starlette routes on this process's event loop (uvloop where installed;
Uvicorn picks httptools itself where installed), beside the engine, so a request reaches the
router without crossing a thread. On SIGTERM or Ctrl-C the listening socket closes, requests
in flight finish (up to `serve.drain_timeout`), then the managed llama.cpp servers are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ..config.model import Config
from ..benchmark import measured_speeds
from ..engine import Engine
from ..errors import InputError, SetupError
from ..spend import SpendPlan, SpendSession
from .gateway import Gateway
from .health import HealthWatch
from .metrics import Metrics


@dataclass(frozen=True)
class Listening:
    """What `dse serve` announces once it takes connections."""

    url: str
    backends: tuple[str, ...]
    keys: int
    loopback_only: bool


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(config: Config, host: str) -> None:
    """Refuse, before anything starts, a gateway that would be open to the network without a key, or short of a key."""
    serve = config.serve
    if serve.unset_keys:
        raise InputError(
            f"serve.api_keys cannot be used: {'; '.join(serve.unset_keys)}",
            hint="set it (or remove that key from serve.api_keys); dse serve does not start with fewer keys than the config names",
        )
    if not serve.api_keys and not _loopback(host):
        raise InputError(
            f"refusing to listen on {host} without serve.api_keys: anyone who can reach it could spend on your backends",
            hint="add serve.api_keys (as ${VAR}) to the config, or listen on 127.0.0.1",
        )


def require_stack() -> None:
    """The ASGI stack is an optional extra: without it, say which command installs it."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise SetupError(
            "dse serve needs its optional web stack (Starlette on Uvicorn), which is not installed",
            hint="pip install 'dse[serve]'",
        ) from None


# Streams still open this long before the drain ends are closed with an error event of their own,
# so that none is cut off mid-answer when Uvicorn cancels what is left.
_CLOSING_MARGIN = 1.0


def _stack_server(gateway: Gateway, drain: float) -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """Uvicorn's server, draining on SIGTERM and SIGINT without raising the signal again afterwards.

        Uvicorn re-raises a signal it caught once it has shut down; here the caller still has
        managed servers to stop, so the shutdown ends in a normal return instead. The first
        signal also tells the gateway when open streams must end.
        """

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                gateway.streams_end_by = time.monotonic() + max(drain - _CLOSING_MARGIN, 0.0)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


async def serve(config: Config, host: str, port: int, state_dir: Path, announce: Callable[[Listening], None]) -> None:
    """Serve until SIGTERM or Ctrl-C; managed backends start first and are stopped whatever happens."""
    import uvicorn

    from .app import build_app

    check_access(config, host)
    usable = tuple(name for name, backend in config.backends.items() if backend.unavailable is None)
    engine = Engine(config, state_dir=state_dir, measured=measured_speeds(state_dir))
    session: SpendSession | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        await engine.start(usable)
        plan = SpendPlan(str(state_dir), run_id=f"serve-{time.strftime('%Y%m%d-%H%M%S')}", cache=_caches(config))
        session = SpendSession(plan, config)
        router = engine.router
        metrics = Metrics(router.in_flight, router.breakers.states, session.redactor.text)
        router.on_note = metrics.note
        health = HealthWatch(config, router, session.redactor.text)
        gateway = Gateway(config, router, session.caller(router), session.redactor, health, metrics)
        await health.check()
        watcher = asyncio.create_task(health.watch(config.serve.health_interval))
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=2048)
        bound = listener.getsockname()[1]
        stack = uvicorn.Config(
            build_app(gateway),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=config.serve.drain_timeout,
        )
        server = _stack_server(gateway, config.serve.drain_timeout)(stack)
        shown = f"[{host}]" if ":" in host else host
        announce(Listening(f"http://{shown}:{bound}", usable, len(config.serve.api_keys), not config.serve.api_keys))
        try:
            await server.serve(sockets=[listener])
        finally:
            await _settled(server.server_state.tasks)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if session is not None:
            session.close()
        await engine.aclose()


async def _settled(requests: Iterable[asyncio.Task[None]]) -> None:
    """Let requests that outlived the drain (cancelled by Uvicorn) end, so each settles its ledger row before the ledger closes."""
    left = [task for task in requests if not task.done()]
    if left:
        await asyncio.wait(left, timeout=10)


def _caches(config: Config) -> bool:
    """Whether any level of the config turns the response cache on, so its file is opened only then."""
    levels = [config.cache, *(b.cache for b in config.backends.values()), *(t.cache for t in config.tools.values())]
    return any(level and level.get("mode", "off") != "off" for level in levels)


def run(config: Config, host: str, port: int, state_dir: Path, announce: Callable[[Listening], None]) -> None:
    """`serve` on uvloop where it is installed (the extra brings it), else on asyncio's own loop."""
    require_stack()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, host, port, state_dir, announce))
        return
    uvloop.run(serve(config, host, port, state_dir, announce))
