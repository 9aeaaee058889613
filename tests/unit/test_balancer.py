"""The endpoint pool: settings, capacity, the FIFO queue and its limits, eligibility filters, policies.

Probes and GPU readers are injected fakes here, so every reading is exactly what the test says;
tests/unit/test_balancer_stubs.py runs the same pool against real sockets.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from dse import QueueFull, QueueTimeout
from dse.backends import LoadedModel, ServerReport, make_backend
from dse.balance import BalancerSettings, EndpointPool, Lease, balancer_settings, pool_for
from dse.config import load_config
from dse.config.model import Endpoint
from dse.errors import BackendUnavailable

A, B, C = "http://a", "http://b", "http://c"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reports:
    """A probe whose answers the test sets per URL; unknown URLs answer "ready, nothing else to say"."""

    def __init__(self, **by_url: ServerReport) -> None:
        self.by_url = {url: report for url, report in by_url.items()}
        self.asked: list[str] = []

    async def __call__(self, endpoint: Endpoint) -> ServerReport:
        self.asked.append(endpoint.url)
        return self.by_url.get(endpoint.url, ServerReport())


def pool(
    *endpoints: Endpoint | str,
    probe: Reports | None = None,
    clock: Clock | None = None,
    seed: int = 1,
    **settings: object,
) -> EndpointPool:
    return EndpointPool(
        [e if isinstance(e, Endpoint) else Endpoint(e) for e in endpoints],
        settings=BalancerSettings(**settings),  # type: ignore[arg-type]
        probe=probe,
        clock=clock or Clock(),
        rng=random.Random(seed),
    )


def run(coroutine):
    return asyncio.run(coroutine)


# ---- settings ---------------------------------------------------------------------------


def test_settings_defaults_and_backend_overrides() -> None:
    assert BalancerSettings() == BalancerSettings("least_loaded", None, None, 256, 300.0, 10.0)
    merged = balancer_settings({"policy": "random", "queue_limit": 8}, {"queue_limit": 2, "max_gpu_utilization": 90})
    assert (merged.policy, merged.queue_limit, merged.max_gpu_utilization, merged.queue_timeout) == ("random", 2, 90, 300.0)
    with pytest.raises(ValueError, match="fastest"):
        BalancerSettings(policy="fastest")


def test_a_backend_block_balancer_reaches_its_pool(write) -> None:
    config = load_config(
        write(
            "config.yaml",
            "llm:\n  backend: box\n  balancer: {policy: round_robin, queue_timeout: 5}\n"
            "  box:\n    type: openai\n    api_key: k\n    balancer: {policy: random}\n"
            "    endpoints: [http://one/v1, {url: http://two/v1, max_concurrency: 3}]\n    models: {generator: m}\n",
        ),
        environ={},
    )
    backend = config.backends["box"]
    assert backend.balancer == {"policy": "random"}
    built = pool_for(config, backend, backend.endpoints_for(None), make_backend(backend))
    assert (built.settings.policy, built.settings.queue_timeout) == ("random", 5)
    assert [s.capacity for s in built.states] == [64, 3], "cloud default, then the configured max_concurrency"


# ---- capacity and the queue -------------------------------------------------------------


def test_capacity_is_never_exceeded_and_waiters_are_served_first_come_first_served() -> None:
    async def scenario() -> list[int]:
        p = pool(Endpoint(A, max_concurrency=2), B)
        held = [await p.lease() for _ in range(3)]
        assert sorted(s.in_flight for s in p.states) == [1, 2]
        served: list[int] = []

        async def wait(number: int) -> Lease:
            lease = await p.lease()
            served.append(number)
            return lease

        waiters = [asyncio.create_task(wait(n)) for n in range(4)]
        await asyncio.sleep(0)
        assert p.waiting == 4 and served == []
        late = asyncio.create_task(wait(99))
        await asyncio.sleep(0)
        for lease in held:
            lease.end(ok=True)
            await asyncio.sleep(0)
            assert all(s.in_flight <= s.capacity for s in p.states)
        leases = [await w for w in waiters[:3]]
        for lease in leases:
            lease.end(ok=True)
        await asyncio.gather(waiters[3], late)
        return served

    served = run(scenario())
    assert served == [0, 1, 2, 3, 99], "a call that arrives while others wait never overtakes them"


def test_a_full_queue_says_which_backend_how_many_wait_and_what_to_raise() -> None:
    async def scenario() -> None:
        p = pool(A, queue_limit=1)
        await p.lease()
        waiting = asyncio.create_task(p.lease(backend="box"))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as info:
            await p.lease(backend="box")
        text = str(info.value)
        assert "backend 'box'" in text and "1 call already waiting" in text and "1 of 1 slots in use" in text
        assert "llm.balancer.queue_limit" in text and "llm.box.balancer.queue_limit" in text
        assert isinstance(info.value, BackendUnavailable), "the router treats it as unavailable: it falls back"
        waiting.cancel()

    run(scenario())


def test_queue_limit_zero_means_do_not_queue() -> None:
    async def scenario() -> None:
        p = pool(A, queue_limit=0)
        await p.lease()
        with pytest.raises(QueueFull):
            await p.lease()

    run(scenario())


def test_a_queue_timeout_gives_up_without_holding_a_slot() -> None:
    async def scenario() -> None:
        p = pool(A, queue_timeout=0.05)
        first = await p.lease()
        with pytest.raises(QueueTimeout) as info:
            await p.lease(backend="box")
        assert "waited 0.05s" in str(info.value) and "queue_timeout" in str(info.value)
        assert p.waiting == 0 and p.states[0].in_flight == 1
        first.end(ok=True)
        assert p.states[0].in_flight == 0
        (await p.lease()).end(ok=True)

    run(scenario())


def test_a_cancelled_waiter_leaves_the_line_and_a_slot_handed_to_it_comes_back() -> None:
    async def scenario() -> None:
        p = pool(A)
        first = await p.lease()
        doomed = asyncio.create_task(p.lease())
        second = asyncio.create_task(p.lease())
        await asyncio.sleep(0)
        first.end(ok=True)  # hands the slot to `doomed`, which is cancelled before it runs
        doomed.cancel()
        lease = await second
        assert lease.url == A and p.states[0].in_flight == 1 and p.waiting == 0

    run(scenario())


def test_ending_a_lease_twice_counts_once() -> None:
    async def scenario() -> None:
        p = pool(A)
        lease = await p.lease()
        lease.end(ok=False)
        lease.end(ok=True)
        state = p.states[0]
        assert (state.in_flight, state.failed, state.served, state.streak) == (0, 1, 0, 1)

    run(scenario())


# ---- filters ------------------------------------------------------------------------------


def test_every_endpoint_cooling_down_is_an_error_even_for_a_waiter() -> None:
    async def scenario() -> None:
        p = pool(A)
        healthy = {A: True}
        first = await p.lease(lambda url: healthy[url])
        waiter = asyncio.create_task(p.lease(lambda url: healthy[url]))
        await asyncio.sleep(0)
        healthy[A] = False
        first.end(ok=False)
        with pytest.raises(BackendUnavailable, match="cooling down"):
            await waiter
        assert p.states[0].reason == "skipped: cooling down after repeated failures"

    run(scenario())


def read_all(p: EndpointPool) -> None:
    run(p.refresh())


def test_a_loading_server_is_skipped_while_another_is_ready() -> None:
    probe = Reports(**{B: ServerReport(ready=False, detail="loading the model")})
    p = pool(A, B, probe=probe)
    read_all(p)

    async def many() -> list[str]:
        urls = []
        for _ in range(6):
            lease = await p.lease()
            urls.append(lease.url)
            lease.end(ok=True)
        return urls

    assert set(run(many())) == {A}
    assert p.states[1].reason == "skipped: not ready: loading the model"
    assert p.states[0].reason == "eligible"


def test_a_server_without_the_model_is_skipped_and_one_that_cannot_tell_passes() -> None:
    probe = Reports(
        **{A: ServerReport(models=frozenset({"other"})), B: ServerReport(models=frozenset({"llama3:latest", "llama3"})), C: ServerReport()}
    )
    p = pool(A, B, C, probe=probe)
    read_all(p)

    async def many() -> Counter[str]:
        urls: Counter[str] = Counter()
        for _ in range(8):
            lease = await p.lease(model="llama3")
            urls[lease.url] += 1
            lease.end(ok=True)
        return urls

    counts = run(many())
    assert counts[A] == 0 and counts[B] > 0 and counts[C] > 0, "a server listing the model (under any name it answers to) takes it"
    assert p.states[0].reason == "skipped: does not have the model 'llama3'"


def test_when_every_endpoint_is_filtered_out_the_healthy_ones_are_used_with_the_reason() -> None:
    probe = Reports(**{A: ServerReport(ready=False, detail="HTTP 500"), B: ServerReport(reachable=False, ready=False, detail="refused")})
    p = pool(A, B, probe=probe)
    read_all(p)

    async def once() -> str:
        lease = await p.lease(lambda url: url == B)
        return lease.url

    assert run(once()) == B, "the breaker's verdict is the one filter without a fallback"
    assert p.states[1].reason == "used although unreachable: refused (no endpoint passes that check)"


def test_a_stale_reading_is_not_trusted() -> None:
    clock = Clock()
    probe = Reports(**{B: ServerReport(ready=False, detail="loading the model")})
    p = pool(A, B, probe=probe, clock=clock, metrics_max_age=10)
    read_all(p)
    assert p.monitor.current(p.states[1].endpoint) is not None
    clock.now += 11
    assert p.monitor.current(p.states[1].endpoint) is None

    async def first() -> None:
        p.states[0].in_flight = 1  # A is full, so a trusted "loading" reading on B would make this call wait
        lease = await p.lease()
        assert lease.url == B and p.states[1].reason == "eligible"

    run(first())


def test_probing_happens_in_the_background_never_on_the_call() -> None:
    gate = asyncio.Event()

    class Slow(Reports):
        async def __call__(self, endpoint: Endpoint) -> ServerReport:
            self.asked.append(endpoint.url)
            await gate.wait()
            return ServerReport(slots=3)

    async def scenario() -> None:
        probe = Slow()
        p = pool(A, B, probe=probe)
        lease = await p.lease()
        assert lease.state.capacity == 1, "no answer yet: the default capacity"
        await asyncio.sleep(0)
        assert sorted(probe.asked) == [A, B], "the lease started a refresh of both endpoints"
        await p.lease()
        assert sorted(probe.asked) == [A, B], "one refresh at a time per endpoint"
        gate.set()
        await asyncio.sleep(0.01)
        assert [s.capacity for s in p.states] == [3, 3]

    run(scenario())


def test_slots_learned_from_a_probe_serve_the_waiting_calls() -> None:
    gate = asyncio.Event()

    class Later(Reports):
        async def __call__(self, endpoint: Endpoint) -> ServerReport:
            await gate.wait()
            return ServerReport(slots=2)

    async def scenario() -> None:
        p = pool(A, B, probe=Later())
        held = [await p.lease(), await p.lease()]
        waiter = asyncio.create_task(p.lease())
        await asyncio.sleep(0)
        assert p.waiting == 1
        gate.set()
        lease = await asyncio.wait_for(waiter, 5)
        assert len({lease.url, *(h.url for h in held)}) == 2 and sum(s.in_flight for s in p.states) == 3

    run(scenario())


# ---- policies -------------------------------------------------------------------------------


async def take(p: EndpointPool, count: int, *, hold: bool = False) -> list[str]:
    urls = []
    for _ in range(count):
        lease = await p.lease()
        urls.append(lease.url)
        if not hold:
            lease.end(ok=True)
    return urls


def test_least_loaded_fills_by_capacity_and_weight() -> None:
    """Load is calls in flight / (slots x weight): A 6 slots, B 2, C 2 slots at weight 2 (counts as 4).

    Fewer calls than slots are held, so "every slot ends up full" cannot pass for this: round
    robin follows the weights alone (C, A, B, C, ...) and random whatever its draws give.
    """
    for seed in range(5):
        p = pool(Endpoint(A, max_concurrency=6), Endpoint(B, max_concurrency=2), Endpoint(C, max_concurrency=2, weight=2), seed=seed)
        urls = run(take(p, 6, hold=True))
        assert set(urls[:3]) == {A, B, C}, "no endpoint takes a second call while another is idle"
        assert urls[3:] == [A, C, A], "then A (1/6), C (1/4), A (2/6): the lowest load each time"
        assert Counter(urls) == {A: 3, B: 1, C: 2}
        assert [s.in_flight for s in p.states] == [3, 1, 2]


def test_least_loaded_counts_what_the_server_says_it_is_busy_with() -> None:
    probe = Reports(**{A: ServerReport(busy=3), B: ServerReport(waiting=2, busy=0)})
    p = pool(Endpoint(A, max_concurrency=4), Endpoint(B, max_concurrency=4), Endpoint(C, max_concurrency=4), probe=probe)
    read_all(p)
    counts = Counter(run(take(p, 4, hold=True)))
    assert counts == {C: 3, B: 1}, "C was idle, B had 2 calls queued on the server, A 3 running"


def test_round_robin_rotates_and_honours_weights() -> None:
    p = pool(Endpoint(A, max_concurrency=9), Endpoint(B, max_concurrency=9, weight=2), policy="round_robin")
    assert run(take(p, 6)) == [B, A, B, B, A, B]


def test_random_honours_weights() -> None:
    p = pool(Endpoint(A, max_concurrency=9), Endpoint(B, max_concurrency=9, weight=3), policy="random", seed=7)
    counts = Counter(run(take(p, 400)))
    assert 2 < counts[B] / counts[A] < 4.5


def test_a_failed_endpoint_is_not_the_next_choice() -> None:
    async def scenario() -> tuple[str, str]:
        p = pool(A, B)
        lease = await p.lease()
        lease.end(ok=False)
        return lease.url, (await p.lease()).url

    failed, retried = run(scenario())
    assert failed != retried


def test_offloaded_models_and_full_kv_caches_are_skipped_while_another_has_room() -> None:
    probe = Reports(
        **{
            A: ServerReport(loaded={"big:latest": LoadedModel("big:latest", size=100, size_vram=40)}),
            B: ServerReport(kv_cache_usage=0.99),
            C: ServerReport(loaded={"big:latest": LoadedModel("big:latest", size=100, size_vram=100)}),
        }
    )
    p = pool(A, B, C, probe=probe)
    read_all(p)
    assert set(run(take(p, 6))) == {C}
    assert p.states[0].reason == "skipped: big:latest is only 40% in GPU memory (the rest runs on the CPU)"
    assert p.states[1].reason == "skipped: its KV cache is 99% full"
