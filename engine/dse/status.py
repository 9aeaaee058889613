"""What `dse status` and `dse models` report: every backend, every endpoint, and why not.

A new user's first question is "what is wrong with my setup?", so every probe runs
concurrently with a short timeout, nothing raises, and each problem comes with its reason
(missing secret, connection refused, auth, model not pulled). Managed llama.cpp backends are
not started here; their binary and model files are checked instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .backends import Backend, Health, ModelEntry, make_backend
from .config.model import BackendConfig, Config
from .errors import DseError
from .local.assets import find_llama_server, find_model


@dataclass
class EndpointReport:
    url: str
    roles: list[str]
    health: Health | None = None
    models: list[ModelEntry] = field(default_factory=list)
    models_error: str | None = None


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
        _probe(backend, report, timeout, with_models)
        for backend, report in zip(config.backends.values(), reports)
        if not report.unavailable and backend.managed is None
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
    roles: dict[str, list[str]] = {}
    for role in [None, *backend.models, *(r for r in backend.endpoints if r)]:
        for endpoint in backend.endpoints_for(role):
            names = roles.setdefault(endpoint.url, [])
            if role and role not in names:
                names.append(role)
    report.endpoints = [EndpointReport(url, names) for url, names in roles.items()]
    return report


def _managed(backend: BackendConfig) -> dict[str, str]:
    assert backend.managed is not None
    settings = backend.managed
    info = {"replicas": str(settings.replicas), "model": settings.model, "state": "started on demand by `dse run`"}
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
