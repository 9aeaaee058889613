"""The response cache: an answer kept under a hash of the whole request it answered, in `<state dir>/cache.db`.

The key covers what decides an answer: the resolved backend and model, every message, the
sampling parameters, a caller's own request fields and the output constraint. It never covers
the API key, and the prompt alone is never enough. A call that offers tools, or an answer that
calls them, is neither looked up nor kept: a tool call asks the client to act on the world
now, and answering it from the cache would skip that action or repeat a stale one. It sits in front of the router as a `ChatCaller`, so a hit sends
nothing, waits for no rate limit and costs nothing; the ledger still gets a row marked as
from the cache. Answers are kept with secrets scrubbed, as the journal keeps them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..backends import ChatResponse, Message
from ..backends.types import Attempt, ChatOptions, JsonOutput, StreamChunk, Usage
from ..config.model import CacheSettings
from ..redact import Redactor
from ..routing.target import Target
from ..workflow.steps.base import ChatCaller
from . import store
from .control import SpendControl

FILE = "cache.db"
ENDPOINT = "cache"
"""What a cached answer names as its endpoint: in progress, the journal and the ledger."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    stored_at REAL NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def request_key(target: Target, messages: list[Message], json_output: JsonOutput | None, options: ChatOptions | None = None) -> str:
    """The hash of everything that decides the answer, normalised so equal requests hash equal.

    Tool turns and options add to the key only where present, so the keys of answers kept
    before they existed still match.
    """
    request: dict[str, Any] = {
        "backend": target.backend,
        "model": target.wire_model,
        "messages": [_message_key(m) for m in messages],
        "temperature": target.temperature,
        "max_tokens": target.max_tokens,
        "json_output": asdict(json_output) if json_output is not None else None,
    }
    if options is not None and options != ChatOptions():
        request["options"] = asdict(options)
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _message_key(message: Message) -> list[Any]:
    said: list[Any] = [message.role, message.content]
    if message.tool_calls or message.tool_call_id is not None:
        said += [[asdict(call) for call in message.tool_calls], message.tool_call_id]
    return said


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int

    @property
    def hit_rate(self) -> float | None:
        looked = self.hits + self.misses
        return self.hits / looked if looked else None


def _guarded(path: Path) -> AbstractContextManager[None]:
    return store.guarded(path, "response cache", f"delete {path} (it holds nothing but cached answers), or run with --cache off")


