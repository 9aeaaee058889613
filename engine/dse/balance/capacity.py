"""How many calls an endpoint takes at once: its slots.

In order: the endpoint's `max_concurrency`, what the server reports (llama.cpp's
`total_slots`, learned by a probe), then a default per backend type. Local servers get 4:
llama-server starts 4 slots unless told otherwise (`--parallel -1`, "auto"), and Ollama, which
does not report its parallelism over the API, picks at most 4 by itself (`OLLAMA_NUM_PARALLEL`).
vLLM batches continuously up to `--max-num-seqs` (256 by default). Managed servers have exactly
the `parallel` slots they were started with. Cloud APIs scale on their side and answer 429
(which the router honours) when they do not."""

from __future__ import annotations

from ..config.model import BackendConfig, Endpoint
from .probes import ServerReport

_DEFAULT_CAPACITY = {"vllm": 256}
_LOCAL_DEFAULT = 4
_CLOUD_DEFAULT = 64


def default_capacity(backend: BackendConfig) -> int:
    """Slots assumed per endpoint when neither the config nor the server says."""
    if backend.managed is not None:
        return backend.managed.parallel
    if not backend.is_local:
        return _CLOUD_DEFAULT
    return _DEFAULT_CAPACITY.get(backend.type, _LOCAL_DEFAULT)


def capacity_of(endpoint: Endpoint, report: ServerReport | None, default: int) -> tuple[int, str]:
    """The slot count and where it comes from, in words for `dse status`."""
    if endpoint.max_concurrency:
        return endpoint.max_concurrency, "max_concurrency"
    if report is not None and report.slots:
        return report.slots, "reported by the server"
    return default, "default"
