"""Background health checks of every endpoint, and what `/health` and `/v1/providers` report.

Every `serve.health_interval` seconds each endpoint of each usable backend is asked for its
health. One that is down (unreachable, loading, or failing its probe; a probe route the server
lacks proves nothing) has its circuit breaker held open, so the balancer sends it
nothing until a later check finds it ready again; a call never waits for a check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.types import Health
from ..config.model import Config
from ..routing import Router


@dataclass(frozen=True)
class Checked:
    """One endpoint's latest check; `at` is epoch seconds."""

    backend: str
    url: str
    health: Health
    at: float


class HealthWatch:
    def __init__(self, config: Config, router: Router, clean: Callable[[str], str]) -> None:
        self._config = config
        self._router = router
        self._clean = clean
        self.latest: dict[tuple[str, str], Checked] = {}

    def endpoints(self, name: str) -> list[str]:
        backend = self._config.backends[name]
        roles = {None, *backend.endpoints, *backend.deployments}
        return sorted({e.url for role in roles for e in self._router.endpoints.endpoints(backend, role)})

    async def check(self, only: str | None = None) -> list[Checked]:
        """Ask every endpoint (of `only`, when given) now; hold the breakers of those not ready."""
        jobs = [
            (name, url)
            for name, backend in self._config.backends.items()
            if backend.unavailable is None and only in (None, name)
            for url in self.endpoints(name)
        ]
        healths = await asyncio.gather(*(self._router.backend(name).health(url) for name, url in jobs))
        now = time.time()
        checked = []
        for (name, url), health in zip(jobs, healths):
            self._router.breakers[url].hold(_down(health))
            self.latest[(name, url)] = entry = Checked(name, url, health, now)
            checked.append(entry)
        return checked

    async def watch(self, interval: float) -> None:
        """Check, wait, check again, until cancelled (when the server stops)."""
        while True:
            await self.check()
            await asyncio.sleep(interval)

    def providers(self, only: str | None = None) -> list[dict[str, Any]]:
        """Each backend, its status and its endpoints' latest checks, as `/v1/providers` lists them."""
        out: list[dict[str, Any]] = []
        for name, backend in self._config.backends.items():
            if only not in (None, name):
                continue
            if backend.unavailable is not None:
                out.append({"name": name, "type": backend.type, "status": "unavailable", "reason": backend.unavailable, "endpoints": []})
                continue
            endpoints = [self._endpoint(self.latest.get((name, url)), url) for url in self.endpoints(name)]
            states = {e["status"] for e in endpoints}
            status = "healthy" if states == {"healthy"} else ("unknown" if states <= {"unknown"} else ("unhealthy" if "healthy" not in states else "degraded"))
            out.append({"name": name, "type": backend.type, "status": status, "reason": None, "endpoints": endpoints})
        return out

    def _endpoint(self, checked: Checked | None, url: str) -> dict[str, Any]:
        if checked is None:
            return {"url": self._clean(url), "status": "unknown", "state": "not checked yet", "latency_ms": None, "checked_at": None, "detail": ""}
        health = checked.health
        return {
            "url": self._clean(url),
            "status": "healthy" if health.ready else "unhealthy",
            "state": health.state,
            "latency_ms": round(health.latency * 1000, 1) if health.latency is not None else None,
            "checked_at": checked.at,
            "detail": self._clean(health.detail),
        }

    def ready(self) -> bool:
        """The default backend has an endpoint that passed its latest check."""
        name = self._config.default_backend
        return any(c.health.ready for (backend, _url), c in self.latest.items() if backend == name)


def _down(health: Health) -> bool:
    """Not ready, for a reason that says calls would fail too: a probe route the server lacks (404) says nothing either way."""
    return not health.ready and health.detail != "HTTP 404"
