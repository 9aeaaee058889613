"""One translation from wire failures to `dse` errors, shared by every protocol.

The router decides retries and failover from the error class alone, so a 503 must mean the
same thing whether vLLM, Anthropic or Ollama sent it. The status code drives the mapping; the
server's message only refines a 4xx (context too long, model missing). Every message is cut
short and scrubbed of the API key, because servers do echo keys back in 401 bodies.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

from ..config.model import BackendConfig, Secret
from ..errors import (
    AuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    RateLimited,
)

_TOO_LONG = re.compile(r"context[ _-]?(length|window|size)|maximum context|exceed|too long|too many tokens", re.I)
_MODEL_MISSING = re.compile(r"model\b.*\b(not found|does not exist)", re.I)
# Errors that arrive inside a 200 stream carry only a type; these are the statuses they stand for.
_TYPE_STATUS = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "invalid_request_error": 400,
}
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class ErrorContext:
    """Where a call went and how to tell the user to fix it: every mapped error carries these."""

    backend: str
    endpoint: str
    key_env: str | None = None
    secret: Secret | None = None
    missing_model_hint: str = "check the model id"

    @classmethod
    def of(cls, config: BackendConfig, endpoint: str, missing_model_hint: str) -> ErrorContext:
        return cls(config.name, endpoint, config.api_key_env, config.api_key, missing_model_hint)

    def from_status(self, status: int | None, body: object, headers: Mapping[str, str] | None = None) -> BackendError:
        """An HTTP error answer, or an error object sent mid-stream (then `status` is None or 200)."""
        code = status if status is not None and status >= 400 else _status_in(body)
        answered = code == status
        origin = f"HTTP {code}" if answered else "sent mid-stream"
        message = self._clean(server_message(body) or origin)
        where = self._where
        if code in (429, 529):
            return RateLimited(f"rate limited ({origin}): {message}", retry_after=retry_after(headers or {}), **where)
        if code in (401, 403):
            env = self.key_env or "the backend's api_key setting"
            return AuthError(f"authentication failed ({origin})", hint=f"check the API key in {env}", **where)
        if code == 408:
            return BackendTimeout(f"the server gave up waiting ({origin}): {message}", **where)
        if 400 <= code < 500:
            if code == 404 or _MODEL_MISSING.search(message):
                return ModelNotFound(f"not found ({origin}): {message}", hint=self.missing_model_hint, **where)
            if code == 413 or _TOO_LONG.search(message):
                return ContextTooLong(f"the prompt does not fit ({origin}): {message}", **where)
            return BadRequest(f"rejected ({origin}): {message}", **where)
        return BackendUnavailable(f"server error ({origin}): {message}", **where)

    def unreachable(self, cause: BaseException) -> BackendUnavailable:
        detail = self._clean(str(cause)) or type(cause).__name__
        return BackendUnavailable(f"cannot reach {self.endpoint}: {detail}", **self._where)

    def timed_out(self) -> BackendTimeout:
        return BackendTimeout(f"no answer from {self.endpoint} before the timeout", **self._where)

    def cut_off(self, received: int) -> BackendUnavailable:
        """A stream that ended before the server's final event: the text so far is not an answer."""
        message = f"the stream from {self.endpoint} broke off after {received} events, before the final one"
        return BackendUnavailable(message, **self._where)

    def malformed(self, what: str) -> BackendUnavailable:
        return BackendUnavailable(f"{self.endpoint} sent an answer that makes no sense: {what}", **self._where)

    def transport(self, cause: BaseException, *, timed_out: bool, received: int = 0) -> BackendError:
        """A failure below HTTP; once a stream has started, a dropped connection is a stream cut off."""
        if timed_out:
            return self.timed_out()
        return self.cut_off(received) if received else self.unreachable(cause)

    def from_sdk(self, exc: Exception, sdk: ModuleType, *, received: int = 0) -> BackendError:
        """The `openai` and `anthropic` SDKs share one generated exception layout; `sdk` is either module."""
        if isinstance(exc, sdk.APIStatusError):
            return self.from_status(exc.status_code, exc.body, exc.response.headers)
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__ or exc
            return self.transport(cause, timed_out=isinstance(exc, sdk.APITimeoutError), received=received)
        return self.from_status(None, getattr(exc, "body", None) or str(exc))

    @property
    def _where(self) -> dict[str, str]:
        return {"backend": self.backend, "endpoint": self.endpoint}

    def _clean(self, text: str) -> str:
        if self.secret:
            text = text.replace(self.secret.reveal(), "***")
        return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


def server_message(body: object) -> str:
    """The human part of an error body: OpenAI and Anthropic nest it under `error.message`, Ollama sends `error`."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            inner = inner.get("message", "")
        return str(inner or "")
    return str(body or "").strip()


def _status_in(body: object) -> int:
    """The status an in-stream error stands for: llama.cpp says `code`, Anthropic says a type; else a server error."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            if isinstance(inner.get("code"), int) and inner["code"] >= 400:
                return int(inner["code"])
            if inner.get("type") in _TYPE_STATUS:
                return _TYPE_STATUS[str(inner["type"])]
    return 500


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` (OpenAI), or `Retry-After` as seconds or an HTTP date; nonsense (inf, NaN) is no answer."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return _seconds(float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _seconds(when.timestamp() - time.time())


def _seconds(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None