class ResponseCache:
    """Lookups and writes are single statements; hit and miss counts are kept in memory and added up on `close`.

    Every process opens its own connection (`store.connect`), so concurrent runs share the file.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self.hits = self.misses = 0
        with _guarded(path):
            self._db = store.connect(path, _SCHEMA)

    def get(self, key: str, ttl: float) -> dict[str, Any] | None:
        with _guarded(self.path):
            row = self._db.execute("SELECT stored_at, answer FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None or self._clock() - row[0] > ttl:
            self.misses += 1
            return None
        self.hits += 1
        answer: dict[str, Any] = json.loads(row[1])
        return answer

    def put(self, key: str, backend: str, model: str, answer: Mapping[str, Any]) -> None:
        with _guarded(self.path):
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, stored_at, backend, model, answer) VALUES (?,?,?,?,?)",
                (key, self._clock(), backend, model, json.dumps(answer)),
            )

    def stats(self) -> CacheStats:
        with _guarded(self.path):
            counts = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            entries, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(answer)), 0) FROM answers").fetchone()
        return CacheStats(counts.get("hits", 0) + self.hits, counts.get("misses", 0) + self.misses, entries, size)

    def clear(self) -> int:
        """Forget every answer and the counts; returns how many answers there were."""
        with _guarded(self.path):
            entries = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            self._db.execute("DELETE FROM answers")
            self._db.execute("DELETE FROM counters")
            self._db.execute("VACUUM")
        self.hits = self.misses = 0
        return int(entries)

    def close(self) -> None:
        """Add this connection's hit and miss counts to the file's, in one transaction, and close; the connection closes whatever happens."""
        try:
            if self.hits or self.misses:
                with _guarded(self.path):
                    self._flush_counts()
                self.hits = self.misses = 0
        finally:
            self._db.close()

    def _flush_counts(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for name, value in (("hits", self.hits), ("misses", self.misses)):
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (name, value),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


class CachedCaller:
    """A `ChatCaller` in front of another: answers what it has, passes on what it has not, and keeps what comes back.

    `mode` (from `dse run --cache`) replaces every level's mode and, asked for on the command
    line, takes sampled calls too; the TTL stays as configured.
    """

    def __init__(
        self, inner: ChatCaller, cache: ResponseCache, *, spend: SpendControl | None = None, mode: str | None = None, redactor: Redactor = Redactor()
    ) -> None:
        self._inner = inner
        self._cache = cache
        self._spend = spend
        self._mode = mode
        self._redactor = redactor

    def _settings(self, target: Target, options: ChatOptions | None) -> CacheSettings | None:
        """How this call uses the cache, or None when it does not: mode off, sampled and not asked for, or offering tools."""
        settings = target.cache if self._mode is None else replace(target.cache, mode=self._mode, sampled=True)
        sampled = target.temperature is None or target.temperature > 0
        if settings.mode == "off" or (sampled and not settings.sampled) or (options is not None and options.tools):
            return None
        return settings

    async def chat(
        self,
        target: Target,
        messages: list[Message],
        *,
        retry: Mapping[str, Any] | None = None,
        json_output: JsonOutput | None = None,
        options: ChatOptions | None = None,
    ) -> ChatResponse:
        settings = self._settings(target, options)
        key = request_key(target, messages, json_output, options) if settings else ""
        if settings is not None and settings.reads:
            answer = self._cache.get(key, settings.ttl)
            if answer is not None:
                return self._hit(target, answer)
        response = await self._inner.chat(target, messages, retry=retry, json_output=json_output, options=options)
        if settings is not None and settings.writes and response.backend == target.backend and not response.tool_calls:
            self._keep(key, target, response.text, response.finish_reason, response.model)
        return response

    async def stream(
        self,
        target: Target,
        messages: list[Message],
        *,
        retry: Mapping[str, Any] | None = None,
        json_output: JsonOutput | None = None,
        options: ChatOptions | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """A hit comes as one chunk that closes the stream; a miss is passed through and kept once it closed."""
        settings = self._settings(target, options)
        key = request_key(target, messages, json_output, options) if settings else ""
        if settings is not None and settings.reads:
            answer = self._cache.get(key, settings.ttl)
            if answer is not None:
                hit = self._hit(target, answer)
                yield StreamChunk(
                    hit.text, finish_reason=hit.finish_reason or "stop", usage=Usage(), backend=hit.backend, endpoint=ENDPOINT, attempts=hit.attempts, cached=True
                )
                return
        parts: list[str] = []
        keeps = settings is not None and settings.writes
        # Closed here, not whenever the collector gets to it: a consumer that stops early ends the
        # router's stream at once, which settles its ledger row and gives its endpoint slot back.
        chunks = self._inner.stream(target, messages, retry=retry, json_output=json_output, options=options)
        try:
            async for chunk in chunks:
                parts.append(chunk.text)
                if keeps and chunk.finish_reason is not None and chunk.backend in (None, target.backend) and not chunk.tool_calls:
                    # Kept as the answer closes, before the consumer sees it, so one that stops at the last chunk loses nothing.
                    self._keep(key, target, "".join(parts), chunk.finish_reason, target.model)
                    keeps = False
                yield chunk
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    def _hit(self, target: Target, answer: Mapping[str, Any]) -> ChatResponse:
        if self._spend is not None:
            self._spend.cache_hit(target)
        return ChatResponse(
            text=answer["text"],
            model=answer["model"],
            backend=target.backend,
            endpoint=ENDPOINT,
            finish_reason=answer["finish_reason"],
            attempts=(Attempt(target.backend, ENDPOINT),),
            cached=True,
        )

    def _keep(self, key: str, target: Target, text: str, finish_reason: str | None, model: str) -> None:
        scrub = self._redactor.text
        self._cache.put(key, target.backend, target.model, {"text": scrub(text), "finish_reason": finish_reason, "model": scrub(model)})
