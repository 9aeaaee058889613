"""Which servers take a backend's calls: the replicas the engine started, else the configured endpoints.

One directory is shared by the resolver (which shows a step's endpoints in plans and the
journal) and the router (which builds pools from them), so both learn a managed backend's
replicas at the same moment, from the one place the engine writes them.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config.model import BackendConfig, Endpoint


class EndpointDirectory:
    def __init__(self) -> None:
        self._managed: dict[str, tuple[Endpoint, ...]] = {}

    def manage(self, backend: str, urls: Iterable[str]) -> None:
        """The engine started these replicas for `backend`: they replace whatever the config lists."""
        self._managed[backend] = tuple(Endpoint(url) for url in urls)

    def managed(self) -> dict[str, tuple[str, ...]]:
        """The replicas the engine started, by backend: what a cluster's workers must call too."""
        return {name: tuple(e.url for e in endpoints) for name, endpoints in self._managed.items()}

    def endpoints(self, backend: BackendConfig, role: str | None) -> tuple[Endpoint, ...]:
        return self._managed.get(backend.name) or backend.endpoints_for(role)

    def pool_role(self, backend: BackendConfig, role: str | None) -> str | None:
        """The role a pool is kept for: managed replicas and shared endpoint lists serve every role from one pool."""
        return None if backend.name in self._managed or role not in backend.endpoints else role
