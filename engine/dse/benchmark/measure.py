"""Run the fixed prompt set against each (backend, model) and take the medians.

Each prompt is sent `runs` times, streamed, at temperature 0 with at most MAX_TOKENS tokens,
through the engine's Router with no fallback (a figure must be the named backend's). Every
call's message starts with its own number: servers keep recent prompts (llama.cpp in each
slot and in host memory, vendors in their prompt caches), and a prompt sent again would
skip the prompt work and inflate the prompt speed. One untimed call first wakes the server
(a fresh llama.cpp server allocates its buffers on its first request).
"""

from __future__ import annotations

import difflib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..backends import Message, ServerReporter
from ..config.model import Config
from ..engine import Engine
from ..errors import DseError, InputError
from ..routing import Intent, Resolver, Router, Target
from ..spend import accounted
from .results import Measurement

PROMPTS = (
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "Count from one to ten in words.",
)
MAX_TOKENS = 32

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchTarget:
    """A (backend, model) to measure."""

    backend: str
    model: str


@dataclass(frozen=True)
class _Sample:
    """One timed call: seconds to the first token and to the end, and the tokens each way."""

    endpoint: str
    ttft: float
    total: float
    prompt_tokens: int | None
    completion_tokens: int

    @property
    def generation_tps(self) -> float | None:
        """The first token belongs to the wait, so the rate counts the tokens after it over the time after it."""
        after = self.total - self.ttft
        return (self.completion_tokens - 1) / after if self.completion_tokens > 1 and after > 0 else None

    @property
    def prompt_tps(self) -> float | None:
        return self.prompt_tokens / self.ttft if self.prompt_tokens and self.ttft > 0 else None


def bench_targets(config: Config, named: Sequence[str]) -> list[BenchTarget]:
    """What `dse bench NAMES` measures: each `BACKEND[:MODEL]` named, else every usable backend's models.

    A named backend's models are its configured ones (or its managed model); a model may be
    any the server hosts. Without names, unavailable and embeddings-only backends are left out.
    """
    candidates = Resolver(config).candidates()
    if not named:
        return [
            BenchTarget(c.backend, c.model)
            for c in candidates
            if c.available and not _embeddings_only(config, c.backend)
        ]
    targets: list[BenchTarget] = []
    for item in named:
        backend, _, model = item.partition(":")
        found = config.backends.get(backend)
        if found is None:
            close = difflib.get_close_matches(backend, list(config.backends), n=1, cutoff=0.5)
            raise InputError(
                f"dse bench {item}: no backend {backend!r} in {config.path}",
                hint=f"did you mean {close[0]!r}?" if close else f"configured: {', '.join(sorted(config.backends))}",
            )
        if found.unavailable:
            raise InputError(f"dse bench {item}: backend {backend!r} is unavailable: {found.unavailable}", location=found.location)
        models = [model] if model else [c.model for c in candidates if c.backend == backend]
        targets += [BenchTarget(backend, name) for name in models]
    return list(dict.fromkeys(targets))


async def run_bench(config: Config, targets: Sequence[BenchTarget], *, runs: int, state_dir: Path, progress: Progress) -> list[Measurement]:
    """Measure every target, each backend's managed servers started first; one that fails is a Measurement with its error.

    Every call is a row of the usage ledger (run `bench-TIME`, step `bench`) and within the
    config's budgets and rate limits: a benchmark of a paid API costs what any call costs.
    """
    async with Engine(config, state_dir=state_dir) as engine:
        with accounted(engine.router, config, state_dir, "bench"):
            return await _measure_all(engine, targets, runs, progress)


async def _measure_all(engine: Engine, targets: Sequence[BenchTarget], runs: int, progress: Progress) -> list[Measurement]:
    measured: list[Measurement] = []
    for backend in dict.fromkeys(t.backend for t in targets):
        models = [t.model for t in targets if t.backend == backend]
        try:
            await _start(engine, backend, progress)
        except DseError as exc:
            progress(f"{backend}: failed to start: {exc}")
            measured += [_failed(backend, model, runs, exc) for model in models]
            continue
        for model in models:
            measured.append(await _measure(engine, BenchTarget(backend, model), runs, progress))
    return measured


