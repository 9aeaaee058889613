"""Hugging Face: Text Generation Inference servers, and the hosted inference behind one HF token.

TGI speaks the OpenAI chat API (its Messages API, under `/v1`) and adds `/health` (200 once
the model is loaded), `/info` (the model it serves and its context) and Prometheus `/metrics`
(`tgi_queue_size` calls waiting, `tgi_batch_current_size` calls in the running batch). A
dedicated HF Inference Endpoint is a TGI server behind a URL and a token: `type: tgi` with its
`base_url` and `api_key: ${HF_TOKEN}`. `type: huggingface` is HF's OpenAI-compatible router,
which serves hub models (`meta-llama/Llama-3.1-8B-Instruct`) from its inference providers.
"""

from __future__ import annotations

import httpx

from ._http import fetch, gather_report, probe, response_body, server_root
from .openai_compat import OpenAICompatBackend
from .registry import BackendType
from .types import Health, ServerReport
from .vllm import prometheus_samples

# TGI batches continuously; its router queues up to `--max-concurrent-requests` (128) calls.
_MAX_CONCURRENT = 128


class TgiBackend(OpenAICompatBackend):
    """Calls over the OpenAI API; readiness from `/health`, model and context from `/info`, load from `/metrics`."""

    async def health(self, endpoint: str) -> Health:
        return await probe(self._native_client(), endpoint, f"{server_root(endpoint)}/health", key_env=self.config.api_key_env, loading_on_503=True)

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        """`max_total_tokens` from `/info`: prompt and answer together, per request."""
        try:
            response = await self._native_client().get(f"{server_root(endpoint)}/info")
        except httpx.HTTPError:
            return None
        info = response_body(response) if response.status_code == 200 else None
        total = info.get("max_total_tokens") if isinstance(info, dict) else None
        return total if isinstance(total, int) and total > 0 else None

    async def report(self, endpoint: str) -> ServerReport:
        return await gather_report(self.kind.auth_headers(self.config), lambda client: self._load_report(client, endpoint))

    async def _load_report(self, client: httpx.AsyncClient, endpoint: str) -> ServerReport:
        root = server_root(endpoint)
        status, _ = await fetch(client, f"{root}/health")
        if status != 200:
            return ServerReport(ready=False, detail="loading the model" if status == 503 else f"HTTP {status}")
        (_, info), (metrics_status, text) = await fetch(client, f"{root}/info"), await fetch(client, f"{root}/metrics", as_text=True)
        model = info.get("model_id") if isinstance(info, dict) else None
        samples = prometheus_samples(text) if metrics_status == 200 and isinstance(text, str) else {}
        busy, waiting = samples.get("tgi_batch_current_size"), samples.get("tgi_queue_size")
        return ServerReport(
            models=frozenset({model}) if isinstance(model, str) else None,
            busy=None if busy is None else int(sum(busy)),
            waiting=None if waiting is None else int(sum(waiting)),
        )


TYPES = (
    BackendType(
        "tgi",
        TgiBackend,
        "OpenAI-compatible (Hugging Face TGI)",
        local=True,
        default_url="http://localhost:8080/v1",
        key_env="HF_TOKEN",
        sdk="openai",
        default_capacity=_MAX_CONCURRENT,
        start_hint="start TGI: docker run --gpus all -p 8080:80 ghcr.io/huggingface/text-generation-inference --model-id MODEL",
        directive_words=(r"tgi", r"text[ \t-]generation[ \t-]inference"),
    ),
    BackendType(
        "huggingface",
        OpenAICompatBackend,
        "OpenAI-compatible (Hugging Face inference)",
        local=False,
        default_url="https://router.huggingface.co/v1",
        key_env="HF_TOKEN",
        sdk="openai",
        directive_words=(r"hugging[ \t-]?face(?:'s)?", r"\bhf\b"),
        default_models={None: "meta-llama/Llama-3.1-8B-Instruct"},
    ),
)
