"""Choosing which endpoint of a backend takes the next call.

Least loaded wins: calls in flight divided by the endpoint's capacity and weight, so a
server with four slots takes four calls before one with a single slot takes a second. Ties
break on the shorter run of recent failures (a retry goes elsewhere first), then on fewer
calls served so far, then at random, which spreads even a sequential workload.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from ..config.model import Endpoint
from ..errors import BackendUnavailable


@dataclass
class EndpointState:
    endpoint: Endpoint
    capacity: int = 1
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    streak: int = 0

    @property
    def load(self) -> float:
        return self.in_flight / (self.capacity * self.endpoint.weight)


@dataclass
class Lease:
    """One call's hold on an endpoint; `end` releases it and counts the outcome, once."""

    state: EndpointState
    ended: bool = False

    @property
    def url(self) -> str:
        return self.state.endpoint.url

    def end(self, ok: bool) -> None:
        if self.ended:
            return
        self.ended = True
        self.state.in_flight -= 1
        if ok:
            self.state.served += 1
            self.state.streak = 0
        else:
            self.state.failed += 1
            self.state.streak += 1


class EndpointPool:
    """The endpoints one (backend, role) can use, with the load each carries right now."""

    def __init__(self, endpoints: Sequence[Endpoint], *, default_capacity: int = 1, rng: random.Random | None = None) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.states = [EndpointState(e, e.max_concurrency or default_capacity) for e in endpoints]
        self._rng = rng or random.Random()

    def choose(self, allow: Callable[[str], bool] | None = None) -> EndpointState | None:
        eligible = [s for s in self.states if allow is None or allow(s.endpoint.url)]
        if not eligible:
            return None
        best = min(_rank(s) for s in eligible)
        return self._rng.choice([s for s in eligible if _rank(s) == best])

    def lease(self, allow: Callable[[str], bool] | None = None, *, backend: str = "") -> Lease:
        """Take the least-loaded allowed endpoint; the caller must `end()` the lease."""
        state = self.choose(allow)
        if state is None:
            raise BackendUnavailable(
                "every endpoint is cooling down after repeated failures",
                backend=backend,
                hint="run `dse status` to see which servers are down",
            )
        state.in_flight += 1
        return Lease(state)

    @contextlib.asynccontextmanager
    async def acquire(self, allow: Callable[[str], bool] | None = None, *, backend: str = "") -> AsyncIterator[Lease]:
        """A lease for the duration of one call, released however the call ends."""
        lease = self.lease(allow, backend=backend)
        try:
            yield lease
        except BaseException:
            lease.end(ok=False)
            raise
        lease.end(ok=True)

    def counts(self) -> dict[str, int]:
        """Calls served per endpoint URL: what `dse run` and the journal report."""
        return {s.endpoint.url: s.served for s in self.states}


def _rank(state: EndpointState) -> tuple[float, int, int]:
    return (state.load, state.streak, state.served)
