"""What `dse status` and `dse models` report: every backend, every endpoint, and why not.

A new user's first question is "what is wrong with my setup?", so every probe runs
concurrently with a short timeout, nothing raises, and each problem comes with its reason
(missing secret, connection refused, auth, model not pulled). Managed llama.cpp backends are
not started here; their binary and model files are checked instead.

Each endpoint also gets the balancer's view of it: an `EndpointPool` built as a run would
build it surveys the endpoints, so status shows exactly what the balancer would decide: each
capacity and where that figure comes from, the load the server reports, its GPU reading, and
whether the balancer would send it calls, and if not why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import Backend, Health, ModelEntry, make_backend
from .backends.registry import backend_type
from .balance import EndpointDirectory, EndpointView, pool_for
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
    """`missing` lists configured models the server does not offer, where it says what it offers."""

    url: str
    roles: list[str]
    health: Health | None = None
    models: list[ModelEntry] = field(default_factory=list)
    models_error: str | None = None
    balance: BalanceReport | None = None
    missing: list[str] = field(default_factory=list)


@dataclass
class BackendReport:
    """One backend; `local`, `start_hint` and `pull_hint` come from its type's declaration."""

    name: str
    type: str
    usage: list[str]
    protocol: str
    local: bool
    start_hint: str | None = None
    pull_hint: str | None = None
    unavailable: str | None = None
    endpoints: list[EndpointReport] = field(default_factory=list)
    configured_models: dict[str, str] = field(default_factory=dict)
    managed: dict[str, Any] | None = None

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
    await asyncio.gather(
        *(
            _probe(config, backend, report, timeout, with_models)
            for backend, report in zip(config.backends.values(), reports)
            if not report.unavailable and backend.managed is None
        )
    )
    return reports


async def endpoint_health(config: Config, names: Iterable[str], *, timeout: float = 3.0) -> dict[str, Health]:
    """Each endpoint of the named backends, probed at once under `timeout`: health alone, no models or balancer survey.

    What `dse plan --check` asks before a run. Backends that are unavailable by config (a
    missing key) or managed (started by the run itself) are not probed.
    """
    backends = [b for b in map(config.find_backend, dict.fromkeys(names)) if b is not None and not b.unavailable and b.managed is None]
    reports = [_report(config, backend) for backend in backends]

    async def probe(backend: BackendConfig, report: BackendReport) -> None:
        adapter = make_backend(backend)
        try:
            await asyncio.gather(*(_probe_endpoint(adapter, e, timeout, with_models=False) for e in report.endpoints))
        finally:
            await adapter.aclose()

    await asyncio.gather(*(probe(backend, report) for backend, report in zip(backends, reports)))
    return {e.url: e.health for report in reports for e in report.endpoints if e.health is not None}


def _report(config: Config, backend: BackendConfig) -> BackendReport:
    usage = []
    if backend.name == config.default_backend:
        usage.append("default")
    if backend.name in config.fallback_backends:
        usage.append(f"fallback #{config.fallback_backends.index(backend.name) + 1}")
    users = sorted(t.name for t in config.tools.values() if t.backend == backend.name)
    if users:
        usage.append("tools: " + ", ".join(users))
    kind = backend_type(backend.type)
    report = BackendReport(
        backend.name,
        backend.type,
        usage,
        protocol=kind.protocol,
        local=kind.local,
        start_hint=kind.start_hint,
        pull_hint=kind.pull_hint,
        unavailable=backend.unavailable,
        configured_models=dict(backend.models),
    )
    if backend.managed is not None:
        report.managed = _managed(backend)
        return report
    report.endpoints = [EndpointReport(url, names) for url, (_, names) in _served(backend).items()]
    return report


def _served(backend: BackendConfig) -> dict[str, tuple[Endpoint, list[str]]]:
    """Each endpoint URL of a backend, with its configured `Endpoint` and the roles it serves."""
    served: dict[str, tuple[Endpoint, list[str]]] = {}
    directory = EndpointDirectory()
    for role in [None, *backend.models, *(r for r in backend.endpoints if r)]:
        for endpoint in directory.endpoints(backend, role):
            _, names = served.setdefault(endpoint.url, (endpoint, []))
            if role and role not in names:
                names.append(role)
    return served


def _managed(backend: BackendConfig) -> dict[str, Any]:
    """What `dse status` says of a managed backend; numbers stay numbers for `--json`."""
    assert backend.managed is not None
    settings = backend.managed
    info: dict[str, Any] = {
        "replicas": settings.replicas,
        "model": settings.model,
        "state": "started on demand by `dse run`, restarted if one dies",
        "capacity": f"{settings.parallel} slot{'s' if settings.parallel != 1 else ''} per replica (managed.parallel)",
    }
    finders: tuple[tuple[str, Callable[[], Path]], ...] = (
        ("binary", lambda: find_llama_server(settings.binary)),
        ("model_file", lambda: find_model(settings.model)),
    )
    for key, find in finders:
        try:
            info[key] = str(find())
        except DseError as exc:
            info["error"] = str(exc)
    return info


async def _probe(config: Config, backend: BackendConfig, report: BackendReport, timeout: float, with_models: bool) -> None:
    """Health and models per endpoint, and the balancer's survey of them all, at once."""
    adapter = make_backend(backend)
    served = _served(backend)
    pool = pool_for(config, backend, [served[e.url][0] for e in report.endpoints], adapter, always_read=True)
    try:
        _, views = await asyncio.gather(
            asyncio.gather(*(_probe_endpoint(adapter, e, timeout, with_models) for e in report.endpoints)),
            pool.survey(timeout),
        )
    finally:
        await adapter.aclose()
    for endpoint_report, view in zip(report.endpoints, views):
        endpoint_report.balance = _balance(view)
        offered = view.reading.server.models if view.reading and view.reading.server else None
        if offered is not None:
            endpoint_report.missing = sorted(m for m in set(backend.models.values()) if m not in offered)


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


def _balance(view: EndpointView) -> BalanceReport:
    server = view.reading.server if view.reading else None
    return BalanceReport(
        capacity=view.capacity,
        capacity_source=view.capacity_source,
        busy=server.busy if server else None,
        waiting=server.waiting if server else None,
        kv_cache_usage=server.kv_cache_usage if server else None,
        gpu=view.reading.gpu.describe() if view.reading and view.reading.gpu else None,
        eligible=view.verdict.kept,
        reason=view.verdict.reason,
    )
