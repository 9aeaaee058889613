"""Building a backend's endpoint pool from the config: settings, default capacity, what to probe.

A pool of one endpoint is never probed: every check falls back to the only endpoint there is,
so probing would cost the server requests and change nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..config.model import BackendConfig, Config, Endpoint
from .capacity import default_capacity
from .gpu import nvml_reader
from .pool import EndpointPool
from .probes import server_probe
from .settings import balancer_settings


def pool_for(config: Config, backend: BackendConfig, endpoints: Sequence[Endpoint], rng: random.Random | None = None) -> EndpointPool:
    """The pool for these endpoints of `backend`, balanced as `llm.balancer` and the backend's `balancer` say."""
    several = len(endpoints) > 1
    return EndpointPool(
        endpoints,
        settings=balancer_settings(config.balancer, backend.balancer),
        default_capacity=default_capacity(backend),
        probe=server_probe(backend) if several else None,
        gpu=nvml_reader() if several and any(e.gpu is not None for e in endpoints) else None,
        rng=rng,
    )
