"""A backend's `rate_limit`: each call is given the moment it may go, and waits for it rather than fail.

Requests per minute space calls evenly, `60 / rpm` seconds apart, with no burst: a server
that counts per second never sees two at once. Tokens per minute are a bucket of `tpm` that
refills continuously; a call takes its estimate (prompt plus `max_tokens`). Both are
reservations made at once in the event loop, so calls that arrive together queue in order
without a lock. They hold per process; requests per day are counted in the usage ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.model import RateLimit


@dataclass
class Pace:
    """The reservations of one backend; `clock` is injectable for tests."""

    limit: RateLimit
    clock: Callable[[], float] = time.monotonic
    _next: float = field(default=float("-inf"), init=False)
    _tokens: float = field(default=0.0, init=False)
    _filled_at: float | None = field(default=None, init=False)

    def reserve(self, tokens: int) -> float:
        """Seconds this call must wait for its turn; the turn is taken now."""
        now = self.clock()
        at = now
        if self.limit.rpm:
            at = max(at, self._next)
            self._next = at + 60.0 / self.limit.rpm
        if self.limit.tpm:
            at = max(at, self._bucket(now, min(tokens, self.limit.tpm)))
        return at - now

    def _bucket(self, now: float, tokens: int) -> float:
        """When `tokens` are in the bucket; taken from it now, so the level may go below zero for later callers to wait out."""
        assert self.limit.tpm
        rate = self.limit.tpm / 60.0
        if self._filled_at is None:
            self._tokens, self._filled_at = float(self.limit.tpm), now
        self._tokens = min(float(self.limit.tpm), self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now
        self._tokens -= tokens
        return now if self._tokens >= 0 else now - self._tokens / rate
