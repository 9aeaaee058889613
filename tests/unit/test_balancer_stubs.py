"""The balancer over real sockets: policies against servers of different speeds, what probes read, status.

Speeds are compared between two policies within one test (a ratio), never against a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from stubs import Reply, StubServer, openai_chat, refused_url

from dse.backends import Message
from dse.backends import LoadedModel, ServerReport, ServerReporter, make_backend
from dse.config import load_config
from dse.config.model import BackendConfig
from dse.console import show_text, status_text
from dse.routing import Intent, Resolver
from dse.routing.router import Router
from dse.status import collect_status
from dse.workflow.journal import RunJournal, read_run

MODELS = Reply(json={"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "stub"}]})


@pytest.fixture
def servers() -> Iterator[list[StubServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(StubServer()) for _ in range(2)]


def router_for(write, text: str) -> tuple[Router, object]:
    config = load_config(write("config.yaml", text), environ={})
    resolver = Resolver(config)
    return Router(config, resolver), resolver.resolve(Intent("s", model_key="generator")).target


def test_least_loaded_beats_round_robin_when_one_server_is_three_times_slower(servers, write) -> None:
    fast, slow = servers
    for server, delay in ((fast, 0.1), (slow, 0.3)):
        server.route("POST", "/v1/chat/completions", replace(openai_chat("ok"), delay=delay))
        server.route("GET", "/v1/models", MODELS)

    def batch(policy: str) -> tuple[float, int]:
        router, target = router_for(
            write,
            f"llm:\n  backend: pair\n  balancer: {{policy: {policy}}}\n  pair:\n    type: vllm\n"
            f"    endpoints: [{{url: '{fast.url}/v1', max_concurrency: 4}}, {{url: '{slow.url}/v1', max_concurrency: 4}}]\n"
            "    models: {generator: m}\n",
        )

        async def run() -> float:
            gate = asyncio.Semaphore(4)  # a workflow's max_parallel: four calls in flight, 24 in all

            async def one(i: int) -> None:
                async with gate:
                    await router.chat(target, [Message("user", f"q{i}")])

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(24)))
            seconds = time.perf_counter() - started
            await router.aclose()
            return seconds

        seconds = asyncio.run(run())
        return seconds, router.calls_per_endpoint()["pair"][f"{slow.url}/v1"]

    rr_seconds, rr_slow = batch("round_robin")
    ll_seconds, ll_slow = batch("least_loaded")
    print(f"round robin {rr_seconds:.2f}s ({rr_slow}/24 on the slow server), least loaded {ll_seconds:.2f}s ({ll_slow}/24)")
    assert rr_slow == 12, "round robin alternates, whatever the speeds"
    assert ll_slow < rr_slow
    assert ll_seconds < rr_seconds


def test_a_single_endpoint_is_never_probed(servers, write) -> None:
    stub, _ = servers
    stub.route("POST", "/v1/chat/completions", openai_chat("ok"))
    router, target = router_for(write, f"llm:\n  backend: v\n  v: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")

    async def run() -> None:
        for _ in range(3):
            await router.chat(target, [Message("user", "hi")])
        await asyncio.sleep(0.1)
        await router.aclose()

    asyncio.run(run())
    assert [(r.method, r.path) for r in stub.requests] == [("POST", "/v1/chat/completions")] * 3


def test_two_endpoints_are_probed_in_the_background(servers, write) -> None:
    for stub in servers:
        stub.route("POST", "/v1/chat/completions", openai_chat("ok"))
        stub.route("GET", "/v1/models", MODELS)
    a, b = servers
    router, target = router_for(write, f"llm:\n  backend: v\n  v: {{type: vllm, endpoints: ['{a.url}/v1', '{b.url}/v1'], models: {{generator: m}}}}\n")

    def probed() -> bool:
        return all(stub.calls("GET", "/v1/models") and stub.calls("GET", "/metrics") for stub in servers)

    async def run() -> None:
        await router.chat(target, [Message("user", "hi")])
        # The probes go out in the background: wait for the stubs to record them (10 s is only a safety net).
        async with asyncio.timeout(10):
            while not probed():
                await asyncio.sleep(0.01)
        await router.aclose()

    asyncio.run(run())
    assert probed(), "readiness, models and load, read aside"


# ---- what each server type's probe reads --------------------------------------------------


def probe(kind: str, url: str) -> ServerReport:
    adapter = make_backend(BackendConfig(name="b", type=kind, base_url=url))
    assert isinstance(adapter, ServerReporter), f"a local type's adapter reports: {kind}"
    return asyncio.run(adapter.report(url))


def test_llamacpp_loading_then_slots_and_busy(stub: StubServer) -> None:
    stub.route("GET", "/health", Reply(503, json={"error": {"code": 503, "message": "Loading model"}}), Reply(json={"status": "ok"}))
    stub.route("GET", "/props", Reply(json={"total_slots": 4, "default_generation_settings": {"n_ctx": 2048}}))
    stub.route("GET", "/slots", Reply(json=[{"id": i, "is_processing": i < 3} for i in range(4)]))
    assert probe("llamacpp", stub.url) == ServerReport(ready=False, detail="loading the model")
    assert probe("llamacpp", stub.url) == ServerReport(slots=4, busy=3)


def test_llamacpp_without_the_slots_endpoint_still_gives_slots(stub: StubServer) -> None:
    stub.route("GET", "/health", Reply(json={"status": "ok"}))
    stub.route("GET", "/props", Reply(json={"total_slots": 2}))
    stub.route("GET", "/slots", Reply(501, json={"error": {"message": "This server does not support slots endpoint."}}))
    assert probe("llamacpp", stub.url) == ServerReport(slots=2)


def test_ollama_models_sizes_and_offloading(stub: StubServer) -> None:
    stub.route("GET", "/api/tags", Reply(json={"models": [{"name": "llama3:latest", "size": 4_000_000_000}, {"name": "phi3:mini", "size": 2_000_000_000}]}))
    stub.route("GET", "/api/ps", Reply(json={"models": [{"name": "llama3:latest", "model": "llama3:latest", "size": 6_000_000_000, "size_vram": 3_000_000_000}]}))
    report = probe("ollama", stub.url)
    assert report.models == {"llama3:latest", "llama3", "phi3:mini"}, "llama3:latest also answers to llama3"
    assert report.model_sizes == {"llama3:latest": 4_000_000_000, "llama3": 4_000_000_000, "phi3:mini": 2_000_000_000}
    loaded = LoadedModel("llama3:latest", 6_000_000_000, 3_000_000_000)
    assert report.loaded == {"llama3:latest": loaded, "llama3": loaded}
    assert report.loaded["llama3"].offloaded


@pytest.mark.parametrize("kv_name", ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"])
def test_vllm_metrics_old_and_new_names(stub: StubServer, kv_name: str) -> None:
    metrics = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 5.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
        f'{kv_name}{{engine="0",model_name="m"}} 0.42\n'
    )
    stub.route("GET", "/v1/models", MODELS)
    stub.route("GET", "/metrics", Reply(body=metrics.encode(), headers={"Content-Type": "text/plain; version=0.0.4"}))
    assert probe("vllm", f"{stub.url}/v1") == ServerReport(busy=5, waiting=2, kv_cache_usage=0.42, models=frozenset({"m"}))


def test_an_unreachable_server() -> None:
    report = probe("lmstudio", refused_url())
    assert not report.reachable and not report.ready and "cannot reach" in report.detail


def test_a_rejected_key_is_not_ready(stub: StubServer) -> None:
    stub.route("GET", "/v1/models", Reply(401, json={"error": {"message": "bad key"}}))
    report = probe("tabbyapi", f"{stub.url}/v1")
    assert report.reachable and not report.ready and "authentication failed (401)" in report.detail


# ---- what people see ---------------------------------------------------------------------


def test_status_shows_capacity_load_gpu_and_why_an_endpoint_is_skipped(servers, write) -> None:
    roomy, starved = servers
    tags = Reply(json={"models": [{"name": "llama3:latest", "size": 4_000_000_000}]})
    for server, vram in ((roomy, 4_000_000_000), (starved, 1_000_000_000)):
        server.route("GET", "/api/version", Reply(json={"version": "0.5.0"}))
        server.route("GET", "/api/tags", tags)
        server.route("GET", "/api/ps", Reply(json={"models": [{"name": "llama3:latest", "size": 4_000_000_000, "size_vram": vram}]}))
    config = load_config(
        write(
            "config.yaml",
            f"llm:\n  backend: box\n  box:\n    type: ollama\n    endpoints: ['{roomy.url}', {{url: '{starved.url}', gpu: 0, max_concurrency: 2}}]\n"
            "    models: {generator: llama3}\n",
        ),
        environ={},
    )
    reports = asyncio.run(collect_status(config))
    text = status_text(reports)
    assert "load: capacity 4 (default)" in text and "load: capacity 2 (max_concurrency)" in text
    assert "GPU: not checked (give the endpoint `gpu:` to check headroom)" in text
    assert "GPU 0: " in text, "a reading, or unknown with the reason (this machine may have no NVML)"
    assert "balancer: eligible" in text
    assert "balancer: skipped: llama3:latest is only 25% in GPU memory (the rest runs on the CPU)" in text
    balance = reports[0].endpoints[1].balance
    assert balance is not None and not balance.eligible and balance.capacity == 2


def test_show_prints_how_the_calls_were_spread(tmp_path: Path, write) -> None:
    workflow = write("wf.yaml", "name: w\nsteps:\n  - id: a\n    prompt: hi\n")
    journal = RunJournal.create(tmp_path, workflow=str(workflow), workflow_name="w", config=str(workflow), inputs={})
    journal.event("run_started")
    journal.event("calls_per_endpoint", calls={"local": {"http://a": 2, "http://b": 1}})
    journal.event("run_resumed", reused=[])
    journal.event("calls_per_endpoint", calls={"local": {"http://a": 1}})
    journal.close()
    record = read_run(journal.directory)
    assert record.calls == {"local": {"http://a": 3, "http://b": 1}}, "summed over the run and its resumption"
    assert "calls on local: http://a x3, http://b x1" in show_text(record)
    assert json.loads(json.dumps(record.as_dict()))["calls"] == record.calls


def test_calls_per_endpoint_counts_every_request_the_server_received(stub: StubServer, write) -> None:
    """A 500 then an answer is two calls on that endpoint, as the server saw them, not one."""
    stub.route("POST", "/v1/chat/completions", Reply(status=500, json={"error": {"message": "boom"}}), openai_chat("ok"))
    router, target = router_for(
        write, f"llm:\n  backend: s\n  retry: {{attempts: 3, backoff: 0}}\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n"
    )

    async def run() -> None:
        try:
            await router.chat(target, [Message("user", "hi")])
        finally:
            await router.aclose()

    asyncio.run(run())
    assert router.calls_per_endpoint() == {"s": {f"{stub.url}/v1": 2}} == {"s": {f"{stub.url}/v1": len(stub.requests)}}
