"""`dse bench` on a real managed llama.cpp server: sane figures, saved, the server stopped, and `dse select` scoring with them."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import run_dse

from dse.benchmark import measured_speeds
from dse.routing.catalog import speed_score

pytestmark = pytest.mark.integration

CONFIG = """\
llm:
  backend: local
  local:
    type: llamacpp
    managed: {model: smollm2, replicas: 1, threads: 1, ctx_size: 1024}
    models: {generator: smollm2}
  spare:
    type: ollama
    base_url: http://127.0.0.1:9
    models: {generator: tinyllama}
model_selector:
  weights: {context_window: 0, speed: 100, cost: 0, quality: 0, specialization: 0}
"""


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname or "", parts.port or 0)) == 0


def test_bench_measures_the_managed_server_saves_and_select_scores_with_it(write, tmp_path: Path) -> None:
    config, state = write("config.yaml", CONFIG), tmp_path / "state"
    ran = run_dse("bench", "local", "--runs", "1", "--config", str(config), "--state-dir", str(state), "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    [measured] = json.loads(ran.stdout)["results"]
    assert (measured["backend"], measured["model"], measured["error"]) == ("local", "smollm2", None)
    assert measured["calls"] == 3 and measured["completion_tokens"] > 1 and measured["prompt_tokens"] > 0
    assert 0 < measured["ttft"] and measured["generation_tps"] > 0 and measured["prompt_tps"] > 0
    assert measured["vram_bytes"] is None, "llama.cpp does not say what it holds in GPU memory"
    assert "starting 1 managed llama.cpp server" in ran.stderr and "local/smollm2: run 1/1: first token" in ran.stderr
    assert not _listening(measured["endpoint"]), "the managed server is stopped when the bench ends"
    saved = measured_speeds(state)[("local", "smollm2")]
    assert saved.tokens_per_second == pytest.approx(measured["generation_tps"])

    shown = run_dse("select", "say hi", "--config", str(config), "--state-dir", str(state), "--json", cwd=tmp_path)
    ranked = {r["backend"]: r for r in json.loads(shown.stdout)["ranked"]}
    local, spare = ranked["local"], ranked["spare"]
    assert local["speed"]["source"] == "measured" and spare["speed"]["source"] == "catalog"
    assert local["speed"]["score"] == pytest.approx(speed_score(measured["generation_tps"]), abs=0.01)
    assert local["breakdown"]["speed"] == pytest.approx(10 * local["speed"]["score"], abs=0.1), "the measured score is the speed share"
    text = run_dse("select", "say hi", "--config", str(config), "--state-dir", str(state), cwd=tmp_path).stdout
    assert "speed: measured " in text and f"{measured['generation_tps']:.1f} tok/s" in text and "speed: catalog estimate" in text
