"""`dse models load|ps|unload` of a managed llama.cpp backend, for real: the servers outlive the command that started them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from helpers import llama_server_pids, run_dse, wait_until

from dse.backends import ChatResponse, Message
from dse.config import load_config
from dse.engine import Engine
from dse.routing import Intent

pytestmark = pytest.mark.integration

CONFIG = "llm:\n  backend: local\n  local:\n    type: llamacpp\n    managed: {model: smollm2, replicas: 1, threads: 1}\n    models: {generator: smollm2}\n"


def test_load_starts_detached_servers_that_ps_lists_a_run_adopts_and_unload_stops(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    state = tmp_path / "state"
    options = ("--config", str(config), "--state-dir", str(state), "--json")
    pids: list[int] = []
    try:
        loaded = run_dse("models", "load", "smollm2", *options)
        assert loaded.returncode == 0, loaded.stderr
        servers = json.loads(loaded.stdout)["servers"]
        pids = [s["pid"] for s in servers]
        assert [s["action"] for s in servers] == ["loaded"]
        assert set(pids) <= llama_server_pids(), "the server outlives the dse process that started it"
        assert httpx.get(f"{servers[0]['endpoint']}/health").status_code == 200
        assert (state / "managed" / "local.json").is_file()

        listed = run_dse("models", "ps", *options)
        assert listed.returncode == 0, listed.stderr
        row = json.loads(listed.stdout)["loaded"][0]
        assert (row["backend"], row["model"], row["pid"], row["state"]) == ("local", "smollm2", pids[0], "healthy")
        assert row["memory"] > row["size"] > 0, "the process holds at least its model file"

        again = run_dse("models", "load", "smollm2", *options)
        assert [s["action"] for s in json.loads(again.stdout)["servers"]] == ["already loaded"]
        assert llama_server_pids() >= set(pids)

        answer, adopted, started = asyncio.run(_call_through_an_engine(config, state))
        assert adopted == {"local": [servers[0]["endpoint"]]} and started == {}, "the run used the loaded server, started none"
        assert answer.endpoint == servers[0]["endpoint"] and answer.text.strip()
        assert set(pids) <= llama_server_pids(), "the run leaves a loaded server running"

        unloaded = run_dse("models", "unload", "smollm2", *options)
        assert unloaded.returncode == 0, unloaded.stderr
        assert [s["action"] for s in json.loads(unloaded.stdout)["servers"]] == ["unloaded"]
        assert wait_until(lambda: not set(pids) & llama_server_pids()), "unload stops the server"
        assert not (state / "managed" / "local.json").exists()
    finally:
        for pid in set(pids) & llama_server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _call_through_an_engine(config: Path, state: Path) -> tuple[ChatResponse, dict[str, list[str]], dict[str, object]]:
    async with Engine(load_config(config), state_dir=state) as engine:
        await engine.start(["local"])
        target = engine.resolver.resolve(Intent("t", model_key="generator")).target
        answer = await engine.router.chat(target, [Message("user", "Name one fruit.")])
        return answer, dict(engine.adopted), dict(engine.clusters)
