"""What a plan would walk, and what stands in its way now: `dse plan`'s fallback chains and availability.

Each model step's chain is what the router would try (`Router._route`): its target, then the
same role on each of `fallback_backends`, each backend and model once. A backend the config
already rules out (a missing key) is flagged with no network at all; `dse plan --check` also
probes the endpoints, so a down server is flagged before anything runs, not as "attempts 4".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .backends import Health
from .config.model import Config
from .errors import DseError
from .routing import Resolver, Target
from .workflow import Plan


@dataclass(frozen=True)
class Hop:
    """One backend a step's call would try, in order.

    `problem` says why it cannot take the call now (a missing key; once probed, no endpoint
    ready), None where nothing known stops it; `down` names the endpoints a probe found not
    ready, with why, even where another endpoint of the backend answers.
    """

    backend: str
    model: str | None = None
    role: str | None = None
    endpoints: tuple[str, ...] = ()
    problem: str | None = None
    down: tuple[tuple[str, str], ...] = ()

    @property
    def available(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "role": self.role,
            "endpoints": list(self.endpoints),
            "available": self.available,
            "reason": self.problem,
            "down": [{"endpoint": url, "reason": why} for url, why in self.down],
        }


@dataclass(frozen=True)
class Preflight:
    """Every model step's chain, in plan order; `checked` says whether endpoints were probed."""

    chains: dict[str, tuple[Hop, ...]]
    default: Hop | None = None
    checked: bool = False

    def stranded(self) -> list[str]:
        """The steps no backend of whose chain can take the call now: as things stand, they would fail."""
        return [step_id for step_id, hops in self.chains.items() if not any(hop.available for hop in hops)]

    def problems(self) -> dict[str, list[str]]:
        """What stands in the way, per backend in the order the chains meet them (the default backend's too)."""
        found: dict[str, list[str]] = {}
        hops = [hop for chain in self.chains.values() for hop in chain]
        for hop in [*hops, *([self.default] if self.default else [])]:
            notes = found.setdefault(hop.backend, [])
            down = "; ".join(f"{url} is {why}" for url, why in hop.down)
            note = f"{hop.problem}: {down}" if hop.problem and down else hop.problem or down
            if note and note not in notes:
                notes.append(note)
        return {backend: notes for backend, notes in found.items() if notes}


def preflight(plan: Plan, config: Config) -> Preflight:
    """The chains as the config alone says: no network."""
    resolver = Resolver(config)
    chains = {
        step_id: chain(resolver, planned.resolution.target)
        for step_id in plan.order
        if (planned := plan.steps[step_id]).resolution is not None
    }
    default = config.find_backend(config.default_backend) if config.default_backend else None
    return Preflight(chains, Hop(default.name, problem=default.unavailable) if default else None)


async def checked(found: Preflight, config: Config, *, timeout: float) -> Preflight:
    """`found` with every endpoint its chains name probed at once (each under `timeout`), down ones flagged."""
    from .status import endpoint_health

    health = await endpoint_health(config, (hop.backend for hops in found.chains.values() for hop in hops), timeout=timeout)
    chains = {step_id: tuple(_judged(hop, health) for hop in hops) for step_id, hops in found.chains.items()}
    return replace(found, chains=chains, checked=True)


def chain(resolver: Resolver, target: Target) -> tuple[Hop, ...]:
    """The target, then the same role on each fallback backend (`Resolver.retarget`), each backend and model once."""
    hops = [_hop(resolver.config, target)]
    tried = {(target.backend, target.model)}
    for name in target.fallbacks:
        try:
            fallback = resolver.retarget(target, name)
        except DseError as exc:  # the router records this and goes on to the next fallback
            hops.append(Hop(name, problem=str(exc)))
            continue
        if (fallback.backend, fallback.model) not in tried:
            tried.add((fallback.backend, fallback.model))
            hops.append(_hop(resolver.config, fallback))
    return tuple(hops)


def _hop(config: Config, target: Target) -> Hop:
    backend = config.find_backend(target.backend)
    problem = backend.unavailable if backend is not None else f"backend {target.backend!r} is not configured"
    return Hop(target.backend, target.model, target.role, target.endpoints, problem)


def _judged(hop: Hop, health: dict[str, Health]) -> Hop:
    """A hop whose endpoints were probed: each not ready is `down`; none ready is its `problem`."""
    probed = {url: health[url] for url in hop.endpoints if url in health}
    down = tuple((url, h.state + (f" ({h.detail})" if h.detail else "")) for url, h in probed.items() if not h.ready)
    if hop.problem or not probed or len(down) < len(probed):
        return replace(hop, down=down)
    return replace(hop, down=down, problem="no endpoint is ready")