async def _start(engine: Engine, backend: str, progress: Progress) -> None:
    managed = engine.config.backends[backend].managed
    if managed is not None:
        progress(f"{backend}: starting {managed.replicas} managed llama.cpp server(s) with {managed.model}")
    await engine.start([backend])


async def _measure(engine: Engine, target: BenchTarget, runs: int, progress: Progress) -> Measurement:
    name = f"{target.backend}/{target.model}"
    routed = _target(engine, target)
    started = time.time()
    try:
        await _sample(engine.router, routed, f"0. {PROMPTS[0]}")
        samples = []
        for run in range(1, runs + 1):
            taken = [await _sample(engine.router, routed, f"{run}.{i} {prompt}") for i, prompt in enumerate(PROMPTS, 1)]
            samples += taken
            progress(f"{name}: run {run}/{runs}: {_summary(taken)}")
    except DseError as exc:
        progress(f"{name}: failed: {exc}")
        return _failed(target.backend, target.model, runs, exc)
    endpoints = list(dict.fromkeys(s.endpoint for s in samples))
    return Measurement(
        backend=target.backend,
        model=target.model,
        measured_at=started,
        runs=runs,
        endpoint=", ".join(endpoints),
        calls=len(samples),
        ttft=_median([s.ttft for s in samples]),
        generation_tps=_median([s.generation_tps for s in samples]),
        prompt_tps=_median([s.prompt_tps for s in samples]),
        prompt_tokens=_whole(_median([s.prompt_tokens for s in samples])),
        completion_tokens=_whole(_median([s.completion_tokens for s in samples])),
        vram_bytes=await _vram(engine, target, routed.wire_model, endpoints),
    )


def _target(engine: Engine, target: BenchTarget) -> Target:
    """The resolver's own target for the backend and model, at temperature 0 and MAX_TOKENS, with no fallback."""
    intent = Intent("bench", backend=target.backend, model=target.model, temperature=0.0, max_tokens=MAX_TOKENS)
    return replace(engine.resolver.resolve(intent).target, fallbacks=())


async def _sample(router: Router, target: Target, prompt: str) -> _Sample:
    first: float | None = None
    pieces = 0
    endpoint, total, prompt_tokens, completion_tokens = "", 0.0, None, None
    async for chunk in router.stream(target, [Message("user", prompt)]):
        if chunk.text:
            pieces += 1
            first = chunk.elapsed if first is None else first
        endpoint = chunk.endpoint or endpoint
        total = chunk.elapsed
        if chunk.usage is not None:
            prompt_tokens, completion_tokens = chunk.usage.prompt_tokens or None, chunk.usage.completion_tokens
    # A server that reports no usage sends about one token per streamed piece.
    return _Sample(endpoint, first if first is not None else total, total, prompt_tokens, completion_tokens or pieces)


async def _vram(engine: Engine, target: BenchTarget, wire_model: str, endpoints: list[str]) -> int | None:
    """What the server says the model holds in GPU memory (Ollama's `/api/ps`), summed over the endpoints that answered."""
    adapter = engine.router.backend(target.backend)
    if not isinstance(adapter, ServerReporter):
        return None
    held = []
    for endpoint in endpoints:
        loaded = (await adapter.report(endpoint)).loaded
        model = loaded.get(wire_model) or loaded.get(target.model)
        held.append(model.size_vram if model is not None else None)
    known = [size for size in held if size is not None]
    return sum(known) if known else None


def _failed(backend: str, model: str, runs: int, exc: DseError) -> Measurement:
    return Measurement(backend=backend, model=model, measured_at=time.time(), runs=runs, error=str(exc))


def _embeddings_only(config: Config, backend: str) -> bool:
    managed = config.backends[backend].managed
    return managed is not None and managed.embeddings


def _median(values: Sequence[float | int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _whole(value: float | None) -> int | None:
    return round(value) if value is not None else None


def _summary(samples: list[_Sample]) -> str:
    rate = _median([s.generation_tps for s in samples])
    ttft = _median([s.ttft for s in samples])
    return f"first token {ttft:.3f}s, " + (f"{rate:.1f} tok/s" if rate is not None else "too few tokens for a rate")
