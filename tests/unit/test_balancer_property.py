"""Properties of the pool under random lease/end sequences, random endpoints, filters and policies.

Whatever happens: no endpoint ever holds more calls than its capacity; a call never goes to an
endpoint a filter removed while another endpoint passes every filter; never to an unhealthy one.
"""

from __future__ import annotations

import asyncio
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dse.balance import BalancerSettings, EndpointPool, Lease
from dse.backends import LoadedModel, ServerReport
from dse.config.model import Endpoint
from dse.errors import BackendUnavailable

MODEL = "m:latest"
REPORTS = {
    "fine": ServerReport(models=frozenset({MODEL})),
    "unknown": ServerReport(),
    "loading": ServerReport(ready=False, detail="loading the model"),
    "no-model": ServerReport(models=frozenset({"other:latest"})),
    "offloaded": ServerReport(models=frozenset({MODEL}), loaded={MODEL: LoadedModel(MODEL, 10, 4)}),
}
FILTERED = {"loading", "no-model", "offloaded"}

endpoint_specs = st.lists(
    st.tuples(
        st.integers(1, 3),  # capacity
        st.sampled_from([0.5, 1.0, 2.0]),  # weight
        st.booleans(),  # healthy (breaker closed)
        st.sampled_from(sorted(REPORTS)),
    ),
    min_size=1,
    max_size=5,
)
operations = st.lists(st.one_of(st.just(("lease", 0)), st.tuples(st.just("end"), st.integers(0, 50))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(endpoint_specs, st.sampled_from(["least_loaded", "round_robin", "random"]), operations, st.integers(0, 2**16))
def test_capacity_and_filters_hold_under_any_sequence(specs, policy, ops, seed) -> None:
    endpoints = [Endpoint(f"http://e{i}", weight=w, max_concurrency=c) for i, (c, w, _, _) in enumerate(specs)]
    healthy = {e.url for e, spec in zip(endpoints, specs) if spec[2]}
    kinds = {e.url: spec[3] for e, spec in zip(endpoints, specs)}
    passing = {url for url in healthy if kinds[url] not in FILTERED}

    async def probe(endpoint: Endpoint) -> ServerReport:
        return REPORTS[kinds[endpoint.url]]

    async def scenario() -> None:
        pool = EndpointPool(
            endpoints,
            settings=BalancerSettings(policy=policy, queue_limit=1000),
            probe=probe,
            clock=lambda: 0.0,
            rng=random.Random(seed),
        )
        await pool.refresh()
        held: list[Lease] = []
        pending: list[asyncio.Task[Lease]] = []
        for op, index in ops:
            if op == "lease":
                pending.append(asyncio.create_task(pool.lease(lambda url: url in healthy, model=MODEL)))
            elif held:
                held.pop(index % len(held)).end(ok=bool(index % 2))
            for _ in range(4):
                await asyncio.sleep(0)
            for task in [t for t in pending if t.done()]:
                pending.remove(task)
                if not healthy:
                    assert isinstance(task.exception(), BackendUnavailable)
                    continue
                lease = task.result()
                assert lease.url in healthy
                assert not passing or lease.url in passing, f"{lease.url} is filtered out while {sorted(passing)} pass"
                held.append(lease)
            for state in pool.states:
                assert state.in_flight <= state.capacity
                assert state.in_flight == sum(1 for lease in held if lease.state is state)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert pool.waiting == 0

    asyncio.run(scenario())
