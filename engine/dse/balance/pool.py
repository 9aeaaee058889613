"""Choosing which endpoint of a backend takes the next call, and holding calls back when all are full.

A call goes through three steps. Filter: the router's breaker says which endpoints are healthy,
then readiness, model and GPU headroom narrow those down (`eligibility`). Pick: among the
candidates with a free slot, the policy chooses. Wait: when every candidate is at its capacity,
the call queues, first come first served, and each ending lease hands its slot straight to the
head of the queue, so a newcomer can never overtake a waiting call.

Least loaded (the default) compares calls in flight divided by capacity and weight, so a server
with four slots takes four calls before one with a single slot takes a second; what a server
reports it is busy with counts too, when that is more than we sent it. Ties break on the
shorter run of recent failures (a retry goes elsewhere first), then on fewer calls served so
far, then at random, which spreads even a sequential workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config.model import Endpoint
from ..errors import BackendUnavailable, QueueFull, QueueTimeout
from .capacity import capacity_of
from .eligibility import Verdict, screen
from .gpu import GpuReader
from .monitor import EndpointMonitor, Probe, Reading
from .settings import BalancerSettings, setting_path

Allow = Callable[[str], bool]
COOLING_DOWN = "cooling down after repeated failures"


@dataclass
class EndpointState:
    """One endpoint's live figures; `reason` is why the latest choice kept or skipped it."""

    endpoint: Endpoint
    capacity: int = 1
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    streak: int = 0
    reason: str = "not asked yet"
    turn_credit: float = 0.0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.capacity


@dataclass
class Lease:
    """One call's hold on an endpoint slot; `end` releases it, counts the outcome and wakes the next waiter, once."""

    state: EndpointState
    on_end: Callable[[EndpointState, bool], None]
    ended: bool = False

    @property
    def url(self) -> str:
        return self.state.endpoint.url

    def end(self, ok: bool, *, sent: bool = True) -> None:
        """`sent` False gives the slot back for a call that never left (refused by spend control, or a gate that failed)."""
        if self.ended:
            return
        self.ended = True
        self.state.in_flight -= 1
        if sent and ok:
            self.state.served += 1
            self.state.streak = 0
        elif sent:
            self.state.failed += 1
            self.state.streak += 1
        self.on_end(self.state, ok)


@dataclass(frozen=True)
class EndpointView:
    """One endpoint as `dse status` shows it: capacity and its source, the latest reading, the verdict."""

    endpoint: Endpoint
    capacity: int
    capacity_source: str
    reading: Reading | None
    verdict: Verdict


@dataclass
class _Waiter:
    future: asyncio.Future[EndpointState]
    allow: Allow | None
    model: str | None
    backend: str


