"""Which endpoints may take a call: ready, holding the model, with GPU headroom.

The checks run in order, and a check is applied only if it leaves someone: a check that every
remaining endpoint fails says nothing to choose by, so those endpoints stay in, with the reason
noted. That single rule gives both "skip a GPU without headroom while another has some" and
"when everything is filtered out, use the best healthy endpoint rather than fail". Whenever at
least one endpoint passes every check, exactly those endpoints are kept.

Breaker health is not here: the pool applies it first, and it is the one filter with no
fallback (every endpoint cooling down is an error). Unknown figures (no reading, a stale one,
a server that does not say) pass every check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config.model import Endpoint
from .monitor import Reading
from ..backends.types import ServerReport
from .settings import BalancerSettings

_MIB = 1024 * 1024
# vLLM preempts running requests once its KV cache is full; near that, send work elsewhere.
_KV_CACHE_FULL = 0.95

ELIGIBLE = "eligible"


@dataclass(frozen=True)
class Verdict:
    """Whether an endpoint stays a candidate, and the reason in words (shown by `dse status`)."""

    kept: bool
    reason: str = ELIGIBLE


_ELIGIBLE = Verdict(True)

Check = Callable[[Endpoint, Reading | None, BalancerSettings, str | None], str | None]


def not_ready(endpoint: Endpoint, reading: Reading | None, settings: BalancerSettings, model: str | None) -> str | None:
    server = reading.server if reading else None
    if server is None or server.ready:
        return None
    return ("unreachable: " if not server.reachable else "not ready: ") + (server.detail or "no reason given")


def missing_model(endpoint: Endpoint, reading: Reading | None, settings: BalancerSettings, model: str | None) -> str | None:
    server = reading.server if reading else None
    if server is None or server.models is None or model is None or has_model(server, model):
        return None
    return f"does not have the model {model!r}"


def no_headroom(endpoint: Endpoint, reading: Reading | None, settings: BalancerSettings, model: str | None) -> str | None:
    """NVML's figures first (free memory, utilization), then what the server itself says about its memory."""
    if reading is None:
        return None
    gpu, server = reading.gpu, reading.server
    if gpu is not None and gpu.unknown is None:
        need, what = _memory_need(server, settings, model)
        if need and gpu.free_mb is not None and gpu.free_mb < need:
            return f"GPU {gpu.device} has {gpu.free_mb:.0f} MiB free, less than {what}"
        limit = settings.max_gpu_utilization
        if limit is not None and gpu.utilization is not None and gpu.utilization > limit:
            return f"GPU {gpu.device} is {gpu.utilization:.0f}% busy, above max_gpu_utilization {limit:g}%"
    if server is not None:
        for loaded in server.loaded.values():
            if loaded.offloaded and loaded.size and loaded.size_vram:
                share = loaded.size_vram / loaded.size
                return f"{loaded.name} is only {share:.0%} in GPU memory (the rest runs on the CPU)"
        if server.kv_cache_usage is not None and server.kv_cache_usage >= _KV_CACHE_FULL:
            return f"its KV cache is {server.kv_cache_usage:.0%} full"
    return None


# Each check passes an endpoint without a reading (None): `screen` skips them all when nothing is known.
CHECKS: tuple[Check, ...] = (not_ready, missing_model, no_headroom)


def screen(
    entries: Sequence[tuple[Endpoint, Reading | None]], settings: BalancerSettings, model: str | None
) -> list[Verdict]:
    """One verdict per entry, in order; see the module docstring for the rule."""
    if all(reading is None for _, reading in entries):  # nothing known: every check passes (the pool's usual case)
        return [_ELIGIBLE] * len(entries)
    kept = [True] * len(entries)
    notes: list[list[str]] = [[] for _ in entries]
    skipped: list[str | None] = [None] * len(entries)
    for check in CHECKS:
        reasons = [check(e, r, settings, model) if kept[i] else None for i, (e, r) in enumerate(entries)]
        failing = [i for i, reason in enumerate(reasons) if reason]
        if not failing:
            continue
        if len(failing) == sum(kept):
            for i in failing:
                notes[i].append(f"used although {reasons[i]} (no endpoint passes that check)")
            continue
        for i in failing:
            kept[i], skipped[i] = False, f"skipped: {reasons[i]}"
    return [
        Verdict(False, skipped[i] or "") if not kept[i] else Verdict(True, "; ".join(notes[i]) or ELIGIBLE)
        for i in range(len(entries))
    ]


def has_model(server: ServerReport, model: str) -> bool:
    assert server.models is not None
    return model in server.models


def _memory_need(server: ServerReport | None, settings: BalancerSettings, model: str | None) -> tuple[float, str]:
    """MiB the GPU must have free: the configured floor, or the model's size when it must be loaded first."""
    floor = float(settings.min_free_gpu_memory_mb or 0)
    size = _unloaded_size(server, model)
    if size is not None and size / _MIB > floor:
        return size / _MIB, f"the {size / _MIB:.0f} MiB that loading {model!r} needs"
    return floor, f"min_free_gpu_memory_mb ({floor:.0f})"


def _unloaded_size(server: ServerReport | None, model: str | None) -> int | None:
    if server is None or model is None:
        return None
    if model in server.loaded:
        return None
    return server.model_sizes.get(model)
