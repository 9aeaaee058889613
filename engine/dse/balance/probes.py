"""What servers say about themselves: ready or loading, slots, load, models, memory.

Each server type is asked through its own native paths, because that is where the useful
figures are: llama.cpp `/health` (503 while loading), `/props` (`total_slots`) and `/slots`
(`is_processing`); Ollama `/api/ps` (loaded models, `size_vram` against `size`) and `/api/tags`
(installed models and their sizes); vLLM `/metrics` (`vllm:num_requests_running`,
`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, called `vllm:gpu_cache_usage_perc`
before v0.10) and `/v1/models`. Other OpenAI-compatible local servers say only which models
they have. Cloud APIs are not probed at all: they never say, and asking costs a request.

A probe never raises: an unreachable server is a report saying so, and a figure a server does
not give stays None ("unknown"), which every check treats as passing.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..backends._http import health_from_status, server_root
from ..backends.openai_compat import api_base
from ..config.model import BackendConfig, Endpoint

PROBE_TIMEOUT = 2.0
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(?P<value>\S+)", re.MULTILINE)


@dataclass(frozen=True)
class LoadedModel:
    """A model a server holds in memory; `size_vram` below `size` means part of it runs on the CPU."""

    name: str
    size: int | None = None
    size_vram: int | None = None

    @property
    def offloaded(self) -> bool:
        """Partly on the CPU; a model with no VRAM at all runs on a CPU-only host, which is not a shortage."""
        return bool(self.size and self.size_vram and self.size_vram < self.size)


@dataclass(frozen=True)
class ServerReport:
    """One server's answers at one moment; None means the server did not say."""

    reachable: bool = True
    ready: bool = True
    detail: str = ""
    slots: int | None = None
    busy: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None
    models: frozenset[str] | None = None
    model_sizes: Mapping[str, int] = field(default_factory=dict)
    loaded: Mapping[str, LoadedModel] = field(default_factory=dict)


Probe = Callable[[Endpoint], Awaitable[ServerReport]]


class _Unreachable(Exception):
    """A probe path got no HTTP answer at all: the whole report becomes "unreachable"."""


class HttpProbe:
    """Asks one backend's servers about themselves over plain HTTP, with the backend's auth headers."""

    def __init__(self, config: BackendConfig, kind: str) -> None:
        key = config.api_key
        self._headers = {**config.headers, **({"Authorization": f"Bearer {key.reveal()}"} if key else {})}
        self._key_env = config.api_key_env
        self._ask = {"llamacpp": self._llamacpp, "ollama": self._ollama, "vllm": self._vllm}.get(kind, self._openai)

    async def __call__(self, endpoint: Endpoint) -> ServerReport:
        async with httpx.AsyncClient(headers=self._headers, timeout=PROBE_TIMEOUT) as client:
            try:
                return await self._ask(client, endpoint.url)
            except _Unreachable as exc:
                return ServerReport(reachable=False, ready=False, detail=str(exc))

    async def _llamacpp(self, client: httpx.AsyncClient, url: str) -> ServerReport:
        root = server_root(url)
        status, _ = await _get(client, f"{root}/health")
        health = health_from_status(url, status, 0.0, key_env=self._key_env, loading_on_503=True)
        if not health.ready:
            return ServerReport(ready=False, detail=health.detail)
        (_, props), (_, slots) = await asyncio.gather(_get(client, f"{root}/props"), _get(client, f"{root}/slots"))
        total = props.get("total_slots") if isinstance(props, dict) else None
        busy = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing")) if isinstance(slots, list) else None
        return ServerReport(slots=total if isinstance(total, int) and total > 0 else None, busy=busy)

    async def _ollama(self, client: httpx.AsyncClient, url: str) -> ServerReport:
        root = server_root(url)
        (status, tags), (_, running) = await asyncio.gather(_get(client, f"{root}/api/tags"), _get(client, f"{root}/api/ps"))
        if status >= 400:
            return _not_ready(url, status, self._key_env)
        loaded = {
            ollama_name(m): LoadedModel(ollama_name(m), _int(m.get("size")), _int(m.get("size_vram"))) for m in _listed(running)
        }
        installed = {ollama_name(m): _int(m.get("size")) for m in _listed(tags)}
        sizes = {name: size for name, size in installed.items() if size}
        models = frozenset(installed) | frozenset(loaded) if isinstance(tags, dict) else None
        return ServerReport(models=models, model_sizes=sizes, loaded=loaded)

    async def _vllm(self, client: httpx.AsyncClient, url: str) -> ServerReport:
        report = await self._openai(client, url)
        if not report.ready:
            return report
        status, text = await _get(client, f"{server_root(url)}/metrics", as_text=True)
        if status != 200 or not isinstance(text, str):
            return report
        samples = prometheus_samples(text)
        kv = samples.get("vllm:kv_cache_usage_perc") or samples.get("vllm:gpu_cache_usage_perc")
        running, waiting = samples.get("vllm:num_requests_running"), samples.get("vllm:num_requests_waiting")
        return ServerReport(
            models=report.models,
            busy=None if running is None else int(sum(running)),
            waiting=None if waiting is None else int(sum(waiting)),
            kv_cache_usage=max(kv) if kv else None,
        )

    async def _openai(self, client: httpx.AsyncClient, url: str) -> ServerReport:
        status, listing = await _get(client, f"{api_base(url)}/models")
        if status >= 400:
            return _not_ready(url, status, self._key_env)
        data = listing.get("data") if isinstance(listing, dict) else None
        models = frozenset(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m) if isinstance(data, list) else None
        return ServerReport(models=models)


def server_probe(config: BackendConfig) -> Probe | None:
    """The probe for a backend's servers; None for cloud APIs, which have nothing to tell."""
    if not config.is_local:
        return None
    return HttpProbe(config, "llamacpp" if config.managed is not None else config.type)


def ollama_name(model: Mapping[str, Any] | str) -> str:
    """`llama3` and `llama3:latest` are one model to Ollama; compare them as one."""
    name = model if isinstance(model, str) else str(model.get("name") or model.get("model") or "")
    return name if ":" in name else f"{name}:latest"


def prometheus_samples(text: str) -> dict[str, list[float]]:
    """Metric name -> its values in Prometheus text, one per label set (per model, per engine); NaN is left out."""
    samples: dict[str, list[float]] = {}
    for match in _SAMPLE.finditer(text):
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isfinite(value):
            samples.setdefault(match["name"], []).append(value)
    return samples


async def _get(client: httpx.AsyncClient, url: str, *, as_text: bool = False) -> tuple[int, Any]:
    """Status and parsed body (None when it is not JSON); no answer at all raises `_Unreachable`."""
    try:
        response = await client.get(url)
    except httpx.TimeoutException:
        raise _Unreachable(f"no answer from {url} within {PROBE_TIMEOUT:g}s") from None
    except httpx.HTTPError as exc:
        raise _Unreachable(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if as_text:
        return response.status_code, response.text
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def _not_ready(url: str, status: int, key_env: str | None) -> ServerReport:
    health = health_from_status(url, status, 0.0, key_env=key_env)
    return ServerReport(ready=False, detail=health.detail)


def _listed(listing: object) -> list[dict[str, Any]]:
    models = listing.get("models") if isinstance(listing, dict) else None
    return [m for m in models or [] if isinstance(m, dict)]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
