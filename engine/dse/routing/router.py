"""Sending a resolved call, and surviving what servers do: retries, breakers, fallbacks.

One retry layer only: adapters run with SDK retries off and the scheduler hands a step's
`retry:` to the router instead of retrying around it, so N attempts means N requests. The
order for a call is: the target's backend (up to `attempts` tries on its healthy endpoints,
waiting with exponential backoff and jitter, or as long as `Retry-After` says, capped), then
each `fallback_backends` entry for the same role. "Context too long" moves to a model with a
larger window than the one the server says it runs with. Every try is recorded on the response, or on the final error;
a retry, a fallback, a breaker that opens, a refusal and a rate-limit wait are also told to `on_note` as they happen.

The router knows targets, pools and adapters; it does not know workflows or wire formats.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..backends import Attempt, Backend, ChatOptions, ChatRequest, ChatResponse, EmbedResponse, Message, StreamChunk, make_backend
from ..backends.types import JsonOutput
from ..balance import EndpointPool, EndpointState, Lease, pool_for
from ..config.model import BackendConfig, Config, RetrySettings
from ..errors import (
    AuthError,
    BackendLimitReached,
    BadRequest,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ContextTooLong,
    DseError,
    RateLimited,
    SpendRefused,
)
from . import backoff
from .breaker import HALF_OPEN, OPEN, BreakerBoard
from .catalog import lookup
from .notes import BREAKER, FALLBACK, RATE_WAIT, REFUSED, RETRY, Note, NoteSink
from .resolver import Resolver
from .target import Target

if TYPE_CHECKING:
    from ..backends.types import Usage
    from ..spend import SpendControl, Ticket

T = TypeVar("T")


class EndpointGate(Protocol):
    """A hold on an endpoint beyond this process's own slots: on a cluster, one scheduler semaphore per endpoint.

    `enter` returns once the call may go to `url`, whose capacity is `capacity`; the function
    it returns gives the place back, once, when the call ends.
    """

    async def enter(self, url: str, capacity: int) -> Callable[[], None]: ...


_RETRYABLE = (BackendUnavailable, RateLimited, BackendTimeout)
_FALL_BACK_ON = (*_RETRYABLE, AuthError, BackendLimitReached)
_BREAKS = (BackendUnavailable, BackendTimeout)


def _constrained(request: ChatRequest, json_output: JsonOutput | None) -> ChatRequest:
    return request if json_output is None else replace(request, json_output=json_output)


class Router:
    """Owns one adapter per backend, one endpoint pool per (backend, role), one breaker per endpoint."""

    def __init__(
        self,
        config: Config,
        resolver: Resolver | None = None,
        *,
        backend_factory: Callable[[BackendConfig], Backend] = make_backend,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        gate: EndpointGate | None = None,
        spend: SpendControl | None = None,
        on_note: NoteSink | None = None,
    ) -> None:
        self.config = config
        self._gate = gate
        self.spend = spend
        self.on_note = on_note
        self.resolver = resolver or Resolver(config)
        self.endpoints = self.resolver.endpoints
        self.breakers = BreakerBoard(config.circuit_breaker.failures, config.circuit_breaker.cooldown)
        self._factory = backend_factory
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backends: dict[str, Backend] = {}
        self._pools: dict[tuple[str, str | None], EndpointPool] = {}

    def pool(self, backend: str, role: str | None) -> EndpointPool:
        """Managed replicas share one pool; configured endpoints may differ per role."""
        config = self._config(backend)
        key = (backend, self.endpoints.pool_role(config, role))
        pool = self._pools.get(key)
        if pool is None:
            endpoints = self.endpoints.endpoints(config, role)
            if not endpoints:
                raise BackendUnavailable(
                    f"backend {backend!r} has no endpoint", backend=backend, hint=f"set llm.{backend}.base_url or endpoints"
                )
            pool = pool_for(self.config, config, endpoints, self.backend(backend), rng=self._rng)
            self._pools[key] = pool
        return pool

    def _config(self, name: str) -> BackendConfig:
        config = self.config.find_backend(name)
        if config is None:
            raise BackendUnavailable(f"backend {name!r} is not configured", backend=name)
        return config

    def backend(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            config = self._config(name)
            if config.unavailable:
                raise BackendUnavailable(
                    f"backend {name!r} is unavailable: {config.unavailable}", backend=name, hint="see `dse status`"
                )
            backend = self._factory(config)
            self._backends[name] = backend
        return backend

    def connect(self, backends: Sequence[str]) -> None:
        """Build the adapters of these backends and their clients for every endpoint; blocking, so run it in a thread."""
        for name in backends:
            config = self.config.find_backend(name)
            if config is None or config.unavailable:
                continue
            adapter = self.backend(name)
            roles = {None, *config.endpoints, *config.deployments}
            urls = {e.url for role in roles for e in self.endpoints.endpoints(config, role)}
            for url in sorted(urls):
                adapter.connect(url)

    async def chat(
        self,
        target: Target,
        messages: Sequence[Message],
        *,
        retry: Mapping[str, float] | None = None,
        json_output: JsonOutput | None = None,
        options: ChatOptions | None = None,
    ) -> ChatResponse:
        """One completion, with retries and fallbacks; the response lists every attempt.

        `json_output` asks for JSON (of a schema); each backend's adapter sends it where its type
        can. `options` are a caller's own request fields, laid over what the target says.
        """

        async def call(backend: Backend, request: ChatRequest, lease: Lease, ticket: Ticket | None) -> ChatResponse:
            try:
                response = await backend.chat(_constrained(request, json_output), lease.url)
            except BaseException:
                lease.end(ok=False)
                raise
            lease.end(ok=True)
            self._settle(ticket, lease.url, response.usage, None)
            return response

        (response, used), attempts = await self._route(target, messages, retry, call, options)
        return replace(response, backend=used.backend, attempts=tuple(attempts))

    async def stream(
        self,
        target: Target,
        messages: Sequence[Message],
        *,
        retry: Mapping[str, float] | None = None,
        json_output: JsonOutput | None = None,
        options: ChatOptions | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Chunks as they arrive. Failover happens only before the first chunk, so text is never repeated."""

        async def open_stream(
            backend: Backend, request: ChatRequest, lease: Lease, ticket: Ticket | None
        ) -> tuple[StreamChunk, AsyncIterator[StreamChunk], Lease, Ticket | None]:
            chunks = aiter(backend.stream(_constrained(request, json_output), lease.url))
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = StreamChunk("", finish_reason="stop")
            except BaseException:
                lease.end(ok=False)
                raise
            return first, chunks, lease, ticket

        (opened, used), attempts = await self._route(target, messages, retry, open_stream, options)
        first, chunks, lease, ticket = opened
        breaker = self.breakers[lease.url]
        ok = False

        def stamped(chunk: StreamChunk) -> StreamChunk:
            """The first and the closing chunk say where the stream came from; the closing one also what it took and cost.

            The first says it so that a gateway can name the endpoint in its response headers,
            which leave before the rest of the answer exists.
            """
            if chunk.finish_reason is None:
                return replace(chunk, backend=used.backend, endpoint=lease.url, attempts=tuple(attempts)) if chunk is first else chunk
            cost = self._settle(ticket, lease.url, chunk.usage, None)
            attempts[-1] = replace(attempts[-1], cost=cost)
            return replace(chunk, backend=used.backend, endpoint=lease.url, attempts=tuple(attempts))

        failure: BaseException | None = None
        try:
            yield stamped(first)
            async for chunk in chunks:
                yield stamped(chunk)
            ok = True
        except BaseException as exc:
            failure = exc
            if isinstance(exc, _BREAKS):
                self._failed_on(lease.url, used.backend)
            raise
        finally:
            if not ok:
                self._settle(ticket, lease.url, None, failure or GeneratorExit())
            lease.end(ok=ok)
            if ok:
                breaker.success()

    async def _route(
        self,
        target: Target,
        messages: Sequence[Message],
        retry: Mapping[str, float] | None,
        call: Callable[[Backend, ChatRequest, Lease, Ticket | None], Awaitable[T]],
        options: ChatOptions | None = None,
    ) -> tuple[tuple[T, Target], list[Attempt]]:
        policy = RetrySettings(**{**asdict(self.config.retry), **retry}) if retry else self.config.retry
        attempts: list[Attempt] = []
        pending: list[Target | str] = [target, *target.fallbacks]
        last: BackendError | None = None
        tried: set[tuple[str, str]] = set()
        failed: Target | None = None
        while pending:
            item = pending.pop(0)
            try:
                current = item if isinstance(item, Target) else self.resolver.retarget(target, item)
            except DseError as exc:
                attempts.append(Attempt(str(item), "", str(exc), type(exc).__name__))
                continue
            if (current.backend, current.model) in tried:
                continue
            tried.add((current.backend, current.model))
            if failed is not None:
                reason = str(last) if last is not None else "unavailable"
                self._note(Note(FALLBACK, failed.backend, failed.model, reason=reason, to=f"{current.backend}/{current.model}"))
            failed = current
            try:
                return (await self._on_backend(current, messages, policy, call, attempts, options), current), attempts
            except ContextTooLong as exc:
                last = exc
                window, _source = await self.context_limit(current)
                larger = self.resolver.larger_context(current, window)
                if larger is None:
                    break
                pending.insert(0, larger)
            except _FALL_BACK_ON as exc:
                last = exc
            except BackendError as exc:
                exc.attempts = tuple(attempts)
                raise
        assert last is not None or attempts
        error = last or BackendUnavailable(attempts[-1].error or "no backend could take the call")
        error.attempts = tuple(attempts)
        raise error

    async def _on_backend(
        self,
        target: Target,
        messages: Sequence[Message],
        policy: RetrySettings,
        call: Callable[[Backend, ChatRequest, Lease, Ticket | None], Awaitable[T]],
        attempts: list[Attempt],
        options: ChatOptions | None,
    ) -> T:
        """Up to `policy.attempts` tries on this backend's healthy endpoints."""
        try:
            backend = self.backend(target.backend)
        except BackendUnavailable as exc:
            attempts.append(Attempt(target.backend, "", str(exc), type(exc).__name__))
            raise
        request = ChatRequest(
            model=target.wire_model,
            messages=tuple(messages),
            temperature=target.temperature,
            max_tokens=target.max_tokens,
            timeout=target.timeout,
        )
        if options is not None:
            request = options.apply(request)
        pool = self.pool(target.backend, target.role)
        for number in range(1, policy.attempts + 1):
            try:
                lease = await pool.lease(lambda url: self.breakers[url].allows(), backend=target.backend, model=request.model)
            except BackendUnavailable as exc:
                attempts.append(Attempt(target.backend, "", str(exc), type(exc).__name__))
                raise
            if self._gate is not None:
                await self._held(lease, self._gate)
            try:
                ticket = await self._admitted(lease, target, request)
            except BackendLimitReached as exc:
                attempts.append(Attempt(target.backend, "", str(exc), type(exc).__name__))
                raise
            queued = ticket.queued if ticket else 0.0
            breaker = self.breakers[lease.url]
            breaker.begin()
            try:
                result = await call(backend, request, lease, ticket)
            except BackendError as exc:
                cost = self._settle(ticket, lease.url, None, exc)
                if isinstance(exc, _BREAKS):
                    self._failed_on(lease.url, target.backend)
                else:
                    breaker.release()
                wait = self._wait(exc, number, policy)
                if number == policy.attempts or wait is None or not isinstance(exc, _RETRYABLE):
                    attempts.append(Attempt(target.backend, lease.url, str(exc), type(exc).__name__, queued=queued, cost=cost))
                    raise
                attempts.append(Attempt(target.backend, lease.url, str(exc), type(exc).__name__, wait, queued, cost))
                self._note(Note(RETRY, target.backend, target.model, lease.url, str(exc), wait))
                await self._sleep(wait)
                continue
            except BaseException as exc:
                self._settle(ticket, lease.url, None, exc)
                breaker.release()
                raise
            breaker.success()
            attempts.append(Attempt(target.backend, lease.url, queued=queued, cost=ticket.cost if ticket else 0.0))
            return result
        raise AssertionError("unreachable: the loop returns or raises")

    async def _admitted(self, lease: Lease, target: Target, request: ChatRequest) -> Ticket | None:
        """Spend control's word on this attempt (its rate-limit turn, budgets, the user's yes); a refusal sends nothing."""
        if self.spend is None:
            return None

        def waiting(seconds: float) -> None:
            self._note(Note(RATE_WAIT, target.backend, target.model, lease.url, seconds=seconds))

        try:
            return await self.spend.admit(target, request, waiting=waiting)
        except BaseException as exc:
            lease.end(ok=True, sent=False)
            if isinstance(exc, SpendRefused):  # a budget, or a backend's daily limit
                self._note(Note(REFUSED, target.backend, target.model, lease.url, str(exc)))
            raise

    def _note(self, note: Note) -> None:
        if self.on_note is not None:
            self.on_note(note)

    def _failed_on(self, url: str, backend: str) -> None:
        """A failure that counts against the endpoint's breaker; told as a note when it opens the breaker."""
        breaker = self.breakers[url]
        was = breaker.state
        breaker.failure()
        if breaker.state == OPEN and was != OPEN:
            reason = f"{breaker.failures} failures in a row" if was != HALF_OPEN else "the call that tested it again failed"
            self._note(Note(BREAKER, backend, endpoint=url, reason=reason, seconds=breaker.cooldown))

    def _settle(self, ticket: Ticket | None, url: str, usage: Usage | None, error: BaseException | None) -> float | None:
        return self.spend.settle(ticket, endpoint=url, usage=usage, error=error) if self.spend is not None else 0.0

    @staticmethod
    async def _held(lease: Lease, gate: EndpointGate) -> None:
        """Wait for the gate's place at the lease's endpoint; ending the lease gives both back."""
        try:
            leave = await gate.enter(lease.url, lease.state.capacity)
        except BaseException:
            lease.end(ok=True, sent=False)
            raise
        ended = lease.on_end

        def on_end(state: EndpointState, ok: bool) -> None:
            leave()
            ended(state, ok)

        lease.on_end = on_end

    def _wait(self, exc: BackendError, number: int, policy: RetrySettings) -> float | None:
        """Seconds before the next try; None means do not retry here (a longer Retry-After than we honour)."""
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= policy.max_retry_after else None
        return backoff.delay(number, policy, self._rng)

    async def embed(self, target: Target, texts: Sequence[str]) -> EmbedResponse:
        """Vectors for `texts`, with the same retries and breakers as chat; no fallback to a chat model."""

        async def call(backend: Backend, _request: ChatRequest, lease: Lease, ticket: Ticket | None) -> EmbedResponse:
            try:
                response = await backend.embed(texts, target.wire_model, lease.url)
            except BaseException:
                lease.end(ok=False)
                raise
            lease.end(ok=True)
            self._settle(ticket, lease.url, response.usage, None)
            return response

        (response, _used), _attempts = await self._route(replace(target, fallbacks=()), (), None, call)
        size = self._config(target.backend).embedding_dimensions
        wrong = sorted({len(v) for v in response.vectors if len(v) != size}) if size else []
        if wrong:
            raise BadRequest(
                f"{target.backend} returned vectors of {', '.join(map(str, wrong))} dimensions; the config says {size}",
                backend=target.backend,
                endpoint=response.endpoint,
                hint=f"set embeddings.{target.backend}.dimensions to what {target.model} produces",
            )
        return response

    async def context_limit(self, target: Target) -> tuple[int, str]:
        """The target model's context window and where it came from.

        The server's own word wins (Ollama /api/show, llama.cpp /props), then the backend's
        `context_windows`, then the selector's overrides and built-in catalog.
        """
        config = self._config(target.backend)
        if config.unavailable is None:
            backend = self.backend(target.backend)
            for state in self.pool(target.backend, target.role).states:
                try:
                    limit = await backend.context_limit(target.wire_model, state.endpoint.url)
                except BackendError:
                    continue
                if limit:
                    return limit, f"server {state.endpoint.url}"
        if target.model in config.context_windows:
            return config.context_windows[target.model], f"llm.{config.name}.context_windows"
        info = lookup(target.model, config.type, self.config.selector.models)
        return info.context_window, "catalog" if info.known else "estimate from the model name"

    def room(self, target: Target) -> int | None:
        """Calls to keep open on the target's endpoints: every slot, plus as many waiting (within the waiting line).

        The waiting calls keep every slot busy the moment one frees; more would only sit in the
        queue. A run that keeps at most this many calls open never fails on its own backlog.
        None when the backend cannot be used at all (the call will say why).
        """
        try:
            pool = self.pool(target.backend, target.role)
        except BackendUnavailable:
            return None
        slots = sum(state.capacity for state in pool.states)
        return slots + min(slots, pool.settings.queue_limit)

    def in_flight(self) -> dict[tuple[str, str], int]:
        """Calls open now on each (backend, endpoint): the gateway's metrics read this."""
        out: dict[tuple[str, str], int] = {}
        for (backend, _role), pool in self._pools.items():
            for state in pool.states:
                out[(backend, state.endpoint.url)] = out.get((backend, state.endpoint.url), 0) + state.in_flight
        return out

    def calls_per_endpoint(self) -> dict[str, dict[str, int]]:
        """Calls each endpoint received (answered or failed), grouped by backend: shown after a run."""
        out: dict[str, dict[str, int]] = {}
        for (backend, _role), pool in self._pools.items():
            out.setdefault(backend, {}).update(pool.counts())
        return out

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
