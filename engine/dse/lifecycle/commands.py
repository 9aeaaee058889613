"""`dse models pull|load|unload|ps`: put models in memory and take them out, on Ollama and on managed llama.cpp.

Ollama does the work itself (`/api/pull`, `keep_alive` on `/api/generate`, `/api/ps`); for a
managed llama.cpp backend, loading a model means starting its servers, detached, and unloading
means stopping them. Either way a load is checked against GPU headroom first (`fit`), and
refused with the figures, before anything is loaded anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..backends.ollama import OllamaBackend
from ..balance.gpu import GpuReader, nvml_reader
from ..config.model import BackendConfig, Config, Endpoint, ManagedSettings
from ..errors import DseError
from ..local.assets import find_model
from . import managed
from .fit import DoesNotFit, Fit, Headroom, headroom, needed, size_text
from .subject import Subject, lifecycle_backends, subject

KEEP_ALIVE = "30m"

ProgressSink = Callable[[str, dict[str, Any]], None]
"""Called with the endpoint and each `/api/pull` progress line."""


@dataclass(frozen=True)
class Outcome:
    """What a load or unload did on one server; `pid` for a managed one."""

    endpoint: str
    action: str
    pid: int | None = None
    fit: Fit | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "action": self.action, "pid": self.pid, "fit": self.fit.as_dict() if self.fit else None}


@dataclass(frozen=True)
class Change:
    """`dse models load` or `unload`: which model on which backend, and each server's outcome."""

    backend: str
    model: str
    kind: str
    outcomes: tuple[Outcome, ...]
    keep_alive: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "kind": self.kind,
            "keep_alive": self.keep_alive,
            "servers": [o.as_dict() for o in self.outcomes],
        }

    def text(self) -> str:
        if not self.outcomes:
            return f"{self.model} was not loaded on {self.backend}: nothing to unload"
        lines = []
        for o in self.outcomes:
            line = f"{o.action} {self.model} on {self.backend} @ {o.endpoint}"
            line += f" (pid {o.pid})" if o.pid is not None else ""
            line += f", kept for {self.keep_alive}" if self.keep_alive and o.action == "loaded" else ""
            lines.append(line)
            if o.fit is not None and o.fit.verdict != "loaded":
                lines.append(f"  {o.fit.describe()}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Pulled:
    backend: str
    model: str
    endpoints: tuple[str, ...]
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "endpoints": list(self.endpoints), "size": self.size, "status": "success"}

    def text(self) -> str:
        return f"pulled {self.model} ({size_text(self.size)}) on {self.backend} @ {', '.join(self.endpoints)}"


@dataclass(frozen=True)
class Running:
    """One model in memory somewhere: an Ollama server's (`/api/ps`) or a managed llama-server process."""

    backend: str
    model: str
    endpoint: str
    state: str
    size: int | None = None
    size_vram: int | None = None
    memory: int | None = None
    pid: int | None = None
    expires_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Listing:
    """`dse models ps`; `problems` are servers that could not be asked."""

    running: tuple[Running, ...]
    problems: tuple[dict[str, str], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"loaded": [r.as_dict() for r in self.running], "problems": list(self.problems)}

    def text(self) -> str:
        from ..console import table

        columns = ["backend", "model", "endpoint", "state", "size", "vram", "memory", "pid", "expires"]
        rows = [
            {
                **r.as_dict(),
                "size": _size_or_none(r.size),
                "vram": _size_or_none(r.size_vram),
                "memory": _size_or_none(r.memory),
                "expires": r.expires_at,
            }
            for r in self.running
        ]
        lines = [table(rows, columns, right=("size", "vram", "memory", "pid"))] if rows else ["no models loaded"]
        lines += [f"{p['backend']} @ {p['endpoint']}: {p['error']}" for p in self.problems]
        return "\n".join(lines)


async def pull(config: Config, name: str, *, backend: str | None = None, on_progress: ProgressSink | None = None) -> Pulled:
    """Pull onto every server of the model's Ollama backend, one after another so that progress reads in order."""
    chosen = subject(config, name, backend, "pull")
    adapter = OllamaBackend(chosen.backend)
    layers: dict[str, int] = {}
    endpoints = [e.url for e in chosen.endpoints()]
    try:
        for url in endpoints:
            async for event in adapter.pull(chosen.model, url):
                if on_progress is not None:
                    on_progress(url, event)
                if isinstance(event.get("total"), int) and event.get("digest"):
                    layers[str(event["digest"])] = event["total"]
    finally:
        await adapter.aclose()
    return Pulled(chosen.backend.name, chosen.model, tuple(endpoints), sum(layers.values()))


