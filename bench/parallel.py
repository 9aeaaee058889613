"""Independent steps run concurrently: the same 8-step workflow with max_parallel 1 vs 8.

A stub server answers every call after 200 ms, standing in for a model; the ratio shows how
much of the ideal 8x the scheduler delivers. Printed, never asserted.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from stubs import Reply, StubServer, openai_chat  # noqa: E402

from dse.runner import prepare, run_workflow  # noqa: E402

STEPS = 8
DELAY = 0.2


def timed(directory: Path, url: str, parallel: int) -> float:
    config = directory / "config.yaml"
    config.write_text(f"llm:\n  backend: s\n  s:\n    type: vllm\n    base_url: '{url}/v1'\n    models: {{generator: m}}\n    endpoints: [{{url: '{url}/v1', max_concurrency: 8}}]\n")
    workflow = directory / "wf.yaml"
    workflow.write_text("name: fan\nsteps:\n" + "".join(f"  - id: s{i}\n    prompt: p{i}\n" for i in range(STEPS)))
    prepared = prepare(workflow, config)
    started = time.perf_counter()
    asyncio.run(run_workflow(prepared, max_parallel=parallel, state_dir=directory / ".dse"))
    return time.perf_counter() - started


def main() -> None:
    with StubServer() as stub, tempfile.TemporaryDirectory() as directory:
        reply = openai_chat("ok")
        stub.route("POST", "/v1/chat/completions", Reply(json=reply.json, delay=DELAY))
        timed(Path(directory), stub.url, STEPS)  # warm-up: SDK submodules load on the first call
        serial = timed(Path(directory), stub.url, 1)
        parallel = timed(Path(directory), stub.url, STEPS)
    print(f"parallel: {STEPS} independent steps, each call {DELAY * 1000:.0f} ms at the server")
    print(f"  max_parallel 1 : {serial:.2f}s")
    print(f"  max_parallel {STEPS} : {parallel:.2f}s")
    print(f"  speed-up       : {serial / parallel:.2f}x (ideal {STEPS}x)")


if __name__ == "__main__":
    main()
