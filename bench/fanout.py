"""What a large `for_each` costs the dse process per item, against the raw SDK per call at the same concurrency.

The stub server runs in a child process, so the CPU time measured here (`time.process_time`,
every thread of this process: event loop and template workers) is the client side alone. Both
sides make ITEMS calls with CONCURRENCY in flight to a server that answers at once. Printed as
a ratio measured in this run, with the peak RSS of this process; never asserted.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEMS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CONCURRENCY = 32

SERVE = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); from stubs import StubServer, openai_chat\n"
    "with StubServer() as s:\n"
    "    s.route('POST', '/v1/chat/completions', openai_chat('ok'))\n"
    "    print(s.url, flush=True)\n"
    "    time.sleep(3600)\n"
)


async def raw_sdk(url: str) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"item {i}"}])

    await asyncio.gather(*(one(i) for i in range(ITEMS)))
    await client.close()


def through_dse(url: str, directory: Path) -> None:
    from dse.runner import prepare, run_workflow

    config = directory / "config.yaml"
    config.write_text(
        f"llm:\n  backend: s\n  s: {{type: vllm, endpoints: [{{url: '{url}/v1', max_concurrency: {CONCURRENCY}}}], "
        "models: {generator: m}}\n"
    )
    workflow = directory / "fan.yaml"
    workflow.write_text(f"name: fan\nsteps:\n  - id: each\n    for_each: '{{{{ range({ITEMS}) | list }}}}'\n    prompt: 'item {{{{ item }}}}'\n")
    prepared = prepare(workflow, config)
    result, _ = asyncio.run(run_workflow(prepared, max_parallel=CONCURRENCY, state_dir=directory / ".dse"))
    assert result.status == "done", result.steps["each"].error


def cpu(work: object) -> float:
    started = time.process_time()
    work()  # type: ignore[operator]
    return time.process_time() - started


def main() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT / "tests")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        asyncio.run(raw_sdk(url))  # warm-up: imports, connections
        raw = cpu(lambda: asyncio.run(raw_sdk(url)))
        # Importing dse is left out as importing openai is on the raw side (its warm-up); everything
        # a run does (config, plan, journal, connections) is counted.
        imports = cpu(lambda: __import__("dse.runner"))
        with tempfile.TemporaryDirectory() as directory:
            engine = cpu(lambda: through_dse(url, Path(directory)))
    finally:
        server.kill()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fan-out of {ITEMS} items, {CONCURRENCY} in flight, stub in another process")
    print(f"  raw openai SDK : {raw / ITEMS * 1000:.2f} ms CPU per call")
    print(f"  dse for_each   : {engine / ITEMS * 1000:.2f} ms CPU per item (journal, templates, router included)")
    print(f"  ratio dse/raw  : {engine / raw:.2f}")
    print(f"  importing dse  : {imports:.2f} s CPU once, not counted above ({imports / ITEMS * 1000:.2f} ms per item)")
    print(f"  peak RSS       : {peak:.0f} MB")


if __name__ == "__main__":
    main()
