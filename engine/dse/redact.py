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

    @property
    def secrets(self) -> list[str]:
        return sorted((s for s in self._secrets if s), key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """The same JSON-like value with every string scrubbed: keys, items and nested values."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def unsafe_tail(self, text: str) -> int:
        """How many final characters could be the start of a secret that the next write completes."""
        longest = 0
        for secret in self.secrets:
            for size in range(min(len(secret) - 1, len(text)), longest, -1):
                if text.endswith(secret[:size]):
                    longest = size
                    break
        return longest


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
