"""What the gateway's protocol tests share: a served config over stub backends, clients, and readers of its answers.

A gateway start costs a second or two (a subprocess imports the engine), so each test module
starts one for all its tests; tests then script the stubs behind it and read what the client
got. The official SDKs are the clients (retries off: the gateway's router owns retries);
`httpx` reads raw bodies where the SDKs would hide them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
from gateway import ServedGateway
from stubs import Reply, StubServer

USER = [{"role": "user", "content": "hi"}]
# Loopback stubs answer at once; this only bounds how long a broken gateway can hang a test.
PATIENCE = 60.0


def healthy(server: StubServer) -> None:
    """Script the health probes of every backend type the tests use (llama.cpp `/health`, the SDKs' `/v1/models`)."""
    server.route("GET", "/health", Reply(json={"status": "ok"}))
    server.route("GET", "/v1/models", Reply(json={"object": "list", "data": [], "has_more": False}))


def serve_block(**settings: Any) -> str:
    """The config's `serve:` line; background health checks are left out of the way (once an hour), a test asks for one."""
    return "serve: " + json.dumps({"health_interval": 3600, **settings}) + "\n"


@contextmanager
def served(config: str, where: Path, env: Mapping[str, str] | None = None) -> Iterator[ServedGateway]:
    """`dse serve` over `config` (YAML text) until the block ends."""
    path = where / "config.yaml"
    path.write_text(config)
    with ServedGateway(path, where / ".dse", env=dict(env or {})) as gateway:
        yield gateway


def openai_client(gateway: ServedGateway, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=PATIENCE)


def anthropic_client(gateway: ServedGateway, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=PATIENCE)


def post(gateway: ServedGateway, path: str, body: Any = None, *, content: bytes | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """A raw POST: `body` as JSON, or `content` as the exact bytes."""
    if content is None:
        return httpx.post(gateway.url + path, json=body, headers=headers, timeout=PATIENCE)
    return httpx.post(gateway.url + path, content=content, headers=headers, timeout=PATIENCE)


def get(gateway: ServedGateway, path: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.get(gateway.url + path, headers=headers, timeout=PATIENCE)


def openai_error(response: httpx.Response) -> Mapping[str, Any]:
    """The error object of an OpenAI-format error answer, after checking its shape."""
    document = response.json()
    assert set(document) == {"error"}, document
    error = document["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), document
    assert {"param", "code"} <= set(error), document
    return error


def anthropic_error(response: httpx.Response) -> Mapping[str, Any]:
    """The error object of an Anthropic-format error answer, after checking its shape."""
    document = response.json()
    assert document["type"] == "error" and set(document) == {"type", "error"}, document
    error = document["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), document
    return error


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format as {(metric, labels): value}; a line that is neither a comment nor a sample fails."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def metric(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels` (0 when there is none yet)."""
    wanted = set(labels.items())
    return sum(value for (found, have), value in samples.items() if found == name and wanted <= have)
