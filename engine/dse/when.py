"""A moment as a user types it after `--since` or `--older-than`: a span back from now, or a date."""

from __future__ import annotations

import re
import time
from datetime import datetime

from .errors import InputError

_SPAN = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*")
_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def moment(text: str, option: str) -> float:
    """Epoch seconds for a span back from now (7d, 24h, 30m) or a date or date and time, local unless it names its zone.

    `option` is the flag the text came from, so a bad value is an input error that names it.
    """
    span = _SPAN.fullmatch(text)
    if span:
        return max(0.0, time.time() - float(span.group(1)) * _SPAN_UNITS[span.group(2)])
    try:
        return max(0.0, datetime.fromisoformat(text.strip()).timestamp())
    except (ValueError, OverflowError, OSError):
        raise InputError(
            f"{option} {text!r}: expected a date (2026-11-28), a date and time (2026-11-28T09:30), or a span back from now (7d, 24h, 30m)"
        ) from None
