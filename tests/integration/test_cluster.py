"""Step bodies on a real Dask `LocalCluster`: worker processes on loopback, a stub server as the endpoint.

The stub answers each item with a function of its prompt, so equal outputs mean every item went
out and came back to its place; it records the most requests it ever served at once, which is
what the endpoint's `max_concurrency` must hold to across all workers together.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from dse.runner import prepare, run_workflow
from helpers import wait_until
from stubs import Received, Reply, StubServer, openai_chat

CAPACITY = 4


def echo(delay: float):
    def answer(request: Received) -> Reply:
        return Reply(json=openai_chat("re: " + request.json["messages"][-1]["content"]).json, delay=delay)

    return answer


def _files(write, stub: StubServer, items: int, executor: str = "") -> tuple[Path, Path]:
    config = write(
        "config.yaml",
        f"llm:\n  backend: s\n  s: {{type: vllm, endpoints: [{{url: '{stub.url}/v1', max_concurrency: {CAPACITY}}}], models: {{generator: m}}}}\n"
        + executor,
    )
    workflow = write("fan.yaml", f"name: fan\nsteps:\n  - id: each\n    for_each: '{{{{ range({items}) | list }}}}'\n    prompt: 'item {{{{ item }}}}'\n")
    return workflow, config


def _journal(state: Path) -> list[dict]:
    (run_dir,) = (state / "runs").iterdir()
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def test_a_fan_out_on_two_workers_matches_in_process_and_holds_the_endpoint_capacity(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", echo(0.002))
    workflow, config = _files(write, stub, 500)
    local, _ = asyncio.run(run_workflow(prepare(workflow, config), state_dir=tmp_path / "here"))
    assert stub.peak <= CAPACITY
    stub.peak = 0
    sent_here = len(stub.requests)
    remote, _ = asyncio.run(run_workflow(prepare(workflow, config), state_dir=tmp_path / "there", cluster="local:2"))
    assert remote.status == "done", remote.steps["each"].error
    assert remote.steps["each"].output == local.steps["each"].output == [f"re: item {i}" for i in range(500)]
    assert len(stub.requests) - sent_here == 500, "one call per item"
    assert 1 < stub.peak <= CAPACITY, f"two workers together held {CAPACITY} calls at most (peak {stub.peak})"


def test_a_worker_killed_mid_run_loses_no_item_and_journals_none_twice(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", echo(0.02))
    workflow, config = _files(write, stub, 300, executor="executor: {cluster: 'local:2'}\n")
    killed: list[int] = []

    def on_event(result) -> None:
        if result.items_done >= 60 and not killed:
            workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
            assert workers, "the local cluster's worker processes are children of this process"
            killed.append(workers[0].pid)
            os.kill(workers[0].pid, signal.SIGKILL)

    result, _ = asyncio.run(run_workflow(prepare(workflow, config), state_dir=tmp_path / ".dse", on_event=on_event))
    assert killed, "a worker was killed mid-run"
    assert result.status == "done", result.steps["each"].error
    assert result.steps["each"].output == [f"re: item {i}" for i in range(300)]
    journaled = Counter(e["index"] for e in _journal(tmp_path / ".dse") if e["event"] == "item_finished")
    assert sorted(journaled) == list(range(300)) and set(journaled.values()) == {1}


@pytest.mark.parametrize("cluster", [None, "local:2"], ids=["in-process", "cluster"])
def test_dse_killed_mid_fan_out_resumes_without_sending_finished_items_again(cluster: str | None, stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", echo(0.02))
    workflow, config = _files(write, stub, 200)
    extra = ["--cluster", cluster] if cluster else []
    command = [sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config), "--json", *extra]
    # A session of its own: killing it takes the dse process and its workers down together, as a lost machine would.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        runs = tmp_path / ".dse" / "runs"

        def answered() -> int:
            return sum(e["event"] == "item_finished" for e in _journal(tmp_path / ".dse")) if runs.exists() and any(runs.iterdir()) else 0

        assert wait_until(lambda: answered() >= 40, timeout=120), process.stderr.read() if process.poll() is not None else "slow"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    finished = {e["index"] for e in _journal(tmp_path / ".dse") if e["event"] == "item_finished"}
    assert 40 <= len(finished) < 200
    sent_before = len(stub.requests)
    (run_dir,) = (tmp_path / ".dse" / "runs").iterdir()
    resumed = subprocess.run(
        [sys.executable, "-m", "dse", "run", "--resume", run_dir.name, "--json", *extra], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr
    resent = {int(r.json["messages"][-1]["content"].split()[-1]) for r in stub.requests[sent_before:]}
    assert not resent & finished, "no finished item is sent again"
    assert resent | finished == set(range(200))
    assert json.loads(resumed.stdout)["steps"][0]["output"] == [f"re: item {i}" for i in range(200)]


def test_a_cluster_without_dask_says_how_to_install_it(write, tmp_path: Path) -> None:
    workflow = write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [echo, hi]\n")
    config = write("config.yaml", "llm:\n  backend: o\n  o: {type: openai, api_key: sk-unused-here}\n")
    blocked = "import sys; sys.modules['distributed'] = None; from dse.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", blocked, "run", str(workflow), "--config", str(config), "--cluster", "local:2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'dse[cluster]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".dse" / "runs").exists() or not any((tmp_path / ".dse" / "runs").iterdir()), "nothing half-done"


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("flag", "local:0", "say local:N"),
        ("flag", "not an address", "neither local:N nor a Dask scheduler address"),
        ("flag", "", "neither local:N nor a Dask scheduler address"),
        ("flag", "tcp://[::1]:99999", "neither local:N nor a Dask scheduler address"),
        ("config", "local:x", "executor.cluster"),
    ],
)
def test_a_bad_cluster_is_refused_before_anything_runs(where: str, value: str, message: str, write, tmp_path: Path) -> None:
    workflow = write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [echo, hi]\n")
    executor = f"executor: {{cluster: '{value}'}}\n" if where == "config" else ""
    config = write("config.yaml", "llm:\n  backend: o\n  o: {type: openai, api_key: sk-unused-here}\n" + executor)
    flag = ["--cluster", value] if where == "flag" else []
    result = subprocess.run(
        [sys.executable, "-m", "dse", "run", str(workflow), "--config", str(config), *flag], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    if where == "config":
        assert "config.yaml:4" in result.stderr, "the config error names file and line"
    assert not (tmp_path / ".dse" / "runs").exists(), "nothing half-done"
