"""dse beside a peer router (LiteLLM), against the same loopback stub server, in the same run.

Three things users of routers feel: how long a cold process takes to send its first call,
what each call costs on top of the HTTP round trip, and how many requests one failing call
turns into. LiteLLM runs in its own virtualenv (`make bench` creates `.venv-bench`); without
it this benchmark says so and measures dse alone. Printed as ratios, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from stubs import StubServer, openai_chat, openai_error  # noqa: E402

PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
CALLS = 200

LITELLM_FIRST = """
import time, litellm
started = time.perf_counter()
litellm.completion(model="openai/m", api_base="{url}/v1", api_key="x", messages=[{{"role": "user", "content": "hi"}}])
"""
LITELLM_LOOP = """
import asyncio, time, litellm
async def main():
    await litellm.acompletion(model="openai/m", api_base="{url}/v1", api_key="x", messages=[{{"role": "user", "content": "hi"}}])
    started = time.perf_counter()
    for _ in range({calls}):
        await litellm.acompletion(model="openai/m", api_base="{url}/v1", api_key="x", messages=[{{"role": "user", "content": "hi"}}])
    print(time.perf_counter() - started)
asyncio.run(main())
"""
LITELLM_FAILING = """
import litellm
try:
    litellm.completion(model="openai/m", api_base="{url}/v1", api_key="x", messages=[{{"role": "user", "content": "hi"}}])
except Exception as exc:
    print(type(exc).__name__)
"""
DSE_LOOP = """
import asyncio, sys, time
from pathlib import Path
from dse.backends import Message
from dse.config import load_config
from dse.routing import Intent, Resolver, Router
async def main():
    config = load_config(Path(sys.argv[1]), environ={{}})
    resolver = Resolver(config)
    router = Router(config, resolver)
    target = resolver.resolve(Intent("bench", model_key="generator")).target
    await router.chat(target, [Message("user", "hi")])
    started = time.perf_counter()
    for _ in range({calls}):
        await router.chat(target, [Message("user", "hi")])
    print(time.perf_counter() - started)
asyncio.run(main())
"""


def wall(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, done.stdout.strip() or done.stderr.strip()[-300:]


def main() -> None:
    peer = PEER_PYTHON.is_file()
    with StubServer() as stub, tempfile.TemporaryDirectory() as directory:
        stub.route("POST", "/v1/chat/completions", openai_chat("ok"))
        config = Path(directory) / "config.yaml"
        config.write_text(f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
        workflow = Path(directory) / "wf.yaml"
        workflow.write_text("name: one\nsteps:\n  - id: a\n    prompt: hi\n")

        print("first call from a cold process (best of 3):")
        dse_first = min(wall([sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config), "--quiet"])[0] for _ in range(3))
        print(f"  dse run (one-step workflow): {dse_first:.2f}s")
        if peer:
            peer_first = min(wall([str(PEER_PYTHON), "-c", LITELLM_FIRST.format(url=stub.url)])[0] for _ in range(3))
            print(f"  litellm.completion         : {peer_first:.2f}s   ratio dse/litellm {dse_first / peer_first:.2f}")

        print(f"per call, {CALLS} sequential calls after warm-up:")
        dse_loop = float(wall([sys.executable, "-c", DSE_LOOP.format(calls=CALLS), str(config)])[1])
        print(f"  dse router      : {dse_loop / CALLS * 1000:.2f} ms/call")
        if peer:
            peer_loop = float(wall([str(PEER_PYTHON), "-c", LITELLM_LOOP.format(url=stub.url, calls=CALLS)])[1].splitlines()[-1])
            print(f"  litellm         : {peer_loop / CALLS * 1000:.2f} ms/call   ratio dse/litellm {dse_loop / peer_loop:.2f}")

        print("requests sent for one call to a server answering 503, default settings:")
        stub.route("POST", "/v1/chat/completions", openai_error(503, "overloaded"))
        before = len(stub.requests)
        retry_once = Path(directory) / "retry.yaml"
        retry_once.write_text(config.read_text().replace("  s:", "  retry: {attempts: 3, backoff: 0.01}\n  s:", 1))
        wall([sys.executable, "-m", "dse", "run", str(workflow), "--config", str(retry_once), "--quiet"])
        print(f"  dse (llm.retry.attempts: 3): {len(stub.requests) - before} requests, exactly as configured")
        if peer:
            before = len(stub.requests)
            outcome = wall([str(PEER_PYTHON), "-c", LITELLM_FAILING.format(url=stub.url)])[1]
            print(f"  litellm                    : {len(stub.requests) - before} requests ({outcome.splitlines()[-1] if outcome else '?'})")
    if not peer:
        print(json.dumps({"peer": "not installed: run `make bench` to create .venv-bench with litellm"}))


if __name__ == "__main__":
    main()
