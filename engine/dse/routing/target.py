"""The resolver's answer: where a step's call goes, and the chain of rules that decided it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.model import CacheSettings


@dataclass(frozen=True)
class Target:
    """A concrete backend and model, the parameters to send, and why.

    `reasons` reads top to bottom as the story of the decision; `rule` is its one-line summary
    for tables such as `dse plan`.
    """

    backend: str
    backend_type: str
    model: str
    role: str | None
    rule: str
    reasons: tuple[str, ...]
    endpoints: tuple[str, ...] = ()
    deployment: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    fallbacks: tuple[str, ...] = ()
    cache: CacheSettings = field(default_factory=CacheSettings)

    @property
    def wire_model(self) -> str:
        """The name sent on the wire: Azure addresses deployments, everyone else models."""
        return self.deployment or self.model
