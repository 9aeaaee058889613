"""How one backend's endpoint pool balances: `llm.balancer`, overridden key by key by the backend's own `balancer`.

The schema has already checked types and ranges, so this only merges and fills defaults. The
defaults queue generously (256 calls, five minutes) because a queued call costs nothing but
waiting, while a rejected one fails a workflow step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

POLICIES = ("least_loaded", "round_robin", "random")


@dataclass(frozen=True)
class BalancerSettings:
    """The GPU limits are off (None) unless set: a machine without them has nothing to compare against."""

    policy: str = "least_loaded"
    min_free_gpu_memory_mb: int | None = None
    max_gpu_utilization: float | None = None
    queue_limit: int = 256
    queue_timeout: float = 300.0
    metrics_max_age: float = 10.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown balancer policy {self.policy!r}; use one of {', '.join(POLICIES)}")


def balancer_settings(common: Mapping[str, object], backend: Mapping[str, object] | None = None) -> BalancerSettings:
    """`llm.balancer` with the backend block's `balancer` keys on top; keys neither sets keep their defaults."""
    merged = {**common, **(backend or {})}
    known = {f.name for f in fields(BalancerSettings)}
    return BalancerSettings(**{key: value for key, value in merged.items() if key in known})  # type: ignore[arg-type]


def setting_path(key: str, backend: str) -> str:
    """Where a user raises a limit: named in queue errors, so the fix is one edit away."""
    return f"llm.balancer.{key} (or llm.{backend}.balancer.{key} for this backend only)" if backend else f"llm.balancer.{key}"
