"""The composition root: one config in, running backends and a router out, all torn down on exit.

Managed servers are started only for the backends a plan actually uses, so validating or
planning never starts a process, and a workflow that only calls OpenAI never boots llama.cpp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from .backends import preload_sdks
from .config.model import Config, Endpoint
from .local import LocalCluster
from .routing import Resolver, Router


class Engine:
    """Use as `async with Engine(config) as engine:`; every managed server is stopped on the way out."""

    def __init__(self, config: Config, *, state_dir: Path = Path(".dse")) -> None:
        self.config = config
        self.state_dir = state_dir
        self.clusters: dict[str, LocalCluster] = {}
        self.router = Router(config, Resolver(config))

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def resolver(self) -> Resolver:
        return Resolver(self.config, {name: tuple(c.urls) for name, c in self.clusters.items()})

    async def start(self, backends: Iterable[str]) -> None:
        """Start the managed servers of these backends and load their SDKs, all at once.

        The SDK import (up to two seconds for `openai`) runs in a thread beside the server
        start-up: done lazily on the first call instead, it would stall the event loop and with
        it every step that was meant to run in parallel.
        """
        names = [name for name in dict.fromkeys(backends) if self.config.find_backend(name) is not None]
        wanted = [name for name in names if self.config.backends.get(name) and self.config.backends[name].managed and name not in self.clusters]
        clusters = {name: LocalCluster(name, self.config.backends[name].managed, self.state_dir / "logs") for name in wanted}
        self.clusters.update(clusters)
        types = {self.config.find_backend(name).type for name in names}  # type: ignore[union-attr]
        outcomes = await asyncio.gather(
            *(c.start() for c in clusters.values()), asyncio.to_thread(preload_sdks, types), return_exceptions=True
        )
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        for name, cluster in clusters.items():
            self.router.managed_endpoints[name] = [Endpoint(url) for url in cluster.urls]

    async def aclose(self) -> None:
        try:
            await self.router.aclose()
        finally:
            for cluster in self.clusters.values():
                cluster.stop()
