"""The gateway's own cost per request: `dse serve` beside LiteLLM's proxy, over one stub, in one run.

One loopback stub answers OpenAI chat completions with a fixed small body. The same raw
HTTP/1.1 keep-alive client sends the same request three ways: straight to the stub, through
`dse serve` (one OpenAI-compatible backend on the stub, nothing else configured, the usage
ledger on as by default) and through LiteLLM's proxy (`make bench` puts it in `.venv-bench`;
without it this benchmark says so and measures dse alone). Overhead is a path's latency less
the direct one, median from median and p99 from p99, sequentially and with 32 clients at once:
once against an instant stub (which saturates the CPU, so the 32-client figure is mostly the
queue of requests waiting for it), once against a stub that answers after 100 ms as a fast
model would (the load a gateway sees in use, below saturation). The stub and the client are asyncio on raw sockets in their own processes, so neither is
what the numbers measure. Printed beside the goals, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, TypeVar
from urllib.error import HTTPError
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gateway import ServedGateway  # noqa: E402

T = TypeVar("T")
PEER = ROOT / ".venv-bench" / "bin" / "litellm"
SEQUENTIAL = (1, 50, 500)  # clients, warm-up requests, timed requests
CONCURRENT = (32, 320, 3000)
# 32 clients again, but the stub takes 100 ms per answer as a (very fast) model would: 320 requests a
# second offered, below what one gateway core serves, so the overhead is the gateway's and not a queue.
MODEL_LIKE = (32, 64, 960)
MODEL_SECONDS = 0.1
MODES = {"sequential": SEQUENTIAL, "concurrent": CONCURRENT, "model-like": MODEL_LIKE}
GOAL_MEDIAN, GOAL_P99, GOAL_RATIO = 0.001, 0.005, 5.0
READY_TIMEOUT = 120.0
REQUEST_TIMEOUT = 30.0

REQUEST_BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()
# The stub takes MODEL_SECONDS over a request that asks for this many tokens.
SLOW_BODY = REQUEST_BODY.replace(b'"max_tokens": 8', b'"max_tokens": 100')
CHAT_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()
MODELS_BODY = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "stub"}]}).encode()


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def _content_length(head: bytes) -> int:
    """The body's length from a header block; a chunked body is refused, since nothing here sends or answers one."""
    length = 0
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise RuntimeError("a chunked body: this benchmark's client and stub read content-length bodies only")
    return length


def _loop_run(work: Coroutine[Any, Any, T]) -> T:
    """uvloop where installed, as `dse serve` runs, so that the stub and client cost as little as they can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


# The stub: a process of its own, GET answers a model list (health probes), anything else one chat completion.


async def _stub_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    chat, models = _answer(CHAT_BODY), _answer(MODELS_BODY)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
            if b'"max_tokens":100' in body.replace(b" ", b""):
                await asyncio.sleep(MODEL_SECONDS)
            writer.write(models if head.startswith(b"GET") else chat)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _stub_main() -> None:
    server = await asyncio.start_server(_stub_connection, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


@contextmanager
def stub_server() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, __file__, "--stub"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The client: keep-alive connections, one request in flight on each, latency per request.


@dataclass(frozen=True)
class Sample:
    median: float
    p99: float
    rate: float
    """Requests per second over the timed requests."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> None:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        body = await self.reader.readexactly(_content_length(head))
        if not head.startswith(b"HTTP/1.1 200"):
            status = head.partition(b"\r\n")[0].decode()
            raise RuntimeError(f"{status}: {body[:300].decode(errors='replace')}")


async def _phase(connections: list[Connection], request: bytes, count: int) -> list[float]:
    """`count` requests shared out among the connections, each sending its next as soon as its last is answered."""
    todo = iter(range(count))
    latencies: list[float] = []

    async def client(connection: Connection) -> None:
        for _ in todo:
            started = time.perf_counter()
            await asyncio.wait_for(connection.exchange(request), REQUEST_TIMEOUT)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client(c) for c in connections))
    return latencies


async def _measure(url: str, clients: int, warmup: int, count: int) -> Sample:
    parts = urlsplit(url)
    body = SLOW_BODY if (clients, warmup, count) == MODEL_LIKE else REQUEST_BODY
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\nauthorization: Bearer dummy\r\n"
    request = f"{head}content-length: {len(body)}\r\n\r\n".encode() + body
    connections = [Connection(*await asyncio.open_connection(parts.hostname, parts.port)) for _ in range(clients)]
    try:
        await _phase(connections, request, warmup)
        started = time.perf_counter()
        latencies = await _phase(connections, request, count)
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.writer.close()
    return Sample(statistics.median(latencies), statistics.quantiles(latencies, n=100)[98], count / elapsed)


def measure(url: str, shape: tuple[int, int, int]) -> Sample:
    return _loop_run(_measure(url, *shape))


# The gateways.


