"""The managed-replica supervisor, with a stand-in `llama-server` (a Python script answering /health).

The stand-in makes restarts cheap enough to test every path: back on the same port, bounded
restarts for a replica that keeps dying, and nothing left running after `stop()`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from dse.config.model import ManagedSettings
from dse.local import LocalCluster
from dse.local import servers

FAKE_SERVER = """\
import http.server, pathlib, sys
if (pathlib.Path(__file__).parent / "die").exists():
    sys.exit(3)
port = int(sys.argv[sys.argv.index("--port") + 1])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalCluster:
    monkeypatch.setattr(servers, "_WATCH_INTERVAL", 0.02)
    monkeypatch.setattr(servers, "_RESTART_BACKOFF", 0.01)
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    binary.chmod(0o755)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    settings = ManagedSettings(model=str(model), binary=str(binary), replicas=2, startup_timeout=10)
    return LocalCluster("fake", settings, tmp_path / "logs")


async def until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_a_killed_replica_comes_back_on_the_same_port(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        urls = await cluster.start()
        victim = cluster.servers[0]
        old = victim.pid
        os.kill(old, signal.SIGKILL)
        await until(lambda: victim.pid != old and victim.alive())
        async with httpx.AsyncClient() as client:
            await until(lambda: "healthy again" in victim.log_path.read_text())
            assert (await client.get(f"{victim.url}/health")).status_code == 200
        assert cluster.urls == urls and victim.restarts == 1
        assert cluster.servers[1].restarts == 0
        cluster.stop()
        assert not any(s.alive() for s in cluster.servers)

    asyncio.run(scenario())
    log = cluster.servers[0].log_path.read_text()
    assert "exited with code -9; restarting it on" in log and "(restart 1 of 5)" in log
    assert log.count("$ ") == 2, "the same command, so the same port, twice"


def test_a_replica_that_keeps_dying_is_given_up_on_and_the_others_carry_on(cluster: LocalCluster, tmp_path: Path) -> None:
    async def scenario() -> None:
        await cluster.start()
        victim, other = cluster.servers
        (tmp_path / "die").touch()
        os.kill(victim.pid, signal.SIGKILL)
        await until(lambda: "stays down" in victim.log_path.read_text())
        assert victim.restarts == 5 and not victim.alive() and other.alive()
        await asyncio.sleep(0.1)
        assert victim.restarts == 5, "no restarts beyond the bound"
        cluster.stop()

    asyncio.run(scenario())
    log = cluster.servers[0].log_path.read_text()
    assert "exited with code 3 while starting" in log and "(restart 5 of 5)" in log


def test_no_replica_is_restarted_after_stop(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        await cluster.start()
        cluster.stop()
        await asyncio.sleep(0.2)  # ten watch intervals: a live supervisor would have restarted both

    asyncio.run(scenario())
    assert all(not s.alive() and s.restarts == 0 for s in cluster.servers)
