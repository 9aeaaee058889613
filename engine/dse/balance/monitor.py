"""Per-endpoint readings (server report + GPU), kept with the time they were taken.

Probing never sits on a call's path: a lease only notices that a reading is getting old and
starts a background refresh; the call goes on with what is known now. A reading older than
`metrics_max_age` is not trusted, it reads as unknown (which passes every check), so a server
that stopped answering probes cannot stay excluded, or included, on old news. Refreshing at
half that age keeps a busy pool acting on trusted readings, and a failed call refreshes its
endpoint's reading at once: a failure is the surest sign that the reading is out of date.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ..config.model import Endpoint
from .gpu import GpuReader, GpuReading, read_endpoint_gpu
from ..backends.types import ServerReport

# Asks one endpoint's server about itself; never raises (see `backends.ServerReporter`).
Probe = Callable[[Endpoint], Awaitable[ServerReport]]


@dataclass(frozen=True)
class Reading:
    """What was known about one endpoint at `at` (monotonic seconds); None parts were not asked."""

    at: float
    server: ServerReport | None = None
    gpu: GpuReading | None = None


class EndpointMonitor:
    """Takes readings for a pool's endpoints and tells the pool (`on_reading`) when one lands."""

    def __init__(
        self,
        probe: Probe | None,
        gpu: GpuReader | None,
        max_age: float,
        *,
        on_reading: Callable[[Endpoint, Reading], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._gpu = gpu
        self._max_age = max_age
        self._on_reading = on_reading
        self._clock = clock
        self._readings: dict[str, Reading] = {}
        self._tasks: dict[str, asyncio.Task[Reading]] = {}

    def current(self, endpoint: Endpoint) -> Reading | None:
        """The reading if it is fresh enough to act on; None (unknown) otherwise."""
        reading = self._readings.get(endpoint.url)
        if reading is None or self._clock() - reading.at > self._max_age:
            return None
        return reading

    def refresh_due(self, endpoints: Iterable[Endpoint]) -> None:
        """Start a background refresh for each endpoint whose reading is missing or half its max age old."""
        if self._probe is None and self._gpu is None:  # nothing to ask any endpoint (see `_asks`): every call's fast path
            return
        for endpoint in endpoints:
            reading = self._readings.get(endpoint.url)
            if reading is None or self._clock() - reading.at > self._max_age / 2:
                self.refresh_soon(endpoint)

    def refresh_soon(self, endpoint: Endpoint) -> None:
        """Start a background refresh of one endpoint now, unless one is already under way."""
        task = self._tasks.get(endpoint.url)
        if not self._asks(endpoint) or (task is not None and not task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a stream abandoned and finalised after its loop ended: nothing left to balance
            return
        self._tasks[endpoint.url] = loop.create_task(self.refresh(endpoint))

    async def refresh(self, endpoint: Endpoint) -> Reading:
        """Read one endpoint now (status and tests await this; leases never do)."""
        server = await self._probe(endpoint) if self._probe is not None else None
        gpu = None
        if self._gpu is not None and endpoint.gpu is not None:
            gpu = await asyncio.to_thread(read_endpoint_gpu, endpoint, self._gpu)
        reading = Reading(self._clock(), server, gpu)
        self._readings[endpoint.url] = reading
        self._on_reading(endpoint, reading)
        return reading

    def _asks(self, endpoint: Endpoint) -> bool:
        return self._probe is not None or (self._gpu is not None and endpoint.gpu is not None)
