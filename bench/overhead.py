"""What dse adds per model call: the router (resolution, pool, breaker, retries) vs the raw SDK.

Both sides call the same loopback stub server with the official `openai` async client, so the
ratio isolates the engine's own cost. Printed as a ratio measured in this run, never asserted.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from stubs import StubServer, openai_chat  # noqa: E402

from dse.backends import Message  # noqa: E402
from dse.config import load_config  # noqa: E402
from dse.routing import Intent, Resolver, Router  # noqa: E402

CALLS = 300


async def raw_sdk(url: str) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    started = time.perf_counter()
    for _ in range(CALLS):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def through_dse(url: str) -> float:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{url}/v1', models: {{generator: m}}}}\n")
        config = load_config(path, environ={})
    resolver = Resolver(config)
    router = Router(config, resolver)
    target = resolver.resolve(Intent("bench", model_key="generator")).target
    started = time.perf_counter()
    for _ in range(CALLS):
        await router.chat(target, [Message("user", "hi")])
    elapsed = time.perf_counter() - started
    await router.aclose()
    return elapsed


def main() -> None:
    with StubServer() as stub:
        stub.route("POST", "/v1/chat/completions", openai_chat("ok"))
        asyncio.run(raw_sdk(stub.url))
        raw = min(asyncio.run(raw_sdk(stub.url)) for _ in range(3))
        engine = min(asyncio.run(through_dse(stub.url)) for _ in range(3))
    print(f"overhead: {CALLS} sequential calls, best of 3")
    print(f"  raw openai SDK : {raw:.3f}s  ({raw / CALLS * 1000:.2f} ms/call)")
    print(f"  dse router     : {engine:.3f}s  ({engine / CALLS * 1000:.2f} ms/call)")
    print(f"  ratio dse/raw  : {engine / raw:.3f}  (+{(engine - raw) / CALLS * 1000:.3f} ms per call)")


if __name__ == "__main__":
    main()
