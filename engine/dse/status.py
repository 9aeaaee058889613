"""What `dse status` and `dse models` report: every backend, every endpoint, and why not.

A new user's first question is "what is wrong with my setup?", so every probe runs
concurrently with a short timeout, nothing raises, and each problem comes with its reason
(missing secret, connection refused, auth, model not pulled). Managed llama.cpp backends are
not started here; their binary and model files are checked instead.

Each endpoint also gets the balancer's view of it, from the same probes and checks a running
pool uses: its capacity and where that figure comes from, the load the server reports, its
GPU reading (or why there is none), and whether the balancer would send it calls, and if not why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .backends import Backend, Health, ModelEntry, make_backend
from .balance import balancer_settings, capacity_of, default_capacity
from .balance.eligibility import screen
from .balance.gpu import nvml_reader
from .balance.monitor import EndpointMonitor, Reading
from .balance.probes import server_probe
from .config.model import BackendConfig, Config, Endpoint
from .errors import DseError
from .local.assets import find_llama_server, find_model


@dataclass(frozen=True)
class BalanceReport:
    """The balancer's view of one endpoint; None figures are ones the server does not report."""

    capacity: int
    capacity_source: str
    busy: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None
    gpu: str | None = None
    eligible: bool = True
    reason: str = ""


@dataclass
class EndpointReport:
    url: str
    roles: list[str]
    health: Health | None = None
    models: list[ModelEntry] = field(default_factory=list)
    models_error: str | None = None
    balance: BalanceReport | None = None


@dataclass
class BackendReport:
    name: str
    type: str
    usage: list[str]
    unavailable: str | None = None
    endpoints: list[EndpointReport] = field(default_factory=list)
    configured_models: dict[str, str] = field(default_factory=dict)
    managed: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        if self.unavailable:
            return False
        if self.managed is not None:
            return "error" not in self.managed
        return any(e.health is not None and e.health.ready for e in self.endpoints)


async def collect_status(config: Config, *, timeout: float = 3.0, with_models: bool = True) -> list[BackendReport]:
    """Probe every backend concurrently; a probe that hangs is cut off after `timeout` seconds."""
    reports = [_report(config, backend) for backend in config.backends.values()]
    probes = [
        probe
        for backend, report in zip(config.backends.values(), reports)
        if not report.unavailable and backend.managed is None
        for probe in (_probe(backend, report, timeout, with_models), _balance(config, backend, report, timeout))
    ]
    await asyncio.gather(*probes)
    return reports


def _report(config: Config, backend: BackendConfig) -> BackendReport:
    usage = []
    if backend.name == config.default_backend:
        usage.append("default")
    if backend.name in config.fallback_backends:
        usage.append(f"fallback #{config.fallback_backends.index(backend.name) + 1}")
    users = sorted(t.name for t in config.tools.values() if t.backend == backend.name)
    if users:
        usage.append("tools: " + ", ".join(users))
    report = BackendReport(backend.name, backend.type, usage, backend.unavailable, configured_models=dict(backend.models))
    if backend.managed is not None:
        report.managed = _managed(backend)
        return report
    report.endpoints = [EndpointReport(url, names) for url, (_, names) in _served(backend).items()]
    return report


def _served(backend: BackendConfig) -> dict[str, tuple[Endpoint, list[str]]]:
    """Each endpoint URL of a backend, with its configured `Endpoint` and the roles it serves."""
    served: dict[str, tuple[Endpoint, list[str]]] = {}
    for role in [None, *backend.models, *(r for r in backend.endpoints if r)]:
        for endpoint in backend.endpoints_for(role):
            _, names = served.setdefault(endpoint.url, (endpoint, []))
            if role and role not in names:
                names.append(role)
    return served


def _managed(backend: BackendConfig) -> dict[str, str]:
    assert backend.managed is not None
    settings = backend.managed
    info = {
        "replicas": str(settings.replicas),
        "model": settings.model,
        "state": "started on demand by `dse run`, restarted if one dies",
        "capacity": f"{settings.parallel} slot{'s' if settings.parallel != 1 else ''} per replica (managed.parallel)",
    }
    for key, find in (("binary", lambda: find_llama_server(settings.binary)), ("model_file", lambda: find_model(settings.model))):
        try:
            info[key] = str(find())
        except DseError as exc:
            info["error"] = str(exc)
    return info


async def _probe(config: BackendConfig, report: BackendReport, timeout: float, with_models: bool) -> None:
    adapter = make_backend(config)
    try:
        await asyncio.gather(*(_probe_endpoint(adapter, e, timeout, with_models) for e in report.endpoints))
    finally:
        await adapter.aclose()


async def _probe_endpoint(adapter: Backend, report: EndpointReport, timeout: float, with_models: bool) -> None:
    try:
        report.health = await asyncio.wait_for(adapter.health(report.url), timeout)
    except asyncio.TimeoutError:
        report.health = Health(report.url, reachable=False, ready=False, detail=f"no answer within {timeout:g}s")
        return
    if not (with_models and report.health.reachable):
        return
    try:
        report.models = await asyncio.wait_for(adapter.list_models(report.url), timeout)
    except (DseError, asyncio.TimeoutError) as exc:
        report.models_error = str(exc) or "timed out"


async def _balance(config: Config, backend: BackendConfig, report: BackendReport, timeout: float) -> None:
    """Read every endpoint as a pool would, then judge them together: eligibility is relative to the others."""
    settings = balancer_settings(config.balancer, backend.balancer)
    served = _served(backend)
    endpoints = [served[e.url][0] for e in report.endpoints]
    monitor = EndpointMonitor(server_probe(backend), nvml_reader(), settings.metrics_max_age, on_reading=lambda e, r: None)

    async def read(endpoint: Endpoint) -> Reading | None:
        try:
            return await asyncio.wait_for(monitor.refresh(endpoint), timeout)
        except asyncio.TimeoutError:
            return None

    readings = await asyncio.gather(*(read(e) for e in endpoints))
    verdicts = screen(list(zip(endpoints, readings)), settings, None)
    fallback = default_capacity(backend)
    for endpoint_report, endpoint, reading, verdict in zip(report.endpoints, endpoints, readings, verdicts):
        server = reading.server if reading else None
        capacity, source = capacity_of(endpoint, server, fallback)
        gpu = reading.gpu.describe() if reading and reading.gpu else None
        endpoint_report.balance = BalanceReport(
            capacity=capacity,
            capacity_source=source,
            busy=server.busy if server else None,
            waiting=server.waiting if server else None,
            kv_cache_usage=server.kv_cache_usage if server else None,
            gpu=gpu,
            eligible=verdict.kept,
            reason=verdict.reason,
        )
