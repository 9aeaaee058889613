"""What went wrong with one gateway request, as an HTTP status and a kind both protocols can say.

`Problem` is raised anywhere while a request is handled and rendered once, in the client's
own protocol (OpenAI's `{"error": {...}}` or Anthropic's `{"type": "error", ...}`). Engine
errors are mapped in one table, in the manner of `backends/_errors.py`: the most specific
class first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.types import Attempt

from ..errors import (
    AuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    DseError,
    InputError,
    ModelNotFound,
    NotConfirmed,
    QueueFull,
    RateLimited,
    SpendRefused,
)

# Kinds, in Anthropic's vocabulary (OpenAI clients read the status; its `type` field is free text).
INVALID = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
NOT_FOUND = "not_found_error"
TOO_LARGE = "request_too_large"
RATE_LIMIT = "rate_limit_error"
API = "api_error"
OVERLOADED = "overloaded_error"
TIMEOUT = "timeout_error"


@dataclass
class Problem(Exception):
    """One failed request: `param` names the field at fault, `retry_after` is sent as the header of that name."""

    status: int
    kind: str
    message: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


def invalid(message: str, param: str | None = None) -> Problem:
    """A 400 naming the field at fault."""
    return Problem(400, INVALID, message, param)


# (engine error, status, kind, code): the first class the error is an instance of wins.
_TABLE: tuple[tuple[type[DseError], int, str, str | None], ...] = (
    (NotConfirmed, 403, PERMISSION, "confirmation_required"),
    (SpendRefused, 429, RATE_LIMIT, "insufficient_quota"),
    (RateLimited, 429, RATE_LIMIT, "rate_limit_exceeded"),
    (ContextTooLong, 400, INVALID, "context_length_exceeded"),
    (BadRequest, 400, INVALID, None),
    (ModelNotFound, 404, NOT_FOUND, "model_not_found"),
    (AuthError, 502, API, "backend_auth_failed"),
    (BackendTimeout, 504, TIMEOUT, None),
    (QueueFull, 503, OVERLOADED, "queue_full"),
    (BackendUnavailable, 503, OVERLOADED, "backend_unavailable"),
    (BackendError, 502, API, None),
    (InputError, 400, INVALID, None),
)


def from_error(error: DseError) -> Problem:
    """The status a client should see for an engine error: its one clear line, and every backend it was tried on."""
    message = str(error) + _tried(getattr(error, "attempts", ()))
    for kind_of, status, kind, code in _TABLE:
        if isinstance(error, kind_of):
            # A backend that rate-limits without saying for how long still gets its clients told to wait.
            retry_after = (error.retry_after or 1.0) if isinstance(error, RateLimited) else None
            return Problem(status, kind, message, code=code, retry_after=retry_after)
    return Problem(500, API, message)


def _tried(attempts: Sequence[Attempt]) -> str:
    """`(tried main twice, then spare: ...)` when the call went to more than one backend; the last failure is the message itself."""
    backends = list(dict.fromkeys(a.backend for a in attempts))
    if len(backends) < 2:
        return ""
    last = {a.backend: a.error for a in attempts if a.error}
    return " (tried " + "; ".join(f"{b}: {last.get(b) or 'no answer'}" for b in backends) + ")"
