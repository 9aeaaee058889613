"""Scriptable protocol stub servers: real HTTP on a loopback socket, replies chosen by the test.

Adapters are tested through their real SDKs and HTTP clients, so the stub speaks real
HTTP/1.1 (keep-alive, chunked streams, dropped connections) instead of patching a client.
Each route holds a script of replies used in order, the last one repeating, and every request
is recorded so a test can count what the server actually received (one call, one request).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a JSON or raw body, or a stream of chunks that may be cut off.

    `stream` chunks go out with chunked transfer encoding, one chunk per item, `chunk_delay`
    seconds apart; `cut_after=N` closes the socket after N chunks, without the terminating
    chunk, which is what a crashed server or a dropped proxy looks like to the client.
    """

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream: Sequence[bytes] | None = None
    chunk_delay: float = 0.0
    cut_after: int | None = None


@dataclass(frozen=True)
class Received:
    """A request as the server saw it; `json` is the parsed body, or None when it was not JSON."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return jsonlib.loads(self.body) if self.body else None
        except ValueError:
            return None


_NOT_ROUTED = Reply(status=404, json={"error": {"message": "no route on the stub server", "type": "not_found"}})


class StubServer:
    """An HTTP/1.1 server on 127.0.0.1 with a free port, serving scripted replies from a thread."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], list[Reply | Callable[[Received], Reply]]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[Received] = []
        self.in_flight = 0
        self.peak = 0
        """The most requests it was ever serving at once: what a concurrency limit must hold to."""
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.02,), name="stub-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, method: str, path: str, *replies: Reply | Callable[[Received], Reply]) -> None:
        """Script `method path`: replies are used in order and the last one repeats.

        A reply may be a function of the request, for answers that depend on what was asked.
        """
        if not replies:
            raise ValueError("route() needs at least one Reply")
        with self._lock:
            self._routes[(method.upper(), path)] = list(replies)

    def calls(self, method: str, path: str) -> list[Received]:
        """The requests received on one route, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def _take(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            script = self._routes.get((received.method, received.path))
            if not script:
                return _NOT_ROUTED
            reply = script.pop(0) if len(script) > 1 else script[0]
        return reply(received) if callable(reply) else reply

    def _counted(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.peak = max(self.peak, self.in_flight)

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of parallel calls would see SYNs
    # dropped and retried a second later, which measures the kernel, not the code under test.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], stub: StubServer) -> None:
        super().__init__(address, handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that give up (timeouts, cancelled streams) are part of the tests, not noise."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every reply and drown what benchmarks and timing tests measure.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: pytest shows the test's own output, not an access log."""

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        received = Received(
            method=self.command,
            path=url.path,
            query=url.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        stub = self.server.stub
        stub._counted(+1)
        try:
            reply = stub._take(received)
            if reply.delay and stub._closing.wait(reply.delay):
                self.close_connection = True
                return
            if reply.stream is None:
                self._send_whole(reply)
            else:
                self._send_stream(reply)
        finally:
            stub._counted(-1)

    def _send_whole(self, reply: Reply) -> None:
        body = jsonlib.dumps(reply.json).encode() if reply.json is not None else reply.body
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json" if reply.json is not None else "application/octet-stream"}
        headers.update(reply.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_stream(self, reply: Reply) -> None:
        assert reply.stream is not None
        self.send_response(reply.status)
        for name, value in {"Content-Type": "application/octet-stream", **reply.headers}.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = reply.stream if reply.cut_after is None else reply.stream[: reply.cut_after]
        for chunk in chunks:
            if reply.chunk_delay and self.server.stub._closing.wait(reply.chunk_delay):
                self._drop()
                return
            self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        if reply.cut_after is None:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._drop()

    def _drop(self) -> None:
        """Close mid-body: the client sees an incomplete chunked response, as after a crash."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Closable(Protocol):
    async def aclose(self) -> None: ...


A = TypeVar("A", bound=_Closable)


def call(adapter: A, action: Callable[[A], Awaitable[T]]) -> T:
    """Run one adapter action in a fresh event loop and close the adapter's clients in that same loop."""

    async def main() -> T:
        try:
            return await action(adapter)
        finally:
            await adapter.aclose()

    return asyncio.run(main())


async def drain(chunks: AsyncIterator[T], into: list[T] | None = None) -> list[T]:
    """Every item of a stream; `into` keeps what arrived even when the stream then raises."""
    got = [] if into is None else into
    async for chunk in chunks:
        got.append(chunk)
    return got


# ---- Reply builders: what each protocol's servers send ----------------------------------


def sse(*events: Any, cut_after: int | None = None, chunk_delay: float = 0.0) -> Reply:
    """Server-sent events, one chunk each.

    A dict is sent as a `data:` line, a (name, dict) pair adds an `event:` line, a str is raw data.
    """

    def encode(event: Any) -> bytes:
        name, data = event if isinstance(event, tuple) else (None, event)
        text = data if isinstance(data, str) else jsonlib.dumps(data)
        return (f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode()

    return Reply(
        stream=[encode(e) for e in events],
        headers={"Content-Type": "text/event-stream"},
        cut_after=cut_after,
        chunk_delay=chunk_delay,
    )


def ndjson(*objects: Any, cut_after: int | None = None, chunk_delay: float = 0.0) -> Reply:
    """Newline-delimited JSON, one object per chunk: Ollama's streaming format."""
    return Reply(
        stream=[jsonlib.dumps(o).encode() + b"\n" for o in objects],
        headers={"Content-Type": "application/x-ndjson"},
        cut_after=cut_after,
        chunk_delay=chunk_delay,
    )


def openai_chat(
    text: str = "Hello!", *, model: str = "stub-model", usage: tuple[int, int] = (5, 2), finish: str = "stop"
) -> Reply:
    return Reply(
        json={
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }
    )


def openai_stream(
    pieces: Sequence[str],
    *,
    model: str = "stub-model",
    usage: tuple[int, int] | None = (5, 3),
    finish: str | None = "stop",
    done: bool = True,
    cut_after: int | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """A chat completion stream: role chunk, one chunk per piece, the finish chunk, the usage chunk, `[DONE]`."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    if finish is not None:
        events.append(chunk({}, finish))
    if usage is not None:
        counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        events.append({**chunk({}), "choices": [], "usage": counts})
    if done:
        events.append("[DONE]")
    return sse(*events, cut_after=cut_after, chunk_delay=chunk_delay)


def openai_error(
    status: int, message: str, *, kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None
) -> Reply:
    body = {"error": {"message": message, "type": kind, "code": None}}
    return Reply(status=status, json=body, headers=dict(headers or {}))


def anthropic_message(
    text: str = "Hello!", *, model: str = "claude-stub", usage: tuple[int, int] = (7, 2), stop: str = "end_turn"
) -> Reply:
    return Reply(
        json={
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }
    )


def _anthropic_start(model: str, input_tokens: int) -> tuple[str, dict[str, Any]]:
    """The `message_start` event every Messages stream opens with: an empty message, its input tokens counted."""
    message = {
        "id": "msg_stub",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return ("message_start", {"type": "message_start", "message": message})


def anthropic_stream(
    pieces: Sequence[str],
    *,
    model: str = "claude-stub",
    usage: tuple[int, int] = (7, 3),
    stop: str = "end_turn",
    complete: bool = True,
    cut_after: int | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """The Messages event stream: message_start, one text block of deltas, message_delta, message_stop."""
    events: list[Any] = [
        _anthropic_start(model, usage[0]),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
        for p in pieces
    ]
    if complete:
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage[1]},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    return sse(*events, cut_after=cut_after, chunk_delay=chunk_delay)


def anthropic_error(
    status: int, message: str, *, kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None
) -> Reply:
    return Reply(
        status=status,
        json={"type": "error", "error": {"type": kind, "message": message}},
        headers=dict(headers or {}),
    )


def ollama_chat(
    text: str = "Hello!", *, model: str = "llama3", usage: tuple[int, int] = (9, 2), done_reason: str = "stop"
) -> Reply:
    return Reply(
        json={
            "model": model,
            "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": done_reason,
            "prompt_eval_count": usage[0],
            "eval_count": usage[1],
        }
    )


def ollama_stream(
    pieces: Sequence[str],
    *,
    model: str = "llama3",
    usage: tuple[int, int] = (9, 3),
    done_reason: str = "stop",
    done: bool = True,
    cut_after: int | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """`/api/chat` streaming: one line per piece, then the `done: true` line with the counts."""
    stamp = {"model": model, "created_at": "2024-01-01T00:00:00Z"}
    lines: list[Any] = [{**stamp, "message": {"role": "assistant", "content": p}, "done": False} for p in pieces]
    if done:
        lines.append(
            {
                **stamp,
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": done_reason,
                "prompt_eval_count": usage[0],
                "eval_count": usage[1],
            }
        )
    return ndjson(*lines, cut_after=cut_after, chunk_delay=chunk_delay)


def ollama_error(status: int, message: str) -> Reply:
    return Reply(status=status, json={"error": message})


# ---- Tool calls, as each protocol's servers send them ------------------------------------------
# A call is (id, name, argument pieces): the pieces are the JSON text of the arguments as a
# stream splits it; a whole answer carries them joined.

StubCall = tuple[str, str, Sequence[str]]


def openai_tool_calls(calls: Sequence[StubCall], *, text: str | None = None, model: str = "stub-model") -> Reply:
    """A completion that calls tools; its content is null when it says nothing besides, as OpenAI sends it."""
    reply = openai_chat(model=model, finish="tool_calls")
    message = reply.json["choices"][0]["message"]
    message["content"] = text
    message["tool_calls"] = [
        {"id": id, "type": "function", "function": {"name": name, "arguments": "".join(pieces)}} for id, name, pieces in calls
    ]
    return reply


def openai_tool_stream(calls: Sequence[StubCall], *, model: str = "stub-model", usage: tuple[int, int] = (5, 3)) -> Reply:
    """A streamed tool call as OpenAI sends it: id, type and name with empty arguments in a call's
    first piece (by index), then argument text pieces, then `finish_reason: tool_calls`, usage, `[DONE]`."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]}

    events: list[Any] = [chunk({"role": "assistant", "content": None})]
    for index, (id, name, pieces) in enumerate(calls):
        opening = {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}
        events.append(chunk({"tool_calls": [opening]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}) for piece in pieces]
    counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    events += [chunk({}, "tool_calls"), {**chunk({}), "choices": [], "usage": counts}, "[DONE]"]
    return sse(*events)


def anthropic_tool_use(calls: Sequence[StubCall], *, text: str | None = None, model: str = "claude-stub") -> Reply:
    """A message that calls tools: an optional text block, then one `tool_use` block per call, stop reason `tool_use`."""
    reply = anthropic_message(model=model, stop="tool_use")
    blocks = [{"type": "tool_use", "id": id, "name": name, "input": jsonlib.loads("".join(pieces) or "{}")} for id, name, pieces in calls]
    reply.json["content"] = ([{"type": "text", "text": text}] if text else []) + blocks
    return reply


def anthropic_tool_stream(
    calls: Sequence[StubCall], *, text: Sequence[str] = (), model: str = "claude-stub", usage: tuple[int, int] = (7, 3)
) -> Reply:
    """The Messages event stream of a tool-calling answer: a text block of `text` pieces where given,
    then per call a `tool_use` block start (id, name, empty input), `input_json_delta` pieces (the
    first empty, as Anthropic sends it) and its stop; then `message_delta` with `tool_use`, `message_stop`."""
    events: list[Any] = [_anthropic_start(model, usage[0]), ("ping", {"type": "ping"})]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if text:
        blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in text]))
    for id, name, pieces in calls:
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in ("", *pieces)]
        blocks.append(({"type": "tool_use", "id": id, "name": name, "input": {}}, deltas))
    for index, (block, deltas) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    finish = {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": usage[1]}}
    events += [("message_delta", finish), ("message_stop", {"type": "message_stop"})]
    return sse(*events)


def _ollama_calls(calls: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    return [{"function": {"name": name, "arguments": dict(arguments)}} for name, arguments in calls]


def ollama_tool_calls(calls: Sequence[tuple[str, Mapping[str, Any]]], *, model: str = "llama3") -> Reply:
    """`/api/chat` answering with tool calls: (name, arguments object) each, no ids, `done_reason: stop`."""
    reply = ollama_chat("", model=model)
    reply.json["message"]["tool_calls"] = _ollama_calls(calls)
    return reply


def ollama_tool_stream(calls: Sequence[tuple[str, Mapping[str, Any]]], *, model: str = "llama3") -> Reply:
    """A streamed `/api/chat` answer whose calls come whole on one line before the `done: true` line."""
    stamp = {"model": model, "created_at": "2024-01-01T00:00:00Z"}
    said = {"role": "assistant", "content": "", "tool_calls": _ollama_calls(calls)}
    closing = {**stamp, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 3}
    return ndjson({**stamp, "message": said, "done": False}, closing)
