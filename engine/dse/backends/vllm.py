"""vLLM: the OpenAI API, plus Prometheus `/metrics` that say how loaded the server is.

`vllm:num_requests_running` and `vllm:num_requests_waiting` count calls from every client, and
`vllm:kv_cache_usage_perc` (called `vllm:gpu_cache_usage_perc` before v0.10) says how full the
KV cache is: the balancer's best signal that the next call would queue.
"""

from __future__ import annotations

import math
import re

import httpx

from ._http import fetch, gather_report, server_root
from .openai_compat import OpenAICompatBackend
from .registry import STRUCTURED, BackendType
from .types import ServerReport

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(?P<value>\S+)", re.MULTILINE)
# vLLM batches continuously up to `--max-num-seqs`, 256 by default.
_MAX_NUM_SEQS = 256


class VllmBackend(OpenAICompatBackend):
    """Calls over the OpenAI API; load and KV-cache figures from `/metrics`."""

    async def report(self, endpoint: str) -> ServerReport:
        return await gather_report(self.kind.auth_headers(self.config), lambda client: self._metrics_report(client, endpoint))

    async def _metrics_report(self, client: httpx.AsyncClient, endpoint: str) -> ServerReport:
        report = await self._models_report(client, endpoint)
        if not report.ready:
            return report
        status, text = await fetch(client, f"{server_root(endpoint)}/metrics", as_text=True)
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


TYPES = (
    BackendType(
        "vllm",
        VllmBackend,
        "OpenAI-compatible (vLLM)",
        local=True,
        default_url="http://localhost:8000/v1",
        sdk="openai",
        default_capacity=_MAX_NUM_SEQS,
        start_hint="start `vllm serve MODEL`",
        directive_words=(r"vllm",),
        structured_output=STRUCTURED,
    ),
)
