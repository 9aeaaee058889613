"""Bad requests to `dse serve`: each is a 4xx naming the field at fault, in the route's protocol, and the server keeps serving.

Bodies are sent raw with `httpx` (an SDK would refuse most of them before sending). A fuzz
test then throws random JSON and random bytes at both chat routes: whatever arrives, the
answer is a client error in the route's format or a real answer, never a 5xx, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway import ServedGateway
from gateway_rig import USER, anthropic_error, healthy, openai_error, post, serve_block, served
from hypothesis import given, settings
from hypothesis import strategies as st
from stubs import Received, Reply, StubServer, openai_chat, openai_stream

CHAT, MESSAGES = "/v1/chat/completions", "/v1/messages"
LIMIT = 4096
GOOD = {CHAT: {"model": "generator", "messages": USER}, MESSAGES: {"model": "generator", "max_tokens": 20, "messages": USER}}
ERROR_FORMAT = {CHAT: openai_error, MESSAGES: anthropic_error}


def answer(request: Received) -> Reply:
    """A stream when one was asked for, else a whole answer: whatever a valid request asks, the backend answers well."""
    return openai_stream(["fine"]) if (request.json or {}).get("stream") else openai_chat("fine")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    with StubServer() as backend:
        healthy(backend)
        backend.route("POST", CHAT, answer)
        config = (
            f"llm:\n  backend: main\n  main: {{type: llamacpp, base_url: '{backend.url}', models: {{generator: big, coder: small}}}}\n"
        ) + serve_block(max_body_bytes=LIMIT)
        with served(config, tmp_path_factory.mktemp("gateway")) as running:
            yield running


def still_serving(gateway: ServedGateway, route: str) -> None:
    response = post(gateway, route, GOOD[route])
    assert response.status_code == 200, response.text


def refused(gateway: ServedGateway, route: str, response: httpx.Response, status: int) -> Any:
    """The error object of a refusal, after checking its status, its format and that the next good request works."""
    assert response.status_code == status, response.text
    error = ERROR_FORMAT[route](response)
    still_serving(gateway, route)
    return error


def with_(route: str, **changes: Any) -> dict[str, Any]:
    """The route's good body with fields changed; a None value removes the field."""
    body = {**GOOD[route], **changes}
    return {name: value for name, value in body.items() if value is not None}


def image_part() -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


