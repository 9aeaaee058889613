"""Who may use `dse serve`, and which endpoints it sends calls to: API keys, refusals at start, health checks.

One gateway with `serve.api_keys: [${GW_KEY}]` serves the module, over a backend whose pool
has two stub endpoints. The pool's backend speaks plain OpenAI (a cloud type, which the
balancer never probes itself), so the only thing that can take an endpoint out of rotation
here is the gateway's own health check.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from gateway import ServedGateway
from gateway_rig import USER, anthropic_client, anthropic_error, get, healthy, openai_client, openai_error, post, serve_block, served
from helpers import run_dse
from stubs import Reply, StubServer, openai_chat

from dse.cli import main
from dse.errors import SetupError
from dse.serve.server import require_stack

KEY = "gw-key-5ecret-7f3a9c"
BACKEND_KEY = "sk-backend-5ecret-0b41"
CHAT, MESSAGES = "/v1/chat/completions", "/v1/messages"
BODIES = {CHAT: {"model": "generator", "messages": USER}, MESSAGES: {"model": "generator", "max_tokens": 20, "messages": USER}}
ERROR_FORMAT = {CHAT: openai_error, MESSAGES: anthropic_error}
DOWN = Reply(status=500, json={"error": {"message": "down"}})


@pytest.fixture(scope="module")
def first() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


@pytest.fixture(scope="module")
def second() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def pool_config(first: StubServer, second: StubServer, **serve: Any) -> str:
    return (
        "llm:\n  backend: main\n  circuit_breaker: {failures: 1000}\n"
        f"  main: {{type: openai, api_key: {BACKEND_KEY}, endpoints: ['{first.url}/v1', '{second.url}/v1'], models: {{generator: big}}}}\n"
    ) + serve_block(**serve)


@pytest.fixture(scope="module")
def gateway(first: StubServer, second: StubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    for server, name in ((first, "first"), (second, "second")):
        healthy(server)
        server.route("POST", CHAT, openai_chat(f"from {name}"))
    with served(pool_config(first, second, api_keys=["${GW_KEY}"]), tmp_path_factory.mktemp("gateway"), env={"GW_KEY": KEY}) as running:
        yield running


KEYED = {"authorization": f"Bearer {KEY}"}


# ---- API keys -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}], ids=["none", "wrong bearer", "wrong x-api-key"])
@pytest.mark.parametrize("route", [CHAT, MESSAGES])
def test_a_request_without_the_key_is_a_401_in_its_protocol(gateway: ServedGateway, route: str, given: dict[str, str]) -> None:
    response = post(gateway, route, BODIES[route], headers=given)
    assert response.status_code == 401, response.text
    assert ERROR_FORMAT[route](response)["type"] == "authentication_error"


def test_the_sdks_pass_with_the_key_in_either_header_and_fail_without_it(gateway: ServedGateway) -> None:
    answer = openai_client(gateway, KEY).chat.completions.create(model="generator", messages=USER)
    assert answer.choices[0].message.content in ("from first", "from second")
    message = anthropic_client(gateway, KEY).messages.create(model="generator", max_tokens=20, messages=USER)
    assert message.content[0].type == "text" and message.content[0].text in ("from first", "from second")
    assert post(gateway, CHAT, BODIES[CHAT], headers={"x-api-key": KEY}).status_code == 200, "x-api-key works on the OpenAI route too"
    assert post(gateway, CHAT, BODIES[CHAT], headers={"authorization": f"bearer {KEY}"}).status_code == 200, "the scheme in any case"
    either = {"authorization": f"Bearer {KEY}", "x-api-key": "stale"}
    assert post(gateway, CHAT, BODIES[CHAT], headers=either).status_code == 200, "a stale x-api-key does not hide a good bearer"
    assert post(gateway, CHAT, BODIES[CHAT], headers={"authorization": KEY}).status_code == 401, "no scheme, no key"
    with pytest.raises(openai.AuthenticationError):
        openai_client(gateway, "wrong").chat.completions.create(model="generator", messages=USER)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(gateway, "wrong").messages.create(model="generator", max_tokens=20, messages=USER)


def test_health_is_open_and_everything_else_needs_the_key(gateway: ServedGateway) -> None:
    opened = get(gateway, "/health")
    assert opened.status_code == 200 and opened.json() == {"status": "ok"}, "without the key, the status and nothing of the setup"
    assert "backends" in get(gateway, "/health", KEYED).json()
    for path in ("/metrics", "/v1/models", "/v1/providers"):
        assert get(gateway, path).status_code == 401
        assert get(gateway, path, KEYED).status_code == 200


def test_the_keys_never_appear_in_stderr_metrics_or_any_answer(gateway: ServedGateway) -> None:
    answers = [
        post(gateway, CHAT, BODIES[CHAT], headers=KEYED),
        post(gateway, CHAT, BODIES[CHAT], headers={"authorization": f"Bearer {KEY}x"}),
        post(gateway, MESSAGES, {"model": "nope", "max_tokens": 5, "messages": USER}, headers={"x-api-key": KEY}),
        post(gateway, "/v1/providers/health-check", headers=KEYED),
        *(get(gateway, path, KEYED) for path in ("/health", "/metrics", "/v1/models", "/v1/providers", "/v1/providers/main/models")),
    ]
    assert [a.status_code for a in answers] == [200, 401, 404, 200, 200, 200, 200, 200, 200]
    for secret in (KEY, BACKEND_KEY):
        assert secret not in gateway.stderr()
        for answer in answers:
            assert secret not in answer.text and secret not in str(answer.headers), answer.url


# ---- Refusals before anything starts --------------------------------------------------------------------------


def test_without_keys_listening_beyond_loopback_is_refused(first: StubServer, second: StubServer, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(pool_config(first, second))
    done = run_dse("serve", "--config", str(config), "--host", "0.0.0.0", "--port", "0", "--state-dir", str(tmp_path / ".dse"), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on 0.0.0.0 without serve.api_keys" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "", "refused before it announced anything"


def test_an_unset_variable_in_api_keys_is_refused_naming_it(first: StubServer, second: StubServer, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(pool_config(first, second, api_keys=["${DSE_TEST_GATEWAY_KEY_NEVER_SET}"]))
    done = run_dse("serve", "--config", str(config), "--port", "0", "--state-dir", str(tmp_path / ".dse"), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "DSE_TEST_GATEWAY_KEY_NEVER_SET" in done.stderr and "is not set" in done.stderr and "Traceback" not in done.stderr


def test_without_the_web_stack_dse_serve_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], first: StubServer, second: StubServer, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)  # `import starlette` now raises ImportError
    with pytest.raises(SetupError) as caught:
        require_stack()
    assert caught.value.hint == "pip install 'dse[serve]'"
    config = tmp_path / "config.yaml"
    config.write_text(pool_config(first, second))
    assert main(["serve", "--config", str(config), "--port", "0", "--state-dir", str(tmp_path / ".dse")]) == 2
    assert "pip install 'dse[serve]'" in capsys.readouterr().err


# ---- Health checks --------------------------------------------------------------------------------------------


def check(gateway: ServedGateway) -> dict[str, Any]:
    """Run the health check now; the one backend's entry of what `/v1/providers` then lists."""
    response = post(gateway, "/v1/providers/health-check", headers=KEYED)
    assert response.status_code == 200, response.text
    (main_backend,) = response.json()["data"]
    return main_backend


