"""How long to wait before the next try: one rule for model calls and for `run:` commands.

`backoff` is the first wait in seconds; each later wait doubles, up to `max_backoff`, and is
spread by ±25 % so that many failing calls do not retry in lockstep. A step's `retry.backoff`
means the same whether the step calls a model or runs a command.
"""

from __future__ import annotations

import random

from ..config.model import RetrySettings


def delay(failed_attempt: int, policy: RetrySettings, rng: random.Random) -> float:
    """The wait after attempt number `failed_attempt` (1 for the first) failed."""
    base = min(policy.max_backoff, policy.backoff * 2.0 ** (failed_attempt - 1))
    return base * (0.75 + 0.5 * rng.random())