class EndpointPool:
    """The endpoints one (backend, role) can use, the load each carries, and the calls waiting for a slot."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        settings: BalancerSettings | None = None,
        default_capacity: int = 1,
        probe: Probe | None = None,
        gpu: GpuReader | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.settings = settings or BalancerSettings()
        self.default_capacity = default_capacity
        self.states = [EndpointState(e, capacity_of(e, None, default_capacity)[0]) for e in endpoints]
        self.monitor = EndpointMonitor(probe, gpu, self.settings.metrics_max_age, on_reading=self._observed, clock=clock)
        self._rng = rng or random.Random()
        self._queue: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._queue if not w.future.done())

    def _anyone_waiting(self) -> bool:
        """`waiting > 0`, stopping at the first live waiter (the head, almost always) instead of counting the line."""
        return any(not w.future.done() for w in self._queue)

    async def lease(self, allow: Allow | None = None, *, backend: str = "", model: str | None = None) -> Lease:
        """A slot on the best allowed endpoint, waiting in line when all are full; the caller must `end()` it."""
        self.monitor.refresh_due(s.endpoint for s in self.states)
        if not self._anyone_waiting():
            state = self._choose(allow, model, backend)
            if state is not None:
                return self._grant(state)
        # `waiting` counts the whole line; it cannot reach the limit while the line is shorter.
        if len(self._queue) >= self.settings.queue_limit and self.waiting >= self.settings.queue_limit:
            raise QueueFull(
                f"{_named(backend)}every endpoint is busy ({self._slots_text()}) and {_calls(self.waiting)} already waiting",
                backend=backend,
                hint=f"raise {setting_path('queue_limit', backend)}, or add endpoints or capacity",
            )
        waiter = _Waiter(asyncio.get_running_loop().create_future(), allow, model, backend)
        self._queue.append(waiter)
        try:
            async with asyncio.timeout(self.settings.queue_timeout):
                state = await waiter.future
        except TimeoutError:
            self._give_back(waiter)
            raise QueueTimeout(
                f"{_named(backend)}waited {self.settings.queue_timeout:g}s for a free endpoint "
                f"({self._slots_text()}, {_calls(self.waiting)} waiting)",
                backend=backend,
                hint=f"raise {setting_path('queue_timeout', backend)}, or add endpoints or capacity",
            ) from None
        except BaseException:
            self._give_back(waiter)
            raise
        return Lease(state, self._ended)

    async def refresh(self) -> None:
        """Read every endpoint now instead of in the background: for status and tests."""
        await asyncio.gather(*(self.monitor.refresh(s.endpoint) for s in self.states))

    async def survey(self, timeout: float) -> list[EndpointView]:
        """Read every endpoint now and judge them together, as the next call would be judged.

        A reading that takes longer than `timeout` counts as unknown, so one hung server cannot
        hold up the report on the others.
        """

        async def read(endpoint: Endpoint) -> Reading | None:
            try:
                return await asyncio.wait_for(self.monitor.refresh(endpoint), timeout)
            except TimeoutError:
                return None

        readings = await asyncio.gather(*(read(s.endpoint) for s in self.states))
        verdicts = screen([(s.endpoint, r) for s, r in zip(self.states, readings)], self.settings, None)
        views = []
        for state, reading, verdict in zip(self.states, readings, verdicts):
            capacity, source = capacity_of(state.endpoint, reading.server if reading else None, self.default_capacity)
            views.append(EndpointView(state.endpoint, capacity, source, reading, verdict))
        return views

    def counts(self) -> dict[str, int]:
        """Calls each endpoint received, answered or failed: what `dse run` and the journal report."""
        return {s.endpoint.url: s.served + s.failed for s in self.states}

    def _choose(self, allow: Allow | None, model: str | None, backend: str) -> EndpointState | None:
        """The endpoint for the next call; None when every candidate is full; raises when none is healthy."""
        healthy = []
        for state in self.states:
            if allow is None or allow(state.endpoint.url):
                healthy.append(state)
            else:
                state.reason = f"skipped: {COOLING_DOWN}"
        if not healthy:
            raise BackendUnavailable(
                f"every endpoint is {COOLING_DOWN}",
                backend=backend,
                hint="run `dse status` to see which servers are down",
            )
        readings = [self.monitor.current(s.endpoint) for s in healthy]
        verdicts = screen([(s.endpoint, r) for s, r in zip(healthy, readings)], self.settings, model)
        candidates = []
        for state, reading, verdict in zip(healthy, readings, verdicts):
            state.reason = verdict.reason
            if verdict.kept and not state.full:
                candidates.append((state, reading))
        if not candidates:
            return None
        return self._pick(candidates)

    def _pick(self, candidates: list[tuple[EndpointState, Reading | None]]) -> EndpointState:
        policy = self.settings.policy
        states = [s for s, _ in candidates]
        if policy == "random":
            return self._rng.choices(states, weights=[s.endpoint.weight for s in states])[0]
        if policy == "round_robin":
            return _next_turn(states)
        ranks = [_rank(s, r) for s, r in candidates]
        best = min(ranks)
        return self._rng.choice([s for s, rank in zip(states, ranks) if rank == best])

    def _grant(self, state: EndpointState) -> Lease:
        state.in_flight += 1
        return Lease(state, self._ended)

    def _ended(self, state: EndpointState, ok: bool) -> None:
        """Hand the slot on; after a failure, one loop turn later.

        By then the caller has told the breaker about the failure, so a waiting call is not sent
        straight to the endpoint that just failed.
        """
        if ok:
            self._dispatch()
            return
        self.monitor.refresh_soon(state.endpoint)
        try:
            asyncio.get_running_loop().call_soon(self._dispatch)
        except RuntimeError:  # ended outside any loop (a stream finalised late): nobody is waiting in one
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiting calls, oldest first, for as long as there are both."""
        while self._queue:
            waiter = self._queue[0]
            if waiter.future.done():
                self._queue.popleft()
                continue
            try:
                state = self._choose(waiter.allow, waiter.model, waiter.backend)
            except BackendUnavailable as exc:
                self._queue.popleft()
                waiter.future.set_exception(exc)
                continue
            if state is None:
                return
            self._queue.popleft()
            state.in_flight += 1
            waiter.future.set_result(state)

    def _give_back(self, waiter: _Waiter) -> None:
        """A waiter that leaves (timed out, cancelled) returns a slot it was handed in the meantime."""
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().in_flight -= 1
        future.cancel()
        self._dispatch()

    def _observed(self, endpoint: Endpoint, reading: Reading) -> None:
        """A new reading may reveal slots or make an endpoint eligible: serve waiters.

        A reading without a slot count keeps the one learned before: slots are fixed when a server starts.
        """
        if reading.server is not None and reading.server.slots:
            for state in self.states:
                if state.endpoint == endpoint:
                    state.capacity = capacity_of(endpoint, reading.server, self.default_capacity)[0]
        self._dispatch()

    def _slots_text(self) -> str:
        used = sum(s.in_flight for s in self.states)
        return f"{used} of {sum(s.capacity for s in self.states)} slots in use on {len(self.states)} endpoints"


def _named(backend: str) -> str:
    return f"backend {backend!r}: " if backend else ""


def _calls(count: int) -> str:
    return f"{count} call{'' if count == 1 else 's'}"


def _rank(state: EndpointState, reading: Reading | None) -> tuple[float, int, int]:
    """Load counts what the server says it is busy with (other clients too) when that exceeds what we sent."""
    report = reading.server if reading else None
    busy = max(state.in_flight, report.busy or 0) if report else state.in_flight
    queued = (report.waiting or 0) if report else 0
    return ((busy + queued) / (state.capacity * state.endpoint.weight), state.streak, state.served)


def _next_turn(states: list[EndpointState]) -> EndpointState:
    """Smooth weighted round robin (nginx's): strict rotation at equal weights, a weight-2 endpoint twice per turn."""
    total = sum(s.endpoint.weight for s in states)
    for state in states:
        state.turn_credit += state.endpoint.weight
    chosen = max(states, key=lambda s: s.turn_credit)
    chosen.turn_credit -= total
    return chosen
