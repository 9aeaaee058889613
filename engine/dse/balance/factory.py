"""Building a backend's endpoint pool from the config: settings, default capacity, what to probe.

Only local servers are probed, through their adapter's `report` (cloud APIs never say, and
asking costs a request). A pool of one endpoint is not probed while it serves calls: every
check falls back to the only endpoint there is, so probing would cost the server requests and
change nothing. `dse status` reads even a single endpoint, because there the reading is the point.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..backends import Backend, ServerReport, ServerReporter
from ..backends.registry import backend_type
from ..config.model import BackendConfig, Config, Endpoint
from .capacity import default_capacity
from .gpu import nvml_reader
from .monitor import Probe
from .pool import EndpointPool
from .settings import balancer_settings


def pool_for(
    config: Config,
    backend: BackendConfig,
    endpoints: Sequence[Endpoint],
    adapter: Backend,
    *,
    always_read: bool = False,
    rng: random.Random | None = None,
) -> EndpointPool:
    """The pool for these endpoints of `backend`, balanced as `llm.balancer` and the backend's `balancer` say."""
    read = always_read or len(endpoints) > 1
    return EndpointPool(
        endpoints,
        settings=balancer_settings(config.balancer, backend.balancer),
        default_capacity=default_capacity(backend),
        probe=_probe(backend, adapter) if read else None,
        gpu=nvml_reader() if read and any(e.gpu is not None for e in endpoints) else None,
        rng=rng,
    )


def _probe(backend: BackendConfig, adapter: Backend) -> Probe | None:
    if not backend_type(backend.type).local or not isinstance(adapter, ServerReporter):
        return None
    reporter = adapter

    async def probe(endpoint: Endpoint) -> ServerReport:
        return await reporter.report(endpoint.url)

    return probe
