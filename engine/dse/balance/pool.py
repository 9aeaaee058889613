"""Choosing which endpoint of a backend takes the next call.

Least loaded wins: calls in flight divided by the endpoint's capacity and weight, so a
server with four slots takes four calls before one with a single slot takes a second. Ties
break on fewer calls served so far, then at random, which spreads even a sequential workload.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ..config.model import Endpoint


@dataclass
class EndpointState:
    endpoint: Endpoint
    capacity: int = 1
    in_flight: int = 0
    served: int = 0
    failed: int = 0

    @property
    def load(self) -> float:
        return self.in_flight / (self.capacity * self.endpoint.weight)


class EndpointPool:
    """The endpoints one (backend, role) can use, with the load each carries right now."""

    def __init__(self, endpoints: Sequence[Endpoint], *, default_capacity: int = 1, rng: random.Random | None = None) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.states = [EndpointState(e, e.max_concurrency or default_capacity) for e in endpoints]
        self._rng = rng or random.Random()

    def choose(self) -> EndpointState:
        best = min((s.load, s.served) for s in self.states)
        tied = [s for s in self.states if (s.load, s.served) == best]
        return self._rng.choice(tied)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[EndpointState]:
        """Hold an endpoint for the duration of one call; its load is released however the call ends."""
        state = self.choose()
        state.in_flight += 1
        try:
            yield state
        except BaseException:
            state.failed += 1
            raise
        else:
            state.served += 1
        finally:
            state.in_flight -= 1

    def counts(self) -> dict[str, int]:
        """Calls served per endpoint URL: what `dse run` and the journal report."""
        return {s.endpoint.url: s.served for s in self.states}
