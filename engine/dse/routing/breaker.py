"""Per-endpoint circuit breakers: stop sending calls to a server that keeps failing.

Closed (normal) -> open after N consecutive failures -> half-open after the cooldown, when
exactly one probe call may go through -> closed on its success, open again on its failure.
Without this, every step of a workflow pays the full retry budget against a dead server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class CircuitBreaker:
    failures_to_open: int = 3
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    held: bool = False
    """Held open by a health check that failed (`dse serve`): no call goes there until a check passes again."""

    @property
    def state(self) -> str:
        if self.held:
            return OPEN
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.cooldown else OPEN

    def allows(self) -> bool:
        """May a call go to this endpoint now? In half-open, only one probe at a time."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def hold(self, down: bool) -> None:
        """Take the endpoint out of rotation while a health check says it is down; put it back when one says it is up."""
        self.held = down

    def begin(self) -> None:
        if self.state == HALF_OPEN:
            self.probing = True

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.failures_to_open:
            self.opened_at = self.clock()
        self.probing = False

    def release(self) -> None:
        """A call that ended without saying anything about the server (cancelled, bad request)."""
        self.probing = False


class BreakerBoard:
    """One breaker per endpoint URL, created on first use with the configured settings."""

    def __init__(self, failures_to_open: int = 3, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = (failures_to_open, cooldown, clock)
        self._breakers: dict[str, CircuitBreaker] = {}

    def states(self) -> dict[str, str]:
        """Every endpoint's breaker state, for the gateway's metrics."""
        return {url: breaker.state for url, breaker in self._breakers.items()}

    def __getitem__(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = CircuitBreaker(*self._settings)
            self._breakers[endpoint] = breaker
        return breaker
