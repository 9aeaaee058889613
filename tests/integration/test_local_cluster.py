"""Two real llama-server replicas started by the engine, called through the router, then stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import llama_server_pids, wait_until

from dse.backends import Message
from dse.config import load_config
from dse.engine import Engine
from dse.routing import Intent

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_two_replicas_serve_real_completions_and_stop(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "config.yaml", environ={})

    async def scenario() -> tuple[list, dict, list[int]]:
        async with Engine(config, state_dir=tmp_path / ".dse") as engine:
            await engine.start(["local"])
            pids = [s.pid for s in engine.clusters["local"].servers]
            target = engine.resolver.resolve(Intent("t", model_key="generator", text="hi")).target
            prompts = [f"Name one fruit. Answer number {i}." for i in range(6)]
            responses = await asyncio.gather(
                *(engine.router.chat(target, [Message("user", p)]) for p in prompts)
            )
            return responses, engine.router.calls_per_endpoint(), pids

    responses, calls, pids = asyncio.run(scenario())
    assert len(pids) == 2
    for response in responses:
        assert response.text.strip(), "a real model answers with text"
        assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
        assert response.backend == "local" and response.model == "smollm2"
        assert response.latency > 0
    served = calls["local"]
    assert len(served) == 2 and all(n > 0 for n in served.values()), served
    assert sum(served.values()) == 6
    assert {r.endpoint for r in responses} == set(served)
    assert not (set(pids) & llama_server_pids()), "servers must be stopped when the engine closes"
    logs = sorted((tmp_path / ".dse" / "logs").glob("local-*.log"))
    assert len(logs) == 2 and all("--port" in log.read_text() for log in logs)


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found |= {int(c) for c in task.read_text().split()}
    return found


def _argv0(pid: int) -> bytes:
    """The program a process runs, by name, as /proc shows it ("" once it is gone)."""
    try:
        first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""
    return first.rsplit(b"/", 1)[-1]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_server_outlives_dse_however_it_ends(tmp_path: Path, write, how: signal.Signals) -> None:
    workflow = write(
        "slow.yaml",
        "name: slow\nsteps:\n  - id: hello\n    prompt: Say hi.\n  - id: wait\n    needs: [hello]\n    run: [sleep, '60']\n",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dse", "run", str(workflow), "--config", str(ROOT / "configs" / "config.yaml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: len(_children(process.pid) & llama_server_pids()) == 2, timeout=60)
        servers = _children(process.pid) & llama_server_pids()
        # The step's process has exec'd `sleep` (not just been forked): the run is mid-step.
        assert wait_until(lambda: any(_argv0(c) == b"sleep" for c in _children(process.pid) - servers), timeout=60), "the sleep step starts"
        os.kill(process.pid, how)
        process.wait(timeout=30)
        assert wait_until(lambda: not (servers & llama_server_pids()), timeout=15), "servers outlived dse"
        if how != signal.SIGKILL:
            assert process.returncode == 130
            assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
