"""The composition root: one config in, running backends and a router out, all torn down on exit.

Managed servers are started only for the backends a plan actually uses, so validating or
planning never starts a process, and a workflow that only calls OpenAI never boots llama.cpp.
Servers that `dse models load` left running for a backend, with the settings the config has
now and all healthy, are used instead of starting new ones, and are left running on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from .backends import preload_sdks
from .balance import EndpointDirectory
from .config.model import Config
from .lifecycle.managed import adopt
from .local import LocalCluster
from .routing import Resolver, Router
from .routing.catalog import MeasuredSpeed


class Engine:
    """Use as `async with Engine(config) as engine:`; every managed server is stopped on the way out."""

    def __init__(
        self, config: Config, *, state_dir: Path = Path(".dse"), measured: Mapping[tuple[str, str], MeasuredSpeed] | None = None
    ) -> None:
        """`measured`: what `dse bench` saved, for `model: auto` resolved at call time (the gateway's)."""
        self.config = config
        self.state_dir = state_dir
        self.clusters: dict[str, LocalCluster] = {}
        self.adopted: dict[str, list[str]] = {}
        self.endpoints = EndpointDirectory()
        self.resolver = Resolver(config, self.endpoints, measured=measured)
        self.router = Router(config, self.resolver)

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self, backends: Iterable[str]) -> None:
        """Start the managed servers of these backends and load their SDKs, all at once, then make their clients.

        The SDK import (up to two seconds for `openai`) runs in a thread beside the server
        start-up: done lazily on the first call instead, it would stall the event loop and with
        it every step that was meant to run in parallel.
        """
        configs = [c for name in dict.fromkeys(backends) if (c := self.config.find_backend(name)) is not None]
        fresh = [c for c in configs if c.managed is not None and c.name not in self.clusters and c.name not in self.adopted]
        loaded = await asyncio.gather(*(adopt(self.state_dir, c) for c in fresh))
        adopted = {c.name: urls for c, urls in zip(fresh, loaded) if urls}
        self.adopted.update(adopted)
        clusters = {c.name: LocalCluster(c.name, c.managed, self.state_dir / "logs") for c in fresh if c.managed is not None and c.name not in adopted}
        self.clusters.update(clusters)
        types = {c.type for c in configs}
        outcomes = await asyncio.gather(
            *(c.start() for c in clusters.values()), asyncio.to_thread(preload_sdks, types), return_exceptions=True
        )
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        for name, urls in [*adopted.items(), *((name, cluster.urls) for name, cluster in clusters.items())]:
            self.endpoints.manage(name, urls)
        await asyncio.to_thread(self.router.connect, [c.name for c in configs])

    async def aclose(self) -> None:
        try:
            await self.router.aclose()
        finally:
            for cluster in self.clusters.values():
                cluster.stop()
