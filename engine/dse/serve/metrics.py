"""The gateway's figures in Prometheus text format: requests, errors, latency, its own overhead, and the router's state.

Kept in plain dicts on the event loop (every update happens there, so no lock), written out
on each scrape. Labels carry routes, kinds, backends and endpoint URLs with their credentials
taken out: never a client's key.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..routing.breaker import CLOSED, HALF_OPEN, OPEN
from ..routing.notes import Note

# Seconds: fine at the low end, where the gateway's own overhead lives.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BREAKER_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {running}"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class Metrics:
    """`in_flight` and `breakers` are read from the router when scraped, so they are never stale."""

    def __init__(self, in_flight: Callable[[], Mapping[tuple[str, str], int]], breakers: Callable[[], Mapping[str, str]], clean: Callable[[str], str]) -> None:
        self._in_flight = in_flight
        self._breakers = breakers
        self._clean = clean
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.notes: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.overhead = Histogram()

    def request(self, route: str, status: int, seconds: float, upstream: float | None) -> None:
        """One request answered; `upstream` is the time its backend call took, when there was exactly one."""
        self.requests[(route, status)] += 1
        self.latency.setdefault(route, Histogram()).observe(seconds)
        if upstream is not None:
            self.overhead.observe(max(seconds - upstream, 0.0))

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def note(self, note: Note) -> None:
        """A router event (retry, fallback, breaker, refusal, rate wait): the router's `on_note`."""
        self.notes[(note.kind, note.backend)] += 1

    def render(self) -> str:
        lines = ["# HELP dse_requests_total Requests answered, by route and HTTP status.", "# TYPE dse_requests_total counter"]
        lines += [f'dse_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
        lines += ["# HELP dse_errors_total Failed requests, by kind of error.", "# TYPE dse_errors_total counter"]
        lines += [f'dse_errors_total{{kind="{_label(k)}"}} {n}' for k, n in sorted(self.errors.items())]
        lines += ["# HELP dse_request_seconds Time from request to the end of the answer, by route.", "# TYPE dse_request_seconds histogram"]
        for route, histogram in sorted(self.latency.items()):
            lines += histogram.lines("dse_request_seconds", f'route="{route}"')
        lines += [
            "# HELP dse_overhead_seconds The gateway's own time: a request's time less its one backend call.",
            "# TYPE dse_overhead_seconds histogram",
            *self.overhead.lines("dse_overhead_seconds", ""),
        ]
        lines += ["# HELP dse_router_events_total Retries, fallbacks, breakers opened, refusals and rate waits.", "# TYPE dse_router_events_total counter"]
        lines += [f'dse_router_events_total{{event="{k}",backend="{_label(b)}"}} {n}' for (k, b), n in sorted(self.notes.items())]
        lines += ["# HELP dse_in_flight Calls open now, per endpoint.", "# TYPE dse_in_flight gauge"]
        lines += [
            f'dse_in_flight{{backend="{_label(b)}",endpoint="{_label(self._clean(u))}"}} {n}' for (b, u), n in sorted(self._in_flight().items())
        ]
        lines += ["# HELP dse_breaker_state Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open.", "# TYPE dse_breaker_state gauge"]
        lines += [f'dse_breaker_state{{endpoint="{_label(self._clean(u))}"}} {_BREAKER_VALUE[s]}' for u, s in sorted(self._breakers().items())]
        return "\n".join(lines) + "\n"