@pytest.fixture
def pool(gateway: ServedGateway, first: StubServer, second: StubServer) -> Iterator[tuple[StubServer, StubServer]]:
    """Both endpoints healthy and checked before and after the test, whatever it broke."""
    for server in (first, second):
        healthy(server)
    check(gateway)
    yield first, second
    for server in (first, second):
        healthy(server)
    check(gateway)


def endpoint_status(entry: dict[str, Any]) -> dict[str, str]:
    return {e["url"]: e["status"] for e in entry["endpoints"]}


def served_by(gateway: ServedGateway, calls: int) -> set[str | None]:
    client = openai_client(gateway, KEY)
    return {client.chat.completions.create(model="generator", messages=USER).choices[0].message.content for _ in range(calls)}


def test_providers_list_each_endpoint_with_its_checked_status(gateway: ServedGateway, pool: tuple[StubServer, StubServer]) -> None:
    first, second = pool
    (entry,) = get(gateway, "/v1/providers", KEYED).json()["data"]
    assert entry["name"] == "main" and entry["type"] == "openai" and entry["status"] == "healthy"
    assert endpoint_status(entry) == {f"{first.url}/v1": "healthy", f"{second.url}/v1": "healthy"}
    assert all(e["checked_at"] and e["latency_ms"] is not None for e in entry["endpoints"])


def test_an_endpoint_that_fails_its_check_gets_no_calls_until_a_check_finds_it_back(gateway: ServedGateway, pool: tuple[StubServer, StubServer]) -> None:
    first, second = pool
    assert served_by(gateway, 20) == {"from first", "from second"}, "both endpoints serve while both are healthy"
    second.route("GET", "/v1/models", DOWN)
    entry = check(gateway)
    assert entry["status"] == "degraded" and endpoint_status(entry)[f"{second.url}/v1"] == "unhealthy"
    assert served_by(gateway, 20) == {"from first"}
    healthy(second)
    assert check(gateway)["status"] == "healthy"
    # Ties go to the endpoint that served fewer calls: `second` takes the next ~20 alone, then they alternate.
    assert served_by(gateway, 60) == {"from first", "from second"}


def test_without_a_healthy_endpoint_for_the_default_backend_health_and_chat_are_503(gateway: ServedGateway, pool: tuple[StubServer, StubServer]) -> None:
    for server in pool:
        server.route("GET", "/v1/models", DOWN)
    assert check(gateway)["status"] == "unhealthy"
    health = get(gateway, "/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    sent = [len(server.calls("POST", CHAT)) for server in pool]
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(gateway, KEY).chat.completions.create(model="generator", messages=USER)
    assert caught.value.status_code == 503 and openai_error(caught.value.response)["code"] == "backend_unavailable"
    assert [len(server.calls("POST", CHAT)) for server in pool] == sent, "no call went to an endpoint known to be down"
