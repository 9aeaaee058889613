"""What every adapter must do the same way, run once per wire protocol (rows in wire.py).

The router retries, fails over and reports on `BackendError`s without knowing which protocol a
backend speaks, so a timeout, a cut stream, a rate limit or a bad key must come out the same
from all three adapters: one test per idea here, and each protocol file keeps only its own.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from email.utils import formatdate
from typing import Any

import pytest
from stubs import Reply, StubServer, call, drain, refused_url
from wire import WIRES, Wire

from dse.backends import ChatResponse, StreamChunk, Usage
from dse.errors import AuthError, BackendError, BackendTimeout, BackendUnavailable
from dse.errors import BadRequest, ContextTooLong, ModelNotFound, RateLimited


def each_wire(*names: str, cases: Callable[[Wire], Iterable[tuple[Any, ...]]] | None = None) -> pytest.MarkDecorator:
    """Parametrize `wire` (and `names`) over every protocol; `cases` gives a protocol's own extra values."""
    if cases is None:
        return pytest.mark.parametrize("wire", [pytest.param(w, id=w.name) for w in WIRES])
    params = [
        pytest.param(w, *case, id="-".join([w.name, *(_id(v, i) for v in case)]))
        for w in WIRES
        for i, case in enumerate(cases(w))
    ]
    return pytest.mark.parametrize(("wire", *names), params)


def _id(value: object, index: int) -> str:
    """A readable id part: numbers, words and class names as they are, anything longer by its index."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, int) or (isinstance(value, str) and " " not in value):
        return str(value)
    return str(index)


def chat(wire: Wire, url: str, **make: Any) -> ChatResponse:
    """One chat call with the protocol's usual request; the adapter is closed afterwards."""
    return call(wire.make(**make), lambda b: b.chat(wire.request, url))


def stream(wire: Wire, url: str, into: list[StreamChunk] | None = None, **make: Any) -> list[StreamChunk]:
    """Every chunk of one stream call; `into` keeps what arrived when the stream then raises."""
    return call(wire.make(**make), lambda b: drain(b.stream(wire.request, url), into))


# ---- Streams that end well --------------------------------------------------------------


@each_wire("finish", cases=lambda w: [(f,) for f in w.finishes])
def test_a_stream_yields_the_pieces_in_order_then_one_closing_chunk(stub: StubServer, wire: Wire, finish: str) -> None:
    stub.route("POST", wire.chat_path, wire.stream(["Hel", "lo", "!"], usage=(6, 3), finish=finish, chunk_delay=0.02))
    chunks = stream(wire, stub.url)
    assert [c.text for c in chunks] == ["Hel", "lo", "!", ""]
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    cap = finish == wire.finishes[-1]  # the token cap, reported as `length` whatever the protocol calls it
    assert chunks[-1].finish_reason == ("length" if cap else finish) and chunks[-1].usage == Usage(6, 3)
    assert [c.elapsed for c in chunks] == sorted(c.elapsed for c in chunks)
    [sent] = stub.requests
    picked = {name: sent.json[name] for name in wire.stream_sent}
    assert json.dumps(picked, sort_keys=True) == json.dumps(wire.stream_sent, sort_keys=True)


@each_wire()
def test_stream_chunks_carry_the_time_since_the_request(stub: StubServer, wire: Wire) -> None:
    """`elapsed` is what a model step reads for time to first token and latency, without timing it again."""
    stub.route("POST", wire.chat_path, wire.stream(["Hel", "lo"], usage=(6, 2), chunk_delay=0.02))
    chunks = stream(wire, stub.url)
    assert "".join(c.text for c in chunks) == "Hello" and chunks[-1].usage == Usage(6, 2)
    elapsed = [c.elapsed for c in chunks]
    assert 0 < elapsed[0] and elapsed == sorted(elapsed) and elapsed[0] < elapsed[-1]
    assert len(stub.requests) == 1


# ---- Streams that break -----------------------------------------------------------------

PIECES = ["Hel", "lo", " world"]


