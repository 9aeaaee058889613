"""One exception hierarchy, so the CLI can map every failure to an exit code and one clear line.

Input problems (exit 2) carry a `Location` so the user is pointed at the file, line and key
that is wrong; run-time problems (exit 1) carry enough context to say what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backends.types import Attempt


@dataclass(frozen=True)
class Location:
    """Where in a user's file something is: every input error points here."""

    file: str
    line: int | None = None
    column: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.key}" if self.key else where


class DseError(Exception):
    """Root of every error `dse` raises on purpose; anything else is a bug."""

    exit_code = 1
    stops_run = False
    """True for an error that ends the whole run, not just the step where it happened."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InputError(DseError):
    """The user's files or arguments are wrong; nothing was run."""

    exit_code = 2

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.location = location

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text


class InputErrors(InputError):
    """Several input errors reported at once, so a user fixes them in one pass."""

    def __init__(self, errors: list[InputError]) -> None:
        super().__init__(f"{len(errors)} errors")
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class SetupError(DseError):
    """Something the engine needs is not installed; the message says which command fixes it."""

    exit_code = 2


class BackendError(DseError):
    """A model call failed; subclasses say how, so the router can decide what to do.

    `attempts` is filled in by the router with every try it made before giving up.
    """

    attempts: tuple[Attempt, ...] = ()

    def __init__(self, message: str, *, backend: str = "", endpoint: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.backend = backend
        self.endpoint = endpoint


class BackendUnavailable(BackendError):
    """Connection refused, 502/503, or a managed server that would not start."""


class RateLimited(BackendError):
    """429 or overloaded; `retry_after` is the server's own estimate in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str) -> None:
        super().__init__(message, **kw)
        self.retry_after: float | None = retry_after


class BackendTimeout(BackendError):
    """No answer within the configured timeout."""


class ContextTooLong(BackendError):
    """The prompt does not fit the model's context window."""


class AuthError(BackendError):
    """401/403: the message names the variable to set, never the key."""


class ModelNotFound(BackendError):
    """The server does not have the model; the hint says how to get it."""


class BadRequest(BackendError):
    """The server rejected the request as malformed."""


class QueueFull(BackendUnavailable):
    """Every candidate endpoint is at capacity and `queue_limit` calls are already waiting."""


class QueueTimeout(BackendUnavailable):
    """A call waited `queue_timeout` seconds without an endpoint slot coming free."""


class StateFileUnusable(InputError):
    """A file dse keeps under the state directory (the usage ledger, the response cache) is damaged or cannot be written."""


class SpendRefused(DseError):
    """A call was not sent because it would cross a budget or a daily request limit; the step fails, the run goes on."""


class BackendLimitReached(SpendRefused, BackendError):
    """A limit of one backend's own (its `budget:` or `rate_limit.rpd`) refused the call: the router tries the fallbacks."""


class NotConfirmed(DseError):
    """A call needed the user's yes (`require_confirmation`) and did not get it: the whole run stops, nothing more is sent."""

    exit_code = 2
    stops_run = True