def _get(url: str) -> tuple[int, str]:
    """Status and body; 0 when nothing answered, as while a server is still starting."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except HTTPError as exc:
        return exc.code, ""
    except (OSError, HTTPException):
        return 0, ""


def overhead_metric(url: str) -> tuple[float, int]:
    """`dse_overhead_seconds` sum and count, as the gateway measures itself."""
    found = {}
    for line in _get(f"{url}/metrics")[1].splitlines():
        name, _, value = line.partition(" ")
        if name in ("dse_overhead_seconds_sum", "dse_overhead_seconds_count"):
            found[name] = float(value)
    return found["dse_overhead_seconds_sum"], int(found["dse_overhead_seconds_count"])


@contextmanager
def dse_gateway(stub: str, directory: Path) -> Iterator[str]:
    config = directory / "dse.yaml"
    config.write_text(f"llm:\n  backend: s\n  s: {{type: openai, base_url: '{stub}/v1', api_key: dummy, models: {{generator: m}}}}\n")
    with ServedGateway(config, directory / "state") as served:
        yield served.url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def litellm_proxy(stub: str, directory: Path) -> Iterator[str]:
    """LiteLLM's proxy on one worker, as `dse serve` runs one process, with its logging and cost-map fetch off.

    Neither gateway checks a client key here (dse has no `serve.api_keys` on loopback), so
    LiteLLM is told to start without its master key.
    """
    config = directory / "litellm.yaml"
    model = {"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": f"{stub}/v1", "api_key": "dummy"}}
    settings = {"turn_off_message_logging": True, "set_verbose": False}
    general = {"disable_spend_logs": True, "dangerously_permit_weak_or_unset_master_key": True}
    config.write_text(json.dumps({"model_list": [model], "litellm_settings": settings, "general_settings": general}))
    port = _free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = directory / "litellm.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(PEER), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/health/readiness", process, log)
        yield url
    finally:
        _stop(process)


def _wait_ready(url: str, process: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while _get(url)[0] != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"LiteLLM's proxy did not become ready:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


# The report.


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f}"


def _table(samples: dict[str, dict[str, Sample]]) -> None:
    direct = samples["direct"]
    print(f"{'':16}{'median ms':>10}{'p99 ms':>10}{'+median':>10}{'+p99':>10}{'req/s':>9}")
    for mode, (clients, _, count) in MODES.items():
        model = f", the stub answering after {MODEL_SECONDS * 1000:g} ms" if mode == "model-like" else ""
        print(f"{mode}: {clients} client(s), {count} requests{model}")
        for path, by_mode in samples.items():
            s, d = by_mode[mode], direct[mode]
            extra = "" if path == "direct" else f"{_ms(s.median - d.median)}  {_ms(s.p99 - d.p99)}"
            print(f"  {path:14}{_ms(s.median)}  {_ms(s.p99)}  {extra:20}{s.rate:9.0f}")


def _overheads(samples: dict[str, dict[str, Sample]], path: str, mode: str) -> tuple[float, float]:
    s, d = samples[path][mode], samples["direct"][mode]
    return s.median - d.median, s.p99 - d.p99


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _report(samples: dict[str, dict[str, Sample]], self_measured: dict[str, tuple[float, int]]) -> None:
    _table(samples)
    for mode in MODES:
        sum_, count = self_measured[mode]
        print(f"dse /metrics dse_overhead_seconds, {mode} (warm-up included): {sum_ / max(count, 1) * 1000:.3f} ms mean over {count} requests")
    for mode in ("concurrent", "model-like"):
        median, p99 = _overheads(samples, "dse serve", mode)
        print(f"goals at {MODES[mode][0]} clients, {mode}: dse overhead median {median * 1000:.3f} ms <= {GOAL_MEDIAN * 1000:g} ms {_verdict(median <= GOAL_MEDIAN)}")
        print(f"{'':>27}{' ' * len(mode)}p99    {p99 * 1000:.3f} ms <= {GOAL_P99 * 1000:g} ms {_verdict(p99 <= GOAL_P99)}")
    if "litellm proxy" not in samples:
        return
    for mode in MODES:
        ours, theirs = _overheads(samples, "dse serve", mode), _overheads(samples, "litellm proxy", mode)
        for label, a, b in (("median", ours[0], theirs[0]), ("p99", ours[1], theirs[1])):
            ratio = b / a if a > 0 else float("inf")
            print(f"litellm/dse overhead, {mode} {label:6}: {ratio:6.1f}x  (goal >= {GOAL_RATIO:g}x {_verdict(ratio >= GOAL_RATIO)})")


def main() -> None:
    peer = PEER.is_file()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPU cores shared by the client, the stub and the gateway (load average {load:.1f} before); each path measured alone")
    samples: dict[str, dict[str, Sample]] = {}
    self_measured: dict[str, tuple[float, int]] = {}
    with stub_server() as stub, tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        samples["direct"] = {mode: measure(stub, shape) for mode, shape in MODES.items()}
        with dse_gateway(stub, directory) as url:
            samples["dse serve"] = {}
            for mode, shape in MODES.items():
                before = overhead_metric(url)
                samples["dse serve"][mode] = measure(url, shape)
                after = overhead_metric(url)
                self_measured[mode] = (after[0] - before[0], after[1] - before[1])
        if peer:
            with litellm_proxy(stub, directory) as url:
                samples["litellm proxy"] = {mode: measure(url, shape) for mode, shape in MODES.items()}
    _report(samples, self_measured)
    if not peer:
        print(json.dumps({"peer": "not installed: run `make bench` to create .venv-bench with litellm[proxy]"}))


if __name__ == "__main__":
    if sys.argv[1:] == ["--stub"]:
        _loop_run(_stub_main())
    else:
        main()
