"""The seam between scheduler and step bodies: one retry policy for every kind, requests that travel.

Model steps go through a real router to a loopback stub that fails with 503; command steps run
`false`. Both are given the same `retry:`, and jitter pinned to its middle, and must wait the
same seconds: the schema's rule (`backoff` first, then doubling, ±25 %), whoever does the waiting.
"""

from __future__ import annotations

import asyncio
import pickle
import random

import pytest

from dse.config import load_config
from dse.routing import Resolver, Router
from dse.runners import InProcessRunner
from dse.workflow import Scheduler, bind_inputs, build_plan, load_workflow
from dse.workflow.steps import Command, ModelCall, request_for
from stubs import StubServer, openai_error

RETRY = "    retry: {attempts: 4, backoff: 0.5}\n"
STEPS = {
    "command": "  - id: flaky\n    run: ['false']\n" + RETRY,
    "model": "  - id: flaky\n    prompt: 'hello'\n" + RETRY,
}


class NoJitter(random.Random):
    """Jitter at the middle of its ±25 % band: the waits are the rule's base figures exactly."""

    def random(self) -> float:
        return 0.5


def _plan(write, stub: StubServer, kind: str):
    config = load_config(
        write("config.yaml", f"llm:\n  backend: s\n  circuit_breaker: {{failures: 10}}\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n"),
        environ={},
    )
    workflow = load_workflow(write("wf.yaml", "name: r\nsteps:\n" + STEPS[kind]))
    return config, build_plan(workflow, config, Resolver(config))


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_command_and_model_steps_wait_alike_between_attempts(kind: str, stub: StubServer, write) -> None:
    stub.route("POST", "/v1/chat/completions", openai_error(503, "overloaded"))
    config, plan = _plan(write, stub, kind)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main():
        router = Router(config, sleep=sleep, rng=NoJitter())
        try:
            scheduler = Scheduler(plan, InProcessRunner(router), sleep=sleep, rng=NoJitter())
            return await scheduler.run(bind_inputs(plan.workflow, {}))
        finally:
            await router.aclose()

    result = asyncio.run(main())
    step = result.steps["flaky"]
    assert step.status == "failed" and step.attempts == 4, step
    assert waits == [0.5, 1.0, 2.0], "backoff first, then doubling"
    assert len(stub.calls("POST", "/v1/chat/completions")) == (4 if kind == "model" else 0)


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_a_rendered_request_is_plain_data_that_survives_pickling(kind: str, stub: StubServer, write) -> None:
    """What a Dask worker receives: the same request, with nothing of this process attached."""
    _config, plan = _plan(write, stub, kind)
    request = request_for(plan.steps["flaky"], {"inputs": {}, "steps": {}, "env": {}}, None)
    assert isinstance(request, ModelCall if kind == "model" else Command)
    assert pickle.loads(pickle.dumps(request)) == request
