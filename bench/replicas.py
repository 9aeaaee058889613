"""What more managed replicas buy: the same workload against 1 llama-server replica, then against 3.

24 short completions (max_tokens 16), six in flight at a time, each replica one thread and one
slot. Startup is not timed, only the calls (each replica's first call, cold, included). The speed-up is bounded by the CPU cores the
replicas can spread over, so the core count is printed with it. Printed, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from dse.backends import Message
from dse.config import load_config
from dse.engine import Engine
from dse.routing import Intent

CALLS = 24
IN_FLIGHT = 6
MAX_TOKENS = 16


async def timed(directory: Path, replicas: int) -> tuple[float, dict[str, int]]:
    path = directory / f"config-{replicas}.yaml"
    path.write_text(
        "llm:\n  backend: local\n  local:\n    type: llamacpp\n"
        f"    managed: {{model: smollm2, replicas: {replicas}, threads: 1, parallel: 1, repeat_penalty: 1.3}}\n"
        f"    models: {{generator: smollm2}}\n  global_defaults: {{temperature: 0, max_tokens: {MAX_TOKENS}}}\n"
    )
    config = load_config(path, environ={})
    async with Engine(config, state_dir=directory / ".dse") as engine:
        await engine.start(["local"])
        target = engine.resolver.resolve(Intent("bench", model_key="generator")).target
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with gate:
                await engine.router.chat(target, [Message("user", f"Name a colour. Variation {i}.")])

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(CALLS)))
        seconds = time.perf_counter() - started
        calls = engine.router.calls_per_endpoint()["local"]
    return seconds, calls


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        one, _ = asyncio.run(timed(Path(directory), 1))
        three, spread = asyncio.run(timed(Path(directory), 3))
    print(f"replicas: {CALLS} completions (max_tokens {MAX_TOKENS}), {IN_FLIGHT} in flight, {os.cpu_count()} CPU cores")
    print(f"  1 replica  : {one:.2f}s")
    print(f"  3 replicas : {three:.2f}s  (calls per replica: {sorted(spread.values())})")
    print(f"  speed-up   : {one / three:.2f}x (ideal 3x, given 3 free cores)")


if __name__ == "__main__":
    main()
