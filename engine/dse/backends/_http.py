"""Plain-HTTP pieces the adapters share: server roots, error bodies and health probes.

A probe must never raise, must be quick, and must tell "nobody answers" apart from "answers,
but not ready" (loading, or a bad key): one judgement of the status code, whether the GET went
through `httpx` or through a vendor SDK that knows how to authenticate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import httpx

from .types import Health, ServerReport

HEALTH_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 120.0
# A balancer probe runs beside live calls: it must answer quickly or be taken as unreachable.
PROBE_TIMEOUT = 2.0


def server_root(url: str) -> str:
    """`http://host:port` whether the config says that or `.../v1`: native paths such as /health live there."""
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def response_body(response: httpx.Response) -> object:
    """The parsed JSON of an error answer, or its text when a proxy answered with HTML."""
    try:
        return response.json()
    except ValueError:
        return response.text


def health_from_status(
    endpoint: str, status: int, latency: float, *, key_env: str | None, loading_on_503: bool = False
) -> Health:
    """Any HTTP answer means reachable; only 2xx means ready. llama.cpp answers 503 while it loads the model."""
    if 200 <= status < 300:
        return Health(endpoint, reachable=True, ready=True, latency=latency)
    if status == 503 and loading_on_503:
        return Health(endpoint, reachable=True, ready=False, loading=True, latency=latency, detail="loading the model")
    if status in (401, 403):
        env = key_env or "the backend's api_key setting"
        detail = f"authentication failed ({status}): check {env}"
    else:
        detail = f"HTTP {status}"
    return Health(endpoint, reachable=True, ready=False, latency=latency, detail=detail)


async def probe(
    client: httpx.AsyncClient,
    endpoint: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    key_env: str | None = None,
    loading_on_503: bool = False,
) -> Health:
    """GET `url` and judge the answer; never raises, so a health sweep survives dead servers."""
    started = time.perf_counter()
    try:
        response = await client.get(url, headers=headers, timeout=HEALTH_TIMEOUT)
    except httpx.TimeoutException:
        return Health(endpoint, reachable=False, ready=False, detail=f"no answer from {url} within {HEALTH_TIMEOUT:g}s")
    except httpx.HTTPError as exc:
        return Health(endpoint, reachable=False, ready=False, detail=f"cannot reach {url}: {exc or type(exc).__name__}")
    latency = time.perf_counter() - started
    return health_from_status(endpoint, response.status_code, latency, key_env=key_env, loading_on_503=loading_on_503)


async def probe_sdk(
    endpoint: str, request: Awaitable[object], sdk: ModuleType, *, key_env: str | None = None
) -> Health:
    """The same judgement for a cheap call made through a vendor SDK, which sends the auth that SDK uses."""
    started = time.perf_counter()
    try:
        await request
        status = 200
    except sdk.APIStatusError as exc:
        status = exc.status_code
    except sdk.APIError as exc:
        return Health(endpoint, reachable=False, ready=False, detail=f"cannot reach {endpoint}: {exc.__cause__ or exc}")
    return health_from_status(endpoint, status, time.perf_counter() - started, key_env=key_env)


class Unreachable(Exception):
    """A report's request got no HTTP answer at all: the whole report becomes "unreachable"."""


async def fetch(client: httpx.AsyncClient, url: str, *, as_text: bool = False) -> tuple[int, Any]:
    """Status and parsed body (None when it is not JSON); no answer at all raises `Unreachable`."""
    try:
        response = await client.get(url)
    except httpx.TimeoutException:
        raise Unreachable(f"no answer from {url} within {PROBE_TIMEOUT:g}s") from None
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if as_text:
        return response.status_code, response.text
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


async def gather_report(
    headers: dict[str, str], ask: Callable[[httpx.AsyncClient], Awaitable[ServerReport]]
) -> ServerReport:
    """Run one report's requests on a client of its own, so a report never raises and never outlives its loop."""
    async with httpx.AsyncClient(headers=headers, timeout=PROBE_TIMEOUT) as client:
        try:
            return await ask(client)
        except Unreachable as exc:
            return ServerReport(reachable=False, ready=False, detail=str(exc))


def not_ready(url: str, status: int, key_env: str | None) -> ServerReport:
    """A server that answered a report's request with an error status."""
    return ServerReport(ready=False, detail=health_from_status(url, status, 0.0, key_env=key_env).detail)
