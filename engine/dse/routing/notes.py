"""What the router tells a watcher while a call goes on: a retry, a fallback, a breaker that opened, a refusal, a wait.

These are the moments a person watching a run wants to see as they happen, not only in the
attempts recorded once the call is over. The router reports them to an optional sink and
carries on: it knows targets and endpoints, not steps, so whoever wires the sink in (the
runner) adds the step the call belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RETRY, FALLBACK, BREAKER, REFUSED, RATE_WAIT = "retry", "fallback", "breaker", "refused", "rate_wait"


@dataclass(frozen=True)
class Note:
    """One routing event. `seconds` is the wait before the next try (retry), the wait for a rate-limit
    turn (rate_wait) or how long an opened breaker keeps its endpoint out (breaker); `to` is the
    `backend/model` a fallback moves to, from `backend/model`."""

    kind: str
    backend: str
    model: str = ""
    endpoint: str = ""
    reason: str = ""
    seconds: float = 0.0
    to: str = ""
    step_id: str | None = None


NoteSink = Callable[[Note], None]
