"""How many calls an endpoint takes at once: its slots.

In order: the endpoint's `max_concurrency`, what the server reports (llama.cpp's
`total_slots`, learned by a probe), then the default its backend type declares
(`BackendType.slots`). Managed servers have exactly the `parallel` slots they were started
with. Cloud APIs scale on their side and answer 429 (which the router honours) when they do not."""

from __future__ import annotations

from ..backends.registry import backend_type
from ..backends.types import ServerReport
from ..config.model import BackendConfig, Endpoint


def default_capacity(backend: BackendConfig) -> int:
    """Slots assumed per endpoint when neither the config nor the server says."""
    if backend.managed is not None:
        return backend.managed.parallel
    return backend_type(backend.type).slots


def capacity_of(endpoint: Endpoint, report: ServerReport | None, default: int) -> tuple[int, str]:
    """The slot count and where it comes from, in words for `dse status`."""
    if endpoint.max_concurrency:
        return endpoint.max_concurrency, "max_concurrency"
    if report is not None and report.slots:
        return report.slots, "reported by the server"
    return default, "default"
