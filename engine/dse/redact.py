"""Scrubbing secrets out of everything `dse` prints or writes, whatever carried them there.

Secrets are known once a config is loaded (`config.secrets`), and a server can echo them back
anywhere: in an answer, an error body, a stream. Rather than trusting every place that formats
text, the places text leaves the engine scrub it: the run journal and step outputs (before
later steps see them) with the run's config's secrets, and the CLI's stdout and stderr, which
are wrapped in `RedactingStream` for the length of one command.

A command's streams are wrapped before it reads its config, so loading a config inside
`collecting()` adds its secrets to the set those streams scrub. Outside such a block loading
remembers nothing: one config's secrets never mask another's output.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

MASK = "***"

_collected: ContextVar[set[str] | None] = ContextVar("dse_secrets", default=None)


@contextmanager
def collecting() -> Iterator[set[str]]:
    """A set that every config loaded inside the block adds its secrets to."""
    secrets: set[str] = set()
    token = _collected.set(secrets)
    try:
        yield secrets
    finally:
        _collected.reset(token)


def remember(secrets: Iterable[str]) -> None:
    """Add these values to the set being collected, if a `collecting()` block is open."""
    collected = _collected.get()
    if collected is not None:
        collected.update(s for s in secrets if s)


class Redactor:
    """Replaces each secret with `***`, longest first, so a secret containing another goes whole.

    `secrets` is read at each use, so a set that grows (a command's collected secrets) is honoured.
    """

    def __init__(self, secrets: Collection[str] = ()) -> None:
        self._secrets = secrets
        # (snapshot of `_secrets`, its secrets longest first, their JSON-escaped forms), replaced as one
        # assignment, so a reader in another thread never sees one part from another snapshot.
        self._cache: tuple[tuple[str, ...], list[str], tuple[str, ...]] | None = None

    @property
    def secrets(self) -> list[str]:
        return list(self._current())

    def _current(self) -> list[str]:
        """The secrets longest first; sorted again only when the collection is not what it was last time."""
        return self._snapshot()[1]

    def _snapshot(self) -> tuple[tuple[str, ...], list[str], tuple[str, ...]]:
        seen = tuple(self._secrets)
        cache = self._cache
        if cache is None or cache[0] != seen:
            ordered = sorted((s for s in seen if s), key=len, reverse=True)
            cache = (seen, ordered, tuple(json.dumps(s, ensure_ascii=False)[1:-1] for s in ordered))
            self._cache = cache
        return cache

    def text(self, text: str) -> str:
        return _scrub(text, self._current())

    def value(self, value: Any) -> Any:
        """The same JSON-like value with every string scrubbed: keys, items and nested values."""
        secrets = self._current()
        if not secrets:
            return _plain(value)
        return _scrubbed(value, secrets)

    def in_json(self, text: str) -> bool:
        """Whether a secret may be in this JSON text (`json.dumps(..., ensure_ascii=False)`): False means no string in it holds one.

        JSON escapes a string character by character, so a string holding a secret holds the
        secret's escaped form in the text. True may also be a match outside any string (a number).
        """
        return any(form in text for form in self._snapshot()[2])

    def unsafe_tail(self, text: str) -> int:
        """How many final characters could be the start of a secret that the next write completes."""
        longest = 0
        for secret in self._current():
            for size in range(min(len(secret) - 1, len(text)), longest, -1):
                if text.endswith(secret[:size]):
                    longest = size
                    break
        return longest


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrubbed(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, dict):
        return {_scrubbed(k, secrets): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, secrets) for v in value]
    return value


def _plain(value: Any) -> Any:
    """What `value` returns with nothing to scrub: the same shape (fresh dicts, tuples as lists), strings as they are."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class RedactingStream(io.TextIOBase):
    """A text stream that scrubs what passes through it, even a secret split across two writes.

    The tail of a write that could be the beginning of a secret is held back until the next
    write shows what it is, or the stream is closed; a flush does not release it, because a
    streamed answer is flushed chunk by chunk.
    """

    def __init__(self, inner: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redactor = redactor
        self._pending = ""

    def write(self, text: str) -> int:
        buffered = self.redactor.text(self._pending + text)
        held = self.redactor.unsafe_tail(buffered)
        self._pending = buffered[len(buffered) - held :] if held else ""
        self.inner.write(buffered[: len(buffered) - held])
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def release(self) -> None:
        """Write out what was held back: the output is complete."""
        if self._pending:
            self.inner.write(self.redactor.text(self._pending))
            self._pending = ""
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")
