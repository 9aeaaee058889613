"""A configured secret appears nowhere, whatever carries it back: servers here echo every one.

Each test runs the real `dse` command against loopback stubs that put the secret into their
answers (whole, streamed in pieces, in an error body), then searches everything a user or a
script can see: stdout, stderr, `--json`, `dse show`, and every file under the state directory.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from helpers import run_dse
from stubs import StubServer, openai_chat, openai_error, openai_stream

KEY = "sk-live-0123456789abcdef"
HEADER_TOKEN = "hdr-token-9876543210"
PASSWORD = "url-pass-5551234"
QUERY_TOKEN = "query-token-246810"
ENV = {"MY_API_KEY": KEY, "GATEWAY_TOKEN": HEADER_TOKEN, "URL_PASSWORD": PASSWORD, "QUERY_TOKEN": QUERY_TOKEN}
# What HTTP makes of the URL's user and password (`Authorization: Basic ...`), which a server may echo too.
BASIC = base64.b64encode(f"me:{PASSWORD}".encode()).decode()
ALL = (KEY, HEADER_TOKEN, PASSWORD, QUERY_TOKEN, BASIC)


def config(write, url: str, *, stream: bool = False) -> Path:
    host = url.removeprefix("http://")
    return write(
        "config.yaml",
        "llm:\n  backend: gw\n  gw:\n    type: vllm\n"
        f"    base_url: 'http://me:${{URL_PASSWORD}}@{host}/v1'\n"
        "    api_key: ${MY_API_KEY}\n"
        "    headers: {X-Gateway-Token: '${GATEWAY_TOKEN}'}\n"
        "    models: {generator: m}\n"
        f"  spare: {{type: ollama, base_url: 'http://127.0.0.1:9/?token=${{QUERY_TOKEN}}'}}\n"
        "tools:\n  asker: {llm: {model_key: generator}, prompt: 'Say hi.'}\n",
    )


WORKFLOW = "name: leak\nsteps:\n  - id: ask\n    tool: asker\n{stream}outputs: {{answer: '{{{{ steps.ask.output }}}}'}}\n"


def everything_written(tmp_path: Path, *texts: str) -> str:
    files = [p.read_text(errors="replace") for p in (tmp_path / ".dse").rglob("*") if p.is_file()]
    return "\n".join([*texts, *files])


def assert_nowhere(seen: str) -> None:
    for secret in ALL:
        assert secret not in seen
        assert secret[: len(secret) // 2 + 1] not in seen, "not even the start of one, from a stream cut mid-secret"


def test_an_answer_that_echoes_every_secret_is_scrubbed_everywhere(stub: StubServer, write, tmp_path: Path) -> None:
    echo = f"key {KEY}, header {HEADER_TOKEN}, password {PASSWORD}, token {QUERY_TOKEN}, basic {BASIC}"
    stub.route("POST", "/v1/chat/completions", openai_chat(echo))
    cfg = config(write, stub.url)
    workflow = write("wf.yaml", WORKFLOW.format(stream=""))
    text = run_dse("run", str(workflow), "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert text.returncode == 0, text.stderr
    assert "key ***, header ***, password ***, token ***, basic ***" in text.stdout
    (request,) = stub.calls("POST", "/v1/chat/completions")
    assert request.headers["x-gateway-token"] == HEADER_TOKEN, "scrubbing is for output only: the server gets the real values"
    as_json = run_dse("run", str(workflow), "--config", str(cfg), "--json", cwd=tmp_path, env=ENV)
    run_id = json.loads(as_json.stdout)["id"]
    shown = run_dse("show", run_id, cwd=tmp_path, env=ENV)
    plan = run_dse("plan", str(workflow), "--config", str(cfg), "--why", cwd=tmp_path, env=ENV)
    config_show = run_dse("config", "show", "--config", str(cfg), "--json", cwd=tmp_path, env=ENV)
    outputs = [r.stdout + r.stderr for r in (text, as_json, shown, plan, config_show)]
    assert all(r.returncode == 0 for r in (as_json, shown, plan, config_show))
    assert_nowhere(everything_written(tmp_path, *outputs))


def test_a_streamed_echo_split_across_chunks_is_scrubbed(stub: StubServer, write, tmp_path: Path) -> None:
    pieces = ["Your key is ", KEY[:7], KEY[7:15], KEY[15:], " ok"]
    stub.route("POST", "/v1/chat/completions", openai_stream(pieces))
    workflow = write("wf.yaml", WORKFLOW.format(stream="    stream: true\n"))
    result = run_dse("run", str(workflow), "--config", str(config(write, stub.url)), cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "Your key is *** ok" in result.stderr, "the live stream shows the scrubbed text"
    assert_nowhere(everything_written(tmp_path, result.stdout, result.stderr))


def test_an_error_body_that_echoes_a_header_is_scrubbed(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_error(500, f"upstream refused X-Gateway-Token: {HEADER_TOKEN} ({KEY})"))
    workflow = write("wf.yaml", WORKFLOW.format(stream=""))
    result = run_dse("run", str(workflow), "--config", str(config(write, stub.url)), "--json", cwd=tmp_path, env=ENV)
    assert result.returncode == 1
    assert "upstream refused X-Gateway-Token: ***" in result.stdout
    assert_nowhere(everything_written(tmp_path, result.stdout, result.stderr))


def test_a_type_error_never_quotes_a_value_from_the_environment(write, tmp_path: Path) -> None:
    cfg = write("config.yaml", "llm:\n  backend: o\n  o: {type: ollama, context_windows: {llama3: '${MY_API_KEY}'}}\n")
    result = run_dse("validate", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert result.returncode == 2 and "context_windows" in result.stderr
    assert_nowhere(result.stdout + result.stderr)


def test_a_custom_server_never_gets_the_vendors_key_from_the_environment(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat("fine"))
    cfg = write("config.yaml", f"llm:\n  backend: openai\n  openai: {{base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
    workflow = write("wf.yaml", "name: k\nsteps:\n  - id: a\n    prompt: hi\n")
    result = run_dse("run", str(workflow), "--config", str(cfg), cwd=tmp_path, env={"OPENAI_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    (request,) = stub.calls("POST", "/v1/chat/completions")
    assert KEY not in json.dumps(dict(request.headers)), "no credential the config did not name"


def test_control_sequences_in_an_answer_are_shown_not_obeyed(stub: StubServer, write, tmp_path: Path) -> None:
    stub.route("POST", "/v1/chat/completions", openai_chat("\x1b[2J\x1b]0;pwned\x07\r[ok] all good"))
    workflow = write("wf.yaml", WORKFLOW.format(stream=""))
    result = run_dse("run", str(workflow), "--config", str(config(write, stub.url)), cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\x0d[ok] all good" in result.stdout


@pytest.mark.parametrize(
    "value, what",
    [
        ("${MY_API_KEY", "an unclosed `${`"),
        ("${}", "an empty `${}`"),
        ("${1BAD-NAME}", "invalid variable name"),
        ("${MY_API_KEY:?required}", "an unsupported `${NAME...}` form"),
        ("${A:-${B}}", "a nested `${...}`"),
        ("$MY_API_KEY", "a bare `$NAME` is not expanded here"),
    ],
)
def test_every_malformed_reference_is_a_located_error(write, tmp_path: Path, value: str, what: str) -> None:
    cfg = write("config.yaml", f"llm:\n  backend: o\n  o:\n    type: openai\n    api_key: '{value}'\n")
    result = run_dse("validate", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert result.returncode == 2
    assert f"{cfg}:5:" in result.stderr and "llm.o.api_key" in result.stderr and what in result.stderr
    assert_nowhere(result.stderr)


def test_a_literal_dollar_brace_is_written_with_two_dollars(write, tmp_path: Path) -> None:
    from dse.config import load_config

    cfg = write("config.yaml", "llm:\n  backend: o\n  o: {type: ollama}\ntools:\n  t: {prompt: 'costs $${PRICE} and $5'}\n")
    assert load_config(cfg, environ={}).tools["t"].prompt == "costs ${PRICE} and $5"


def test_a_vendor_key_in_the_environment_is_scrubbed_even_without_a_block_for_it(stub: StubServer, write, tmp_path: Path) -> None:
    """ANTHROPIC_API_KEY serves an undeclared `anthropic` backend (a step may say `model: anthropic:...`): a secret like any other."""
    vendor_key = "sk-ant-vendor-0123456789"
    stub.route("POST", "/v1/chat/completions", openai_chat(f"I saw {vendor_key}"))
    cfg = write("config.yaml", f"llm:\n  backend: s\n  s: {{type: vllm, base_url: '{stub.url}/v1', models: {{generator: m}}}}\n")
    workflow = write("wf.yaml", "name: v\nsteps:\n  - id: ask\n    prompt: hi\noutputs: {answer: '{{ steps.ask.output }}'}\n")
    result = run_dse("run", str(workflow), "--config", str(cfg), cwd=tmp_path, env={"ANTHROPIC_API_KEY": vendor_key})
    assert result.returncode == 0, result.stderr
    assert "I saw ***" in result.stdout
    assert vendor_key not in everything_written(tmp_path, result.stdout, result.stderr)