@each_wire("ending", cases=lambda w: [("dropped",), ("unfinished",)])
def test_a_stream_cut_before_its_final_event_raises_instead_of_ending_as_complete(
    stub: StubServer, wire: Wire, ending: str
) -> None:
    """Dropped after the first piece, or ended without the final event: either way no answer, not a short one."""
    if ending == "dropped":
        reply, arrived = wire.stream(PIECES, cut_after=wire.lead_events + 1), "Hel"
    else:
        reply, arrived = wire.stream(PIECES, complete=False), "Hello world"
    stub.route("POST", wire.chat_path, reply)
    got: list[StreamChunk] = []
    with pytest.raises(BackendUnavailable, match="broke off"):
        stream(wire, stub.url, got)
    assert "".join(c.text for c in got) == arrived
    assert all(c.finish_reason is None for c in got), "no closing chunk for a broken stream"


@each_wire()
def test_a_stall_mid_stream_is_a_timeout(stub: StubServer, wire: Wire) -> None:
    stub.route("POST", wire.chat_path, wire.stream(["a", "b"], chunk_delay=1.0))
    with pytest.raises(BackendTimeout):
        stream(wire, stub.url, timeout=0.2)


def _stream_errors(wire: Wire) -> list[tuple[int, type[BackendError], str]]:
    """A server error for every protocol; where a busy signal exists (Anthropic), it must read as a rate limit."""
    cases: list[tuple[int, type[BackendError], str]] = [
        (500, BackendUnavailable, "an error was encountered while running the model")
    ]
    if wire.overloaded is not None:
        cases.append((wire.overloaded, RateLimited, "Overloaded"))
    return cases


@each_wire("status", "raised", "message", cases=_stream_errors)
def test_an_error_event_inside_a_stream_is_raised_as_what_it_stands_for(
    stub: StubServer, wire: Wire, status: int, raised: type[BackendError], message: str
) -> None:
    stub.route("POST", wire.chat_path, wire.stream_error(status, message))
    with pytest.raises(raised, match=re.escape(message)):
        stream(wire, stub.url)


# ---- Slow and absent servers ------------------------------------------------------------


@each_wire()
def test_an_answer_slower_than_the_timeout_is_a_timeout(stub: StubServer, wire: Wire) -> None:
    # The server would answer after a minute (the stub cuts the wait short when the test ends).
    stub.route("POST", wire.chat_path, Reply(json={}, delay=60.0))
    with pytest.raises(BackendTimeout):
        chat(wire, stub.url, timeout=0.2)
    assert len(stub.requests) == 1
    # The backend would wait 30 s; the step's 0.2 s wins. The bound only tells the two apart,
    # with a wide margin for a busy machine: it is not a measure of speed.
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        call(wire.make(timeout=30), lambda b: b.chat(replace(wire.request, timeout=0.2), stub.url))
    assert time.monotonic() - started < 15, "a step's own timeout wins over the backend's"
    assert len(stub.requests) == 2


@each_wire()
def test_connection_refused_is_unavailable(wire: Wire) -> None:
    url = refused_url()
    with pytest.raises(BackendUnavailable) as caught:
        chat(wire, url)
    assert caught.value.endpoint == url and caught.value.backend == wire.backend_name


@each_wire()
def test_health_of_an_unreachable_server_does_not_raise(wire: Wire) -> None:
    health = call(wire.make(), lambda b: b.health(refused_url()))
    assert not health.reachable and not health.ready and health.detail


# ---- HTTP errors: one request, then the error the router acts on -------------------------


@each_wire("status", "form", cases=lambda w: [(s, f) for s in w.rate_limit_statuses for f in ("seconds", "http-date")])
def test_rate_limits_are_rate_limited_with_the_servers_retry_after(
    stub: StubServer, wire: Wire, status: int, form: str
) -> None:
    """Both spellings of the header servers use, and both of its forms."""
    if form == "seconds":
        headers, expected = {"retry-after": "7"}, 7.0
    else:
        headers, expected = {"Retry-After": formatdate(time.time() + 30, usegmt=True)}, pytest.approx(30.0, abs=1.5)
    stub.route("POST", wire.chat_path, wire.error(status, "slow down", headers=headers))
    with pytest.raises(RateLimited) as caught:
        chat(wire, stub.url)
    assert caught.value.retry_after == expected
    assert (caught.value.backend, caught.value.endpoint) == (wire.backend_name, stub.url)
    assert len(stub.requests) == 1, "SDK retries must be off: the router owns retries"


