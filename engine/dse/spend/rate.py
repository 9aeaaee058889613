"""A backend's `rate_limit`: each call is given the moment it may go, and waits for it rather than fail.

Requests per minute space calls evenly, `60 / rpm` seconds apart, with no burst: a server
that counts per second never sees two at once. Tokens per minute hold over any sliding minute,
as a server counts them: a call takes its estimate (prompt plus `max_tokens`, at most `tpm`)
and goes once the calls started in the 60 seconds before it leave room for it. Turns are
given in arrival order, each no earlier than the one before, and both are reservations made at
once in the event loop, so calls that arrive together queue in order without a lock. They hold
per process; requests per day are counted in the usage ledger.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.model import RateLimit

WINDOW = 60.0
"""Seconds in the minute that `rpm` and `tpm` count over."""


@dataclass
class Pace:
    """The reservations of one backend; `clock` is injectable for tests."""

    limit: RateLimit
    clock: Callable[[], float] = time.monotonic
    _last: float = field(default=float("-inf"), init=False)
    _started: deque[tuple[float, int]] = field(default_factory=deque, init=False)
    """(start, tokens) of the calls whose start may still be within a minute of the next one's, oldest first."""
    _held: int = field(default=0, init=False)
    """The tokens in `_started`."""

    def reserve(self, tokens: int) -> float:
        """Seconds this call must wait for its turn; the turn is taken now."""
        now = self.clock()
        at = max(now, self._last + WINDOW / self.limit.rpm) if self.limit.rpm else max(now, self._last)
        if self.limit.tpm:
            at = self._room(at, min(tokens, self.limit.tpm))
        self._last = at
        return at - now

    def _room(self, at: float, tokens: int) -> float:
        """The first moment from `at` when the minute before it leaves room for `tokens`; they are taken then."""
        assert self.limit.tpm
        started = self._started
        while started and (started[0][0] <= at - WINDOW or self._held + tokens > self.limit.tpm):
            start, taken = started.popleft()
            self._held -= taken
            at = max(at, start + WINDOW)
        started.append((at, tokens))
        self._held += tokens
        return at
