"""Budget checks: pure functions over what was spent and what a call may cost, each returning why it is refused.

In the manner of `balance/eligibility.py`: the control gathers the numbers from the ledger,
these say yes (None) or no (the reason, written for the user).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..backends import Message

BYTES_PER_TOKEN = 3
"""A prompt is counted at one token per 3 bytes: more tokens than any common tokenizer makes, so the worst case is not underestimated."""

MESSAGE_OVERHEAD = 4
"""Tokens a chat format adds around each message (role and separators)."""


@dataclass(frozen=True)
class Limit:
    """One limit that applies to a call: its config key, USD, and what already counts against it."""

    key: str
    usd: float
    spent: float


def prompt_tokens(messages: Sequence[Message]) -> int:
    return sum(math.ceil(len(m.content.encode()) / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD for m in messages)


def refusal(limits: Sequence[Limit], worst: float | None, described: str) -> str | None:
    """Why a call of worst-case cost `worst` (USD; None when its price is unknown) may not go, or None."""
    if not limits:
        return None
    if worst is None:
        return f"{limits[0].key} is set, but the price of {described} is unknown, so the call cannot be kept within it"
    for limit in limits:
        if limit.spent + worst > limit.usd:
            return (
                f"{limit.key} is ${limit.usd:.4f}; ${limit.spent:.4f} is spent or held by calls in flight, "
                f"and this call to {described} could cost up to ${worst:.4f}"
            )
    return None