async def load(
    config: Config,
    name: str,
    *,
    state_dir: Path,
    backend: str | None = None,
    keep_alive: str = KEEP_ALIVE,
    reader: GpuReader | None = None,
    force: bool = False,
) -> Change:
    """Load after the GPU check; `force` loads what the check refuses. `reader` defaults to NVML."""
    chosen = subject(config, name, backend, "load")
    gpus = reader or nvml_reader()
    if chosen.backend.managed is not None:
        return await _load_managed(config, chosen, chosen.backend.managed, state_dir, gpus, force)
    return await _load_ollama(config, chosen, keep_alive, gpus, force)


async def unload(config: Config, name: str, *, state_dir: Path, backend: str | None = None) -> Change:
    chosen = subject(config, name, backend, "unload")
    if chosen.backend.managed is not None:
        return await _unload_managed(chosen, state_dir)
    adapter = OllamaBackend(chosen.backend)
    endpoints = [e.url for e in chosen.endpoints()]
    try:
        await asyncio.gather(*(adapter.keep_alive(chosen.model, url, 0) for url in endpoints))
    finally:
        await adapter.aclose()
    return Change(chosen.backend.name, chosen.model, "ollama", tuple(Outcome(url, "unloaded") for url in endpoints))


async def ps(config: Config, *, state_dir: Path, backend: str | None = None, timeout: float = 3.0) -> Listing:
    """What every Ollama server holds and every recorded managed server, all asked at once."""
    chosen = lifecycle_backends(config, backend)
    asked = [(b, url) for b in chosen if b.managed is None for url in _all_endpoints(b)]
    answers = await asyncio.gather(*(_ollama_running(b, url, timeout) for b, url in asked))
    problems = tuple({"backend": b.name, "endpoint": url, "error": a} for (b, url), a in zip(asked, answers) if isinstance(a, str))
    found = [row for a in answers if not isinstance(a, str) for row in a]
    names = {b.name for b in chosen}
    recorded = [r for r in managed.records(state_dir) if backend is None or r.backend in names]
    found += await asyncio.gather(*(_managed_running(r, s, timeout) for r in recorded for s in r.servers))
    return Listing(tuple(found), problems)


async def _load_ollama(config: Config, chosen: Subject, keep_alive: str, gpus: GpuReader, force: bool) -> Change:
    adapter = OllamaBackend(chosen.backend)
    endpoints = chosen.endpoints()
    try:
        fits = await asyncio.gather(*(_ollama_fit(adapter, chosen.model, e, gpus) for e in endpoints))
        await _refuse_if_too_big(config, chosen, fits, force)
        await asyncio.gather(*(adapter.keep_alive(chosen.model, e.url, _duration(keep_alive)) for e in endpoints))
    finally:
        await adapter.aclose()
    outcomes = tuple(Outcome(e.url, "loaded", fit=fit) for e, fit in zip(endpoints, fits))
    return Change(chosen.backend.name, chosen.model, "ollama", outcomes, keep_alive)


async def _ollama_fit(adapter: OllamaBackend, model: str, endpoint: Endpoint, gpus: GpuReader) -> Fit:
    """The server's own figures (`/api/tags` size, `/api/ps` residents) with NVML's for its machine."""
    report = await adapter.report(endpoint.url)
    live = report.loaded.get(model)
    if live is not None:
        return Fit(model, live.size, Headroom(), loaded=True)
    residents = list({m.name: m for m in report.loaded.values()}.values())
    return Fit(model, report.model_sizes.get(model), headroom(endpoint, gpus, residents))


async def _load_managed(config: Config, chosen: Subject, settings: ManagedSettings, state_dir: Path, gpus: GpuReader, force: bool) -> Change:
    """Start the backend's servers unless the same ones are loaded and healthy; stale or dead ones are replaced."""
    name = chosen.backend.name
    record = managed.read_record(state_dir, name)
    if record is not None and record.matches(settings) and await managed.all_healthy(record):
        return Change(name, chosen.model, "managed", tuple(Outcome(s.url, "already loaded", s.pid) for s in record.servers))
    if record is not None:
        await managed.stop(state_dir, record)
    fit = Fit(chosen.model, _file_size(settings), headroom(Endpoint(f"http://{settings.host}"), gpus))
    await _refuse_if_too_big(config, chosen, [fit], force)
    started = await managed.start(name, settings, state_dir)
    return Change(name, chosen.model, "managed", tuple(Outcome(s.url, "loaded", s.pid, fit) for s in started.servers))


