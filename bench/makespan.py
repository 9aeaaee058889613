"""Makespan of 64 independent model steps on one endpoint that takes 16 at once, without `max_parallel`.

Why: the scheduler's default must fill an endpoint's capacity by itself. Each call is answered
by a loopback stub (in a child process, so this process is the client alone) after 100 ms, so
the ideal is ceil(64/16) * 0.1 s = 0.4 s. The makespan is read from the run itself (earliest
step `started_at` to latest `finished_at`), so config load, planning and engine start are
excluded from the ratio and printed apart as start-up. `--cluster local:2` is passed to
`run_workflow` only where it takes a `cluster` keyword. Printed as a ratio, never asserted.
"""

from __future__ import annotations

import time

PROCESS_START = time.monotonic()  # before any dse import

import argparse  # noqa: E402
import asyncio  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from dse.runner import prepare, run_workflow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS, CAPACITY, DELAY = 64, 16, 0.1
TARGET = 1.15

SERVE = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); from stubs import Reply, StubServer, openai_chat\n"
    "with StubServer() as s:\n"
    f"    s.route('POST', '/v1/chat/completions', Reply(json=openai_chat('ok').json, delay={DELAY}))\n"
    "    print(s.url, flush=True)\n"
    "    time.sleep(3600)\n"
)


async def raw_sdk(url: str) -> float:
    """The same 64 calls, 16 at a time, straight through a fresh openai client: the floor this machine allows."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    gate = asyncio.Semaphore(CAPACITY)
    started = time.monotonic()

    async def one(i: int) -> None:
        async with gate:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"step {i}"}])

    await asyncio.gather(*(one(i) for i in range(STEPS)))
    elapsed = time.monotonic() - started
    await client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cluster", help="e.g. local:2; passed to run_workflow(cluster=...) where it is accepted")
    args = parser.parse_args()
    imported = time.monotonic()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT / "tests")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        stub_wait = time.monotonic() - imported  # the stub's start, not ours: left out of start-up
        with tempfile.TemporaryDirectory() as name:
            directory = Path(name)
            (directory / "config.yaml").write_text(
                f"llm:\n  backend: s\n  s: {{type: vllm, endpoints: [{{url: '{url}/v1', max_concurrency: {CAPACITY}}}], "
                "models: {generator: m}}\n"
            )
            workflow = directory / "wf.yaml"
            workflow.write_text("name: makespan\nsteps:\n" + "".join(f"  - id: s{i}\n    prompt: 'step {i}'\n" for i in range(STEPS)))
            prepare_start = time.monotonic()
            prepared = prepare(workflow, directory / "config.yaml")
            called = time.monotonic()
            extra: dict[str, Any] = {}
            if args.cluster is not None:
                if "cluster" in inspect.signature(run_workflow).parameters:
                    extra["cluster"] = args.cluster
                    print(f"cluster: {args.cluster}")
                else:
                    print("cluster: not available")
            result, _ = asyncio.run(run_workflow(prepared, state_dir=directory / ".dse", **extra))
            raw = asyncio.run(raw_sdk(url))
    finally:
        server.kill()
    assert result.status == "done", {s.id: s.error for s in result.steps.values() if s.error}
    first = min(s.started_at for s in result.steps.values() if s.started_at is not None)
    last = max(s.finished_at for s in result.steps.values() if s.finished_at is not None)
    makespan, ideal = last - first, math.ceil(STEPS / CAPACITY) * DELAY
    startup = first - PROCESS_START - stub_wait
    print(f"makespan: {STEPS} independent steps, one endpoint max_concurrency {CAPACITY}, {DELAY * 1000:.0f} ms per call, no max_parallel")
    print(f"  makespan       : {makespan:.3f}s (first step started -> last step finished)")
    print(f"  ideal          : {ideal:.3f}s")
    print(f"  ratio          : {makespan / ideal:.2f} (target <= {TARGET})" + ("" if makespan / ideal <= TARGET else "  ABOVE TARGET"))
    print(f"  raw openai SDK : {raw:.3f}s for the same calls, ratio {raw / ideal:.2f}; dse over raw {makespan / raw:.2f}")
    print(f"  start-up       : {startup:.3f}s (imports {imported - PROCESS_START:.3f}, prepare {called - prepare_start:.3f}, "
          f"run_workflow to first step {first - called:.3f}; stub start {stub_wait:.3f} left out)")


if __name__ == "__main__":
    main()
