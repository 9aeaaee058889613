"""The same fan-out in this process and on a two-worker Dask cluster: equal outputs, and what the cluster costs.

A stub in a child process answers each item with its own prompt (so equal outputs mean every
item went out and came back to its place) after DELAY seconds, on one endpoint of CAPACITY
slots. Both runs are timed inside the run, from the first step starting to the last finishing
(cluster start-up is reported apart), and the dse process's CPU per item is measured for each.
Printed side by side; never asserted.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ITEMS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CAPACITY = 32
DELAY = 0.005

SERVE = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); from stubs import StubServer, Reply, openai_chat\n"
    f"answer = lambda r: Reply(json=openai_chat('re: ' + r.json['messages'][-1]['content']).json, delay={DELAY})\n"
    "with StubServer() as s:\n"
    "    s.route('POST', '/v1/chat/completions', answer)\n"
    "    print(s.url, flush=True)\n"
    "    time.sleep(3600)\n"
)


def run(url: str, directory: Path, cluster: str | None) -> tuple[list[Any], float, float, float]:
    """Outputs, makespan inside the run, wall time of the whole call, and CPU seconds of this process."""
    from dse.runner import prepare, run_workflow

    config = directory / "config.yaml"
    config.write_text(
        f"llm:\n  backend: s\n  s: {{type: vllm, endpoints: [{{url: '{url}/v1', max_concurrency: {CAPACITY}}}], "
        "models: {generator: m}}\n"
    )
    workflow = directory / "fan.yaml"
    workflow.write_text(f"name: fan\nsteps:\n  - id: each\n    for_each: '{{{{ range({ITEMS}) | list }}}}'\n    prompt: 'item {{{{ item }}}}'\n")
    prepared = prepare(workflow, config)
    cpu, wall = time.process_time(), time.perf_counter()
    result, _ = asyncio.run(run_workflow(prepared, state_dir=directory / f".dse-{cluster or 'here'}", cluster=cluster))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    step = result.steps["each"]
    assert result.status == "done", step.error
    assert step.started_at is not None and step.finished_at is not None
    return list(step.output), step.finished_at - step.started_at, wall, cpu


def main() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT / "tests")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as directory:
            here = run(url, Path(directory), None)
            there = run(url, Path(directory), "local:2")
    finally:
        server.kill()
    ideal = ITEMS / CAPACITY * DELAY
    print(f"fan-out of {ITEMS} items, endpoint of {CAPACITY} slots answering in {DELAY * 1000:.0f} ms (ideal makespan {ideal:.2f} s)")
    print(f"  outputs equal        : {here[0] == there[0] == [f're: item {i}' for i in range(ITEMS)]}")
    print(f"  {'':22} {'in-process':>12} {'local:2':>12}")
    print(f"  {'makespan (s)':22} {here[1]:12.2f} {there[1]:12.2f}")
    print(f"  {'makespan / ideal':22} {here[1] / ideal:12.2f} {there[1] / ideal:12.2f}")
    print(f"  {'ms per item (wall)':22} {here[1] / ITEMS * 1000:12.2f} {there[1] / ITEMS * 1000:12.2f}")
    print(f"  {'dse CPU ms per item':22} {here[3] / ITEMS * 1000:12.2f} {there[3] / ITEMS * 1000:12.2f}")
    print(f"  {'start-up + teardown (s)':22} {here[2] - here[1]:11.2f} {there[2] - there[1]:12.2f}")


if __name__ == "__main__":
    main()