async def _unload_managed(chosen: Subject, state_dir: Path) -> Change:
    record = managed.read_record(state_dir, chosen.backend.name)
    if record is None:
        return Change(chosen.backend.name, chosen.model, "managed", ())
    stopped = {s.pid for s in await managed.stop(state_dir, record)}
    outcomes = tuple(Outcome(s.url, "unloaded" if s.pid in stopped else "had exited", s.pid) for s in record.servers)
    return Change(chosen.backend.name, chosen.model, "managed", outcomes)


async def _refuse_if_too_big(config: Config, chosen: Subject, fits: Sequence[Fit], force: bool) -> None:
    tight = next((f for f in fits if f.verdict == "does not fit"), None)
    if tight is None or force:
        return
    free = tight.headroom.free or 0
    raise DoesNotFit(replace(tight, smaller=await _smaller(config, chosen, free)))


async def _smaller(config: Config, chosen: Subject, free: int) -> tuple[str, ...]:
    """Models configured for the same roles whose size is known and fits in `free`, the largest first."""
    candidates = {
        (b.name, model): b
        for role in chosen.roles
        for b in lifecycle_backends(config)
        if (model := b.models.get(role)) and (b.name, model) != (chosen.backend.name, chosen.model)
    }
    sizes = await asyncio.gather(*(_size_of(b, model) for (_, model), b in candidates.items()))
    fitting = sorted(
        ((size, f"{name}:{model}") for (name, model), size in zip(candidates, sizes) if size is not None and needed(size) <= free),
        reverse=True,
    )
    return tuple(f"{label} ({size_text(size)})" for size, label in fitting)


async def _size_of(backend: BackendConfig, model: str) -> int | None:
    if backend.managed is not None:
        return _file_size(backend.managed) if model == backend.managed.model else None
    endpoints = backend.endpoints_for(None)
    if not endpoints:
        return None
    return (await OllamaBackend(backend).report(endpoints[0].url)).model_sizes.get(model)


def _file_size(settings: ManagedSettings) -> int | None:
    """The GGUF file's size once per replica: each replica holds its own copy of the weights."""
    try:
        return find_model(settings.model).stat().st_size * settings.replicas
    except (DseError, OSError):
        return None


def _all_endpoints(backend: BackendConfig) -> list[str]:
    lists = [*backend.endpoints.values(), backend.endpoints_for(None)]
    return list(dict.fromkeys(e.url for endpoints in lists for e in endpoints))


async def _ollama_running(backend: BackendConfig, url: str, timeout: float) -> list[Running] | str:
    """The server's residents, or why it could not say."""
    adapter = OllamaBackend(backend)
    try:
        models = await asyncio.wait_for(adapter.running(url), timeout)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except DseError as exc:
        return exc.message
    finally:
        await adapter.aclose()
    return [
        Running(
            backend.name,
            str(m.get("name") or m.get("model")),
            url,
            "loaded",
            size=_int(m.get("size")),
            size_vram=_int(m.get("size_vram")),
            expires_at=str(m["expires_at"]) if m.get("expires_at") else None,
        )
        for m in models
    ]


async def _managed_running(record: managed.Record, server: managed.RecordedServer, timeout: float) -> Running:
    if not server.running():
        state = "exited"
    else:
        state = "healthy" if await managed.healthy(server, timeout) else "not answering /health"
    try:
        size: int | None = find_model(record.model).stat().st_size
    except (DseError, OSError):
        size = None
    return Running(record.backend, record.model, server.url, state, size=size, memory=server.resident(), pid=server.pid)


def _duration(text: str) -> str | int:
    """Ollama takes a bare number of seconds only as a JSON number (`-1`: until unloaded); "300" as a string it refuses."""
    try:
        return int(text)
    except ValueError:
        return text


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _size_or_none(size: int | None) -> str | None:
    return None if size is None else size_text(size)