@each_wire("value", cases=lambda w: [("inf",), ("nan",), ("1e400",)])
def test_a_retry_after_that_is_no_number_of_seconds_is_no_retry_after(stub: StubServer, wire: Wire, value: str) -> None:
    """Passed on, `inf` would have the router wait forever and a gateway fail to write its own header."""
    stub.route("POST", wire.chat_path, wire.error(wire.rate_limit_statuses[0], "slow down", headers={"retry-after": value}))
    with pytest.raises(RateLimited) as caught:
        chat(wire, stub.url)
    assert caught.value.retry_after is None


@each_wire("status", cases=lambda w: [(500,), (502,), (503,)])
def test_server_errors_are_unavailable_after_one_request(stub: StubServer, wire: Wire, status: int) -> None:
    stub.route("POST", wire.chat_path, wire.error(status, "upstream trouble"))
    with pytest.raises(BackendUnavailable) as caught:
        chat(wire, stub.url)
    assert type(caught.value) is BackendUnavailable
    assert str(status) in str(caught.value) and "upstream trouble" in str(caught.value)
    assert (caught.value.backend, caught.value.endpoint) == (wire.backend_name, stub.url)
    assert len(stub.requests) == 1


@each_wire()
def test_a_proxys_html_error_page_is_still_mapped(stub: StubServer, wire: Wire) -> None:
    page = Reply(status=502, body=b"<html><h1>502 Bad Gateway</h1></html>", headers={"Content-Type": "text/html"})
    stub.route("POST", wire.chat_path, page)
    with pytest.raises(BackendUnavailable, match="Bad Gateway"):
        chat(wire, stub.url)
    assert len(stub.calls("POST", wire.chat_path)) == 1


@each_wire("status", cases=lambda w: [(401,), (403,)])
def test_a_bad_key_names_the_variable_and_never_the_key(stub: StubServer, wire: Wire, status: int) -> None:
    stub.route("POST", wire.chat_path, wire.error(status, f"Incorrect API key provided: {wire.key}"))
    with pytest.raises(AuthError) as caught:
        chat(wire, stub.url, key=wire.key)
    assert wire.key_env in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caught.value.message, caught.value.hint or ""):
        assert wire.key not in text
    [sent] = stub.requests
    sent_as = {header: sent.headers.get(header) for header, _ in wire.key_headers}
    assert any(sent_as[header] == prefix + wire.key for header, prefix in wire.key_headers), "the key went out"


@each_wire()
def test_other_errors_never_leak_the_key_either(stub: StubServer, wire: Wire) -> None:
    stub.route("POST", wire.chat_path, wire.error(400, f"bad field near {wire.key}"))
    with pytest.raises(BadRequest) as caught:
        chat(wire, stub.url, key=wire.key)
    assert wire.key not in str(caught.value) and "***" in str(caught.value)


@each_wire()
def test_an_unknown_model_says_what_to_do_on_chat_and_on_stream(stub: StubServer, wire: Wire) -> None:
    stub.route("POST", wire.chat_path, wire.error(404, wire.missing_model_message))
    with pytest.raises(ModelNotFound) as caught:
        chat(wire, stub.url)
    assert wire.missing_model_hint in str(caught.value)
    with pytest.raises(ModelNotFound, match=re.escape(wire.missing_model_hint)):
        stream(wire, stub.url)


@each_wire("reply", cases=lambda w: [(r,) for r in w.too_long])
def test_a_prompt_too_long_is_context_too_long(stub: StubServer, wire: Wire, reply: Reply) -> None:
    stub.route("POST", wire.chat_path, reply)
    with pytest.raises(ContextTooLong):
        chat(wire, stub.url)


@each_wire(
    "status",
    "message",
    cases=lambda w: [
        (400, "messages: roles must alternate"),
        (400, "invalid message role"),
        (422, "temperature must be at most 2"),
    ],
)
def test_other_4xx_are_bad_requests(stub: StubServer, wire: Wire, status: int, message: str) -> None:
    stub.route("POST", wire.chat_path, wire.error(status, message))
    with pytest.raises(BadRequest, match=re.escape(message)):
        chat(wire, stub.url)