# (route, body, the param the 400 names)
BAD_FIELDS = {
    "missing model": (CHAT, with_(CHAT, model=None), "model"),
    "missing messages": (CHAT, with_(CHAT, messages=None), "messages"),
    "temperature not a number": (CHAT, with_(CHAT, temperature="hot"), "temperature"),
    "messages not a list": (CHAT, with_(CHAT, messages="hi"), "messages"),
    "image content part": (CHAT, with_(CHAT, messages=[{"role": "user", "content": [image_part()]}]), "messages[0].content[0].type"),
    "unknown role": (CHAT, with_(CHAT, messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
    "logprobs asked for": (CHAT, with_(CHAT, logprobs=True), "logprobs"),
    "unknown field": (CHAT, with_(CHAT, frobnicate=1), "frobnicate"),
    "anthropic without max_tokens": (MESSAGES, with_(MESSAGES, max_tokens=None), "max_tokens"),
    "anthropic image block": (
        MESSAGES,
        with_(MESSAGES, messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AA"}}]}]),
        "messages[0].content[0].type",
    ),
    "anthropic tool_use from the user": (
        MESSAGES,
        with_(MESSAGES, messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
        "messages[0].content[0].type",
    ),
    "anthropic temperature over 1": (MESSAGES, with_(MESSAGES, temperature=1.5), "temperature"),
    "empty model": (CHAT, with_(CHAT, model=""), "model"),
    "a model name with a line break": (CHAT, with_(CHAT, model="generator\r\nx-injected: yes"), "model"),
    "a model name too long to be one": (MESSAGES, with_(MESSAGES, model="main:" + "x" * 300), "model"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_a_bad_field_is_a_400_naming_it_and_the_server_keeps_serving(gateway: ServedGateway, case: str) -> None:
    route, body, param = BAD_FIELDS[case]
    error = refused(gateway, route, post(gateway, route, body), 400)
    assert error["type"] == "invalid_request_error"
    assert param in error["message"] or param.split("[")[0] in error["message"], error
    if route == CHAT:
        assert error["param"] == param


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_an_unknown_model_is_a_404_naming_the_closest_names(gateway: ServedGateway, route: str) -> None:
    error = refused(gateway, route, post(gateway, route, with_(route, model="generater")), 404)
    assert error["type"] == "not_found_error" and "'generator'" in error["message"] and "/v1/models" in error["message"]


RAW_BODIES = {
    "invalid JSON": b'{"model": "generator", "messages": [',
    "a JSON array": b"[1, 2]",
    "a JSON string": b'"hello"',
    "empty": b"",
    "NaN, which is not JSON": b'{"model": "generator", "temperature": NaN, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}',
    "nested deeper than any reader recurses": b'{"model": "generator", "messages": ' + b"[" * 1900 + b"]" * 1900 + b"}",
    "a number beyond any float": b'{"model": "generator", "temperature": 1e999, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}',
    "a lone surrogate, which is not text": b'{"model": "generator", "max_tokens": 20, "messages": [{"role": "user", "content": "\\ud800"}]}',
}


@pytest.mark.parametrize("case", sorted(RAW_BODIES))
@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_a_body_that_is_not_a_json_object_of_text_is_a_400(gateway: ServedGateway, route: str, case: str) -> None:
    error = refused(gateway, route, post(gateway, route, content=RAW_BODIES[case], headers={"content-type": "application/json"}), 400)
    assert any(word in error["message"] for word in ("JSON", "surrogate", "finite")), error


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_a_backend_named_with_no_model_after_the_colon_is_a_404(gateway: ServedGateway, route: str) -> None:
    error = refused(gateway, route, post(gateway, route, with_(route, model="main:")), 404)
    assert "no model after the colon" in error["message"]


def padded(route: str) -> bytes:
    """A good request made larger than the limit by one long message."""
    return json.dumps(with_(route, messages=[{"role": "user", "content": "x" * LIMIT}])).encode()


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_a_body_over_max_body_bytes_is_a_413_whether_its_length_is_declared_or_not(gateway: ServedGateway, route: str) -> None:
    body = padded(route)
    declared = refused(gateway, route, post(gateway, route, content=body), 413)
    chunked = refused(gateway, route, post(gateway, route, content=iter([body[: LIMIT // 2], body[LIMIT // 2 :]])), 413)
    for error in (declared, chunked):
        assert error["type"] == "request_too_large" and "serve.max_body_bytes" in error["message"]


# ---- Fuzz: random bodies, many well formed, some with one field wrong, and junk ------------------------------------

LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
WORDS = st.text(max_size=12)
TEXT_PARTS = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": WORDS}), max_size=2)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]), "content": WORDS | TEXT_PARTS})
FUNCTION = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": st.text("abc", min_size=1, max_size=4)})})
# Values either API takes for its optional fields (response_format left out: a plain stub answer fails a
# schema, which is the backend's fault, not the client's).
PLAUSIBLE = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "temperature": st.floats(0, 1),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 64),
    "max_completion_tokens": st.integers(1, 64),
    "stop": WORDS | st.lists(WORDS, max_size=4),
    "stop_sequences": st.lists(WORDS, max_size=4),
    "seed": st.integers(),
    "tools": st.lists(FUNCTION, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | st.fixed_dictionaries({"type": st.sampled_from(["auto", "any"])}),
    "system": WORDS | TEXT_PARTS,
    "n": st.just(1),
    "logprobs": st.just(False),
    "metadata": st.just({}),
}
WELL_FORMED = st.fixed_dictionaries(
    {"model": st.sampled_from(["generator", "coder", "main", "main:big"]) | WORDS, "messages": st.lists(MESSAGE, min_size=1, max_size=3)},
    optional=PLAUSIBLE,
)
ONE_WRONG = st.builds(lambda body, name, value: {**body, name: value}, WELL_FORMED, st.sampled_from(["model", "messages", *PLAUSIBLE, "extra"]), JSON)
SENT = (WELL_FORMED | ONE_WRONG | JSON).map(lambda body: json.dumps(body).encode()) | st.binary(max_size=300)


@settings(max_examples=60, deadline=None)
@given(route=st.sampled_from([CHAT, MESSAGES]), content=SENT)
def test_whatever_a_client_sends_the_answer_is_a_client_error_or_an_answer_never_a_server_error(
    gateway: ServedGateway, route: str, content: bytes
) -> None:
    response = post(gateway, route, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        ERROR_FORMAT[route](response)
    else:
        assert response.status_code == 200 and "fine" in response.text, "a valid request got the backend's answer"
