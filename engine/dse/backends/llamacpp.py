"""llama.cpp's `llama-server`: the OpenAI API plus native paths that say what the API does not.

`/health` answers 503 while the model loads, `/props` and `/slots` give the context each slot
has and how many slots are busy. The embedded default backend (`managed:`) is this type.
"""

from __future__ import annotations

import asyncio

import httpx

from ._errors import ErrorContext
from ._http import fetch, gather_report, health_from_status, probe, response_body, server_root
from .openai_compat import OpenAICompatBackend
from .registry import STRUCTURED, BackendType
from .types import Health, ServerReport


class LlamaCppBackend(OpenAICompatBackend):
    """Calls over the OpenAI API; readiness, slots and context from llama.cpp's own paths."""

    async def health(self, endpoint: str) -> Health:
        return await probe(self._native_client(), endpoint, f"{server_root(endpoint)}/health", loading_on_503=True)

    async def context_limit(self, model: str, endpoint: str) -> int | None:
        """The per-slot context (`/props`, else `/slots`): what a prompt must fit, whatever the model could do."""
        context = self._context(endpoint, model)
        root = server_root(endpoint)
        props = await self._native_get(f"{root}/props", context)
        if isinstance(props, dict):
            settings = props.get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx") or props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
        slots = await self._native_get(f"{root}/slots", context)
        if isinstance(slots, list) and slots and isinstance(slots[0], dict) and isinstance(slots[0].get("n_ctx"), int):
            return int(slots[0]["n_ctx"])
        return None

    async def report(self, endpoint: str) -> ServerReport:
        """Loading or ready (`/health`), slots (`/props` `total_slots`) and how many are busy (`/slots`)."""
        return await gather_report(self.kind.auth_headers(self.config), lambda client: self._slots_report(client, endpoint))

    async def _slots_report(self, client: httpx.AsyncClient, endpoint: str) -> ServerReport:
        root = server_root(endpoint)
        status, _ = await fetch(client, f"{root}/health")
        health = health_from_status(endpoint, status, 0.0, key_env=self.config.api_key_env, loading_on_503=True)
        if not health.ready:
            return ServerReport(ready=False, detail=health.detail)
        (_, props), (_, slots) = await asyncio.gather(fetch(client, f"{root}/props"), fetch(client, f"{root}/slots"))
        total = props.get("total_slots") if isinstance(props, dict) else None
        busy = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing")) if isinstance(slots, list) else None
        return ServerReport(slots=total if isinstance(total, int) and total > 0 else None, busy=busy)

    async def _native_get(self, url: str, context: ErrorContext) -> object:
        """A native path; None when this server does not have it (404, or disabled: 501)."""
        try:
            response = await self._native_client().get(url)
        except httpx.HTTPError as exc:
            raise context.transport(exc, timed_out=isinstance(exc, httpx.TimeoutException)) from None
        if response.status_code in (404, 501):
            return None
        if response.status_code >= 400:
            raise context.from_status(response.status_code, response_body(response), response.headers)
        return response_body(response)


TYPES = (
    BackendType(
        "llamacpp",
        LlamaCppBackend,
        "OpenAI-compatible (llama.cpp)",
        local=True,
        default_url="http://localhost:8080",
        sdk="openai",
        start_hint="start `llama-server -m MODEL.gguf`, or give the backend a `managed:` block",
        directive_words=(r"llama[ \t.-]?cpp",),
        default_models={None: "smollm2"},
        structured_output=STRUCTURED,
    ),
)
