"""Three real llama-server replicas: calls spread over all of them; one killed mid-run is avoided, restarted, used again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from helpers import llama_server_pids, run_dse

from dse.config import load_config
from dse.engine import Engine
from dse.runner import prepare
from dse.runners import InProcessRunner
from dse.workflow import Scheduler

pytestmark = pytest.mark.integration

CONFIG = """\
llm:
  backend: local
  global_defaults: {temperature: 0.2, max_tokens: 8}
  local:
    type: llamacpp
    managed: {model: smollm2, replicas: 3, threads: 1, parallel: 1, repeat_penalty: 1.3}
    models: {generator: smollm2}
"""
# The breaker opens on the first failure and half-opens after a second; readings older than half a second are re-read.
RECOVERY = "  circuit_breaker: {failures: 1, cooldown: 1}\n  retry: {attempts: 4, backoff: 0.05}\n  balancer: {metrics_max_age: 0.5}\n"


def fan_out(name: str, count: int, needs: str = "") -> str:
    items = ", ".join(str(i) for i in range(count))
    return f"  - id: {name}\n{needs}    for_each: [{items}]\n    prompt: 'Say the number {{{{ item }}}} and nothing else.'\n"


def test_thirty_calls_spread_over_three_replicas(write, tmp_path: Path) -> None:
    config = write("config.yaml", CONFIG)
    workflow = write("spread.yaml", "name: spread\nsteps:\n" + fan_out("count", 30))
    result = run_dse("run", str(workflow), "--config", str(config), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    served = document["calls"]["local"]
    assert len(served) == 3 and sum(served.values()) == 30
    assert all(n >= 5 for n in served.values()), f"each replica takes a fair share (at least 5 of 30): {served}"
    shown = run_dse("show", document["id"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "calls on local: " in shown.stdout and all(f"{url} x{n}" in shown.stdout for url, n in served.items())


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found |= {int(c) for c in task.read_text().split()}
    return found


def test_a_replica_killed_mid_run_is_avoided_restarted_and_used_again(write, tmp_path: Path) -> None:
    config = load_config(write("config.yaml", CONFIG + RECOVERY), environ={})
    seen: dict[str, int] = {}

    async def scenario() -> object:
        async with Engine(config, state_dir=tmp_path / ".dse") as engine:
            await engine.start(["local"])
            victim = engine.clusters["local"].servers[1]
            seen["old_pid"] = victim.pid
            assert victim.pid in _children(os.getpid()) & llama_server_pids()
            # The second fan-out starts only once the restarted replica answers /health again.
            wait = f"import time, urllib.request as u\nwhile True:\n    try:\n        u.urlopen('{victim.url}/health', timeout=1); break\n    except OSError:\n        time.sleep(0.1)\n"
            workflow = write(
                "recover.yaml",
                "name: recover\nmax_parallel: 6\nsteps:\n" + fan_out("before", 40)
                + f"  - id: wait\n    needs: [before]\n    run: {json.dumps([sys.executable, '-c', wait])}\n    timeout: 60\n"
                + fan_out("after", 24, needs="    needs: [wait]\n"),
            )
            prepared = prepare(workflow, config.path)
            pool = engine.router.pool("local", None)
            state = next(s for s in pool.states if s.endpoint.url == victim.url)

            async def kill_then_watch() -> None:
                while state.served < 2 or state.in_flight == 0:
                    await asyncio.sleep(0.005)
                os.kill(victim.pid, signal.SIGKILL)
                seen["served_at_kill"] = state.served
                while victim.pid == seen["old_pid"]:
                    await asyncio.sleep(0.01)
                seen["served_at_respawn"] = state.served
                seen["new_pid"] = victim.pid
                seen["others_while_down"] = sum(s.served for s in pool.states if s is not state)

            killer = asyncio.create_task(asyncio.wait_for(kill_then_watch(), 120))
            result = await Scheduler(prepared.plan, InProcessRunner(engine.router)).run(prepared.inputs)
            await killer
            seen["failed"] = state.failed
            seen["served_at_end"] = state.served
            seen["breaker_closed"] = engine.router.breakers[victim.url].state == "closed"
            seen["restarts"] = victim.restarts
            seen["log"] = victim.log_path.read_text(errors="replace").count("[dse ")
            return result

    result = asyncio.run(scenario())
    assert result.status == "done" and all(s.status == "done" for s in result.steps.values()), {
        s.id: s.error for s in result.steps.values() if s.status != "done"
    }
    assert seen["failed"] >= 1, "the call in flight on the killed replica failed there and was retried elsewhere"
    assert seen["failed"] <= 2, "after that, the breaker and the readiness check keep calls away (one probe at most)"
    assert seen["served_at_respawn"] == seen["served_at_kill"]
    assert seen["restarts"] == 1 and seen["new_pid"] != seen["old_pid"] and seen["log"] >= 2
    assert seen["served_at_end"] > seen["served_at_respawn"], "the restarted replica serves calls again"
    assert seen["breaker_closed"], "its half-open probe succeeded"
    assert not ({seen["old_pid"], seen["new_pid"]} & llama_server_pids()), "the restarted replica is stopped with the engine"
