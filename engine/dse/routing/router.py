"""Sending a resolved call: pick an endpoint from the backend's pool, call the adapter, record it.

The router knows targets, pools and adapters; it does not know workflows (the executor's
business) or wire formats (the adapters').
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from ..backends import Backend, ChatRequest, ChatResponse, Message, make_backend
from ..balance import EndpointPool
from ..config.model import BackendConfig, Config, Endpoint
from ..errors import BackendUnavailable
from .target import Target


class Router:
    """Owns one adapter per backend and one endpoint pool per (backend, role)."""

    def __init__(
        self,
        config: Config,
        managed_endpoints: Mapping[str, Sequence[Endpoint]] | None = None,
        backend_factory: Callable[[BackendConfig], Backend] = make_backend,
    ) -> None:
        self.config = config
        self.managed_endpoints = dict(managed_endpoints or {})
        self._factory = backend_factory
        self._backends: dict[str, Backend] = {}
        self._pools: dict[tuple[str, str | None], EndpointPool] = {}

    def pool(self, backend: str, role: str | None) -> EndpointPool:
        """Managed replicas share one pool; configured endpoints may differ per role."""
        config = self.config.find_backend(backend)
        assert config is not None
        key = (backend, None if backend in self.managed_endpoints or role not in config.endpoints else role)
        pool = self._pools.get(key)
        if pool is None:
            endpoints = self.managed_endpoints.get(backend) or config.endpoints_for(role)
            if not endpoints:
                raise BackendUnavailable(
                    f"backend {backend!r} has no endpoint",
                    backend=backend,
                    hint=f"set llm.{backend}.base_url or endpoints",
                )
            capacity = config.managed.parallel if config.managed else 1
            pool = EndpointPool(endpoints, default_capacity=capacity)
            self._pools[key] = pool
        return pool

    def _backend(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            config = self.config.find_backend(name)
            assert config is not None
            if config.unavailable:
                raise BackendUnavailable(f"backend {name!r} is unavailable: {config.unavailable}", backend=name)
            backend = self._factory(config)
            self._backends[name] = backend
        return backend

    async def chat(self, target: Target, messages: Sequence[Message]) -> ChatResponse:
        """One call on the least-loaded endpoint of the target's backend."""
        backend = self._backend(target.backend)
        request = ChatRequest(
            model=target.wire_model,
            messages=tuple(messages),
            temperature=target.temperature,
            max_tokens=target.max_tokens,
            timeout=target.timeout,
        )
        async with self.pool(target.backend, target.role).acquire() as slot:
            response = await backend.chat(request, slot.endpoint.url)
        return replace(response, backend=target.backend)

    def calls_per_endpoint(self) -> dict[str, dict[str, int]]:
        """Calls served per endpoint, grouped by backend: shown after a run."""
        out: dict[str, dict[str, int]] = {}
        for (backend, _role), pool in self._pools.items():
            out.setdefault(backend, {}).update(pool.counts())
        return out

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
