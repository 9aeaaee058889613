"""Which backend and model a step gets, by the precedence in DESIGN.md section 3.

Highest first: a directive in the step's text, the step's own settings, the tool's settings,
the step's or tool's `task:` through `task_routing`, then the global default backend and the
backend's model for the role. Each rule that fires appends a sentence to `reasons`, so
`dse plan` can show a user exactly why a step goes where it goes, and a user can predict it
before running anything.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..backends.registry import EMBEDDINGS, backend_type, type_names, vendor_of
from ..balance.directory import EndpointDirectory
from ..config.dise import TIER_WEIGHTS, specialization_of
from ..config.model import BackendConfig, CacheSettings, Config, TaskRoute, ToolConfig, unrouted_task
from ..errors import InputError, Location
from . import catalog, directives, selector
from .target import Target

_DEFAULT_ROLE = "generator"


@dataclass(frozen=True)
class Intent:
    """What a step asks for, gathered from the step and its tool, before any rule is applied."""

    step_id: str
    tool: ToolConfig | None = None
    backend: str | None = None
    model: str | None = None
    model_key: str | None = None
    text: str = ""
    select: Mapping[str, Any] | None = None
    task: str | None = None
    location: Location | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    cache: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolution:
    target: Target
    text: str
    directive: directives.Directive | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


class Resolver:
    """Applies the resolution rules of one config; pure and cheap, so `dse plan` and `dse run` agree.

    `measured` holds the speeds `dse bench` saved, by (backend, model), read once by whoever
    builds the resolver (`benchmark.measured_speeds`): the selector scores speed with them.
    """

    def __init__(
        self,
        config: Config,
        endpoints: EndpointDirectory | None = None,
        measured: Mapping[tuple[str, str], catalog.MeasuredSpeed] | None = None,
    ) -> None:
        self.config = config
        self.endpoints = endpoints or EndpointDirectory()
        self.measured = measured or {}

    def resolve(self, intent: Intent) -> Resolution:
        reasons: list[str] = []
        warnings: list[str] = []
        text = intent.text
        found = directives.find_directive(text) if text else None
        if found is not None:
            text = directives.strip_directive(text, found)
            target = self._from_directive(intent, found, reasons, warnings)
            if target is not None:
                return Resolution(target, text, found, tuple(warnings))
        return Resolution(self._from_settings(intent, reasons, warnings), text, found, tuple(warnings))

    def _from_settings(self, intent: Intent, reasons: list[str], warnings: list[str]) -> Target:
        tool = intent.tool
        # The step's model settings replace the tool's as a whole; within one level a direct
        # model name wins over a model key.
        if intent.model or intent.model_key:
            model, model_key, model_source = intent.model, intent.model_key, "step"
        elif tool and (tool.model or tool.model_key):
            model, model_key, model_source = tool.model, tool.model_key, f"tool {tool.name}"
        else:
            model, model_key, model_source = None, None, ""

        if intent.backend:
            backend = self._backend(intent.backend, intent)
            rule = "step backend"
            reasons.append(f"step {intent.step_id!r} sets backend: {intent.backend}")
        elif tool and tool.backend:
            backend = self._backend(tool.backend, intent)
            rule = "tool backend"
            reasons.append(f"tool {tool.name!r} sets backend: {tool.backend}")
        else:
            backend, rule = None, ""

        if intent.select is not None or model == "auto":
            return self._select(intent, reasons, backend)

        if backend is None and not model:
            routed = self._task_route(intent, model_key, model_source, reasons, warnings)
            if routed is not None:
                return routed

        if model and ":" in model and model.split(":", 1)[0] in self._backend_names():
            prefix, bare = model.split(":", 1)
            backend = self._backend(prefix, intent)
            reasons.append(f"model {model!r} is provider-prefixed: backend {prefix}, model {bare}")
            return self._target(backend, bare, model_key, "provider prefix", reasons, intent)

        if backend is None and model:
            owner = self._owner(model, intent)
            if owner is not None:
                backend, why = owner
                reasons.append(why)
                rule = "model owner"
            else:
                self._require_known(model, intent)
        if backend is None:
            backend = self._default_backend(intent, reasons)
            rule = "global default" if self.config.defaults.default_backend else "llm.backend"

        if model:
            reasons.append(f"{model_source} sets model: {model}")
            return self._target(backend, model, model_key, f"{rule} + {model_source} model", reasons, intent)
        role = model_key or self._default_role(backend)
        chosen, why = self._model_for_role(backend, role, intent, warnings)
        reasons.append(why)
        return self._target(backend, chosen, role, f"{rule} + {model_source} model_key" if model_key else rule, reasons, intent)

    def _task_route(
        self, intent: Intent, model_key: str | None, model_source: str, reasons: list[str], warnings: list[str]
    ) -> Target | None:
        """A task that `task_routing` lists goes to its first available entry; the other available ones are its fallbacks.

        It applies only where the step and its tool leave the backend open, so a user can pin a
        step without editing the table, and it ranks below a directive as every setting does.
        """
        found = _task_of(intent)
        if found is None:
            return None
        task, source = found
        reasons.append(f"{source} sets task: {task}")
        where = f"{intent.location}: " if intent.location else ""
        routes = self.config.task_routing.get(task)
        if routes is None:
            unrouted = unrouted_task(task, self.config.task_routing)
            reasons.append(unrouted)
            if intent.task:  # a tool's task is warned about once, when the config loads
                warnings.append(f"{where}step {intent.step_id!r}: {unrouted}")
            return None
        available = [route for route in routes if self._route_usable(task, route, reasons)]
        listed = ", ".join(route.label for route in routes)
        if not available:
            message = f"task {task}: none of {listed} is available, so the default backend applies"
            reasons.append(message)
            warnings.append(f"{where}step {intent.step_id!r}: {message}")
            return None
        first = available[0]
        chain = self._task_chain(first, available[1:])
        reasons.append(
            f"task {task}: task_routing picks {first.label} (first available of {listed}); fallbacks {', '.join(chain) or 'none'}"
        )
        backend = self.config.backends[first.backend]
        rule = f"task route {task}" + (f" + {model_source} model_key" if model_key else "")
        if first.model:
            target = self._target(backend, first.model, model_key, rule, reasons, intent)
        else:
            role = model_key or self._default_role(backend)
            model, why = self._model_for_role(backend, role, intent, warnings)
            reasons.append(why)
            target = self._target(backend, model, role, rule, reasons, intent)
        return replace(target, fallbacks=chain)

    def _route_usable(self, task: str, route: TaskRoute, reasons: list[str]) -> bool:
        """Whether a `task_routing` entry can take a call now; one that cannot is skipped, and the reasons say why."""
        backend = self.config.backends.get(route.backend)
        if backend is None:
            problem = "not configured"
        elif backend.unavailable:
            problem = backend.unavailable
        elif self._unservable(backend):
            problem = f"not declared in {self.config.path}"
        else:
            return True
        reasons.append(f"task {task}: skips {route.label} ({problem})")
        return False

    def _task_chain(self, first: TaskRoute, rest: list[TaskRoute]) -> tuple[str, ...]:
        """The fallbacks of a task-routed target: the other available entries, then `fallback_backends` not already in it."""
        routed = {first.backend, *(route.backend for route in rest)}
        tail = [name for name in self.config.fallback_backends if name not in routed]
        return tuple(dict.fromkeys(label for label in [*(route.label for route in rest), *tail] if label != first.label))

    def _from_directive(
        self, intent: Intent, found: directives.Directive, reasons: list[str], warnings: list[str]
    ) -> Target | None:
        reasons.append(f"directive {found.phrase.strip()!r} in step {intent.step_id!r}")
        if found.criterion is not None:
            weights = selector.Weights.for_criterion(found.criterion, specialised=found.specialization is not None)
            return self._select(intent, reasons, None, weights=weights, specialization=found.specialization)
        backend = self._backend_for_hint(found.backend) if found.backend else None
        if found.model and (backend is None or backend.unavailable):
            lister = self._lister(found.model)
            if lister is not None:
                reasons.append(f"backend {lister.name} lists a model matching {found.model!r}")
                backend = lister
        if found.backend and (backend is None or backend.unavailable):
            why = "is not configured" if backend is None else f"is unavailable ({backend.unavailable})"
            fallback = next(
                (self.config.backends[n] for n in self.config.fallback_backends if self._usable(n)), None
            )
            message = f"directive asks for {found.backend}, which {why}"
            if fallback is None:
                warnings.append(f"{message}; no fallback backend is available, so the directive is ignored")
                reasons.append(f"{message}; ignored (no available fallback)")
                return None
            warnings.append(f"{message}; falling back to {fallback.name}")
            reasons.append(f"{message}; falling back along fallback_backends to {fallback.name}")
            backend = fallback
        if backend is None:
            backend = self._default_backend(intent, reasons)
        if found.model:
            listed = [*backend.models.values(), *(d.model for d in backend.deployments.values() if d.model)]
            names = list(dict.fromkeys([*listed, *catalog.known_models()]))
            model = catalog.resolve_alias(found.model, names) or found.model
            reasons.append(f"directive names model {found.model!r}: {model}")
            return self._target(backend, model, None, "directive", reasons, intent)
        role = intent.model_key or (intent.tool.model_key if intent.tool else None) or self._default_role(backend)
        model, why = self._model_for_role(backend, role, intent, warnings)
        reasons.append(why)
        return self._target(backend, model, role, "directive", reasons, intent)

    def embedding_target(self, backend_name: str | None = None) -> Target:
        """Where embeddings go: the named backend, else `global_defaults.default_embedding_backend`."""
        name = backend_name or self.config.defaults.default_embedding_backend
        if not name:
            raise InputError(
                "no embedding backend configured",
                hint="set llm.global_defaults.default_embedding_backend, or pass --backend",
            )
        backend = self._backend(name, Intent("embed"))
        if EMBEDDINGS not in backend_type(backend.type).capabilities:
            raise InputError(
                f"backend {name!r} is of type {backend.type}, which has no embeddings",
                location=backend.location,
                hint="point default_embedding_backend (or --backend) at a backend that embeds, such as ollama or openai",
            )
        model = backend.embedding_model or (backend.managed.model if backend.managed else None)
        if model is None:
            raise InputError(f"backend {name!r} has no embedding_model", hint=f"set llm.{name}.embedding_model")
        source = "--backend" if backend_name else "llm.global_defaults.default_embedding_backend"
        reason = f"{source} = {name}; model {model} ({'embedding_model' if backend.embedding_model else 'its managed model'})"
        return self._target(backend, model, None, "embedding backend", [reason], Intent("embed"))

    def retarget(self, target: Target, fallback: str) -> Target:
        """The same role on another backend: what a fallback sends when `target` failed.

        `fallback` is a backend name, or `backend:model` for a `task_routing` entry that pins
        its model; that model is sent instead of the role's.
        """
        backend_name, pinned = self._fallback_hop(fallback)
        backend = self._backend(backend_name, Intent(target.role or "fallback"))
        role = target.role or self._default_role(backend)
        if pinned is None:
            model, why = self._model_for_role(backend, role, Intent(role), [])
        else:
            model, why = pinned, f"its task_routing entry names model {pinned}"
        fresh = self._target(backend, model, role, "fallback", [*target.reasons, f"fallback to {backend_name}: {why}"], Intent(role))
        return replace(fresh, temperature=target.temperature, max_tokens=target.max_tokens, cache=target.cache, fallbacks=())

    def _fallback_hop(self, fallback: str) -> tuple[str, str | None]:
        """A fallback's backend and pinned model: a configured name as it is, else `backend:model` split at the first colon."""
        name, colon, model = fallback.partition(":")
        if self.config.find_backend(fallback) is None and colon and self.config.find_backend(name) is not None:
            return name, model
        return fallback, None

    def larger_context(self, target: Target, current: int) -> Target | None:
        """The available model whose window beats `current`, the smallest such, preferring the same backend.

        `current` is the window the failing model really has: what its server reports where
        it says (a llama.cpp slot may hold far less than the model could), else the config's
        or the catalog's figure.
        """

        def window(backend: str, backend_type: str, model: str) -> int:
            config = self.config.find_backend(backend)
            return catalog.lookup(
                model, backend_type, self.config.selector.models, config.context_windows if config else None
            ).context_window

        larger = [
            (c.backend != target.backend, window(c.backend, c.backend_type, c.model), c)
            for c in self.candidates()
            if c.available
            and (c.backend, c.model) != (target.backend, target.model)
            and window(c.backend, c.backend_type, c.model) > current
        ]
        if not larger:
            return None
        _, size, best = min(larger, key=lambda row: (row[0], row[1]))
        backend = self.config.backends[best.backend]
        role = next((r for r, m in backend.models.items() if m == best.model), None)
        reason = f"context too long for {target.model} ({current} tokens): {best.model} has {size}"
        fresh = self._target(backend, best.model, role, "larger context", [*target.reasons, reason], Intent(role or "context"))
        return replace(fresh, temperature=target.temperature, max_tokens=target.max_tokens, cache=target.cache, fallbacks=target.fallbacks)

    def _lister(self, alias: str) -> BackendConfig | None:
        """An available backend whose `models` (or Azure deployments) contain the named model."""
        for backend in self.config.backends.values():
            names = [*backend.models.values(), *(d.model for d in backend.deployments.values() if d.model)]
            if backend.unavailable is None and catalog.resolve_alias(alias, names):
                return backend
        return None

    def rank(
        self,
        task: str | None,
        spec: Mapping[str, Any] | None = None,
        *,
        only: str | None = None,
        weights: selector.Weights | None = None,
        specialization: str | None = None,
        top_k: int | None = None,
        location: Location | None = None,
        tool: ToolConfig | None = None,
    ) -> tuple[list[selector.Ranked], list[selector.Ranked]]:
        """Ranked candidates and the rejected ones with reasons: `model: auto`, directives and `dse select`.

        A tool's DiSE tiers are the selector's prior for it: unless weights are given, each
        tier scales its criterion's weight, and a tag naming a specialization is what the tool needs.
        """
        spec = dict(spec or {})
        candidates = self.candidates(only=only)
        try:
            constraints = selector.Constraints(
                max_cost=spec.get("max_cost"),
                min_speed=spec.get("min_speed"),
                min_context=spec.get("min_context"),
                specialization=spec.get("specialization") or specialization,
                backends=tuple(spec.get("backends") or ()),
                exclude_backends=tuple(spec.get("exclude_backends") or ()),
            )
            base = dict(self.config.selector.weights)
            tiers = tool.tiers if tool is not None else {}
            weights = weights or selector.Weights(**{k: v * TIER_WEIGHTS[k].get(tiers[k], 1.0) if k in tiers else v for k, v in base.items()})
        except ValueError as exc:
            raise InputError(f"model selector: {exc}", location=location) from None
        overrides = self.config.selector.models
        windows = {b.name: b.context_windows for b in self.config.backends.values()}
        ranked = selector.rank(
            candidates,
            task=spec.get("task") or task,
            weights=weights,
            constraints=constraints,
            top_k=spec.get("top_k", top_k),
            overrides=overrides,
            context_windows=windows,
            specialization=specialization_of(tool.tags) if tool is not None else None,
            measured=self.measured,
        )
        rejected = selector.explain_rejections(
            candidates, constraints=constraints, overrides=overrides, context_windows=windows, measured=self.measured
        )
        return ranked, rejected

    def _select(
        self,
        intent: Intent,
        reasons: list[str],
        backend: BackendConfig | None,
        *,
        weights: selector.Weights | None = None,
        specialization: str | None = None,
    ) -> Target:
        if not self.config.selector.enabled:
            raise InputError(
                f"step {intent.step_id!r} asks the model selector, but model_selector.enabled is false",
                location=intent.location,
                hint="name a backend or model for this step, or set model_selector.enabled: true",
            )
        ranked, rejected = self.rank(
            intent.text or None,
            intent.select,
            only=backend.name if backend else None,
            weights=weights,
            specialization=specialization,
            top_k=1,
            location=intent.location,
            tool=intent.tool,
        )
        if intent.tool is not None and intent.tool.tiers and weights is None:
            tiers = ", ".join(f"{kind} {tier}" for kind, tier in intent.tool.tiers.items())
            reasons.append(f"tool {intent.tool.name!r} tiers ({tiers}) weigh the selector")
        if not ranked:
            why = "; ".join(f"{r.candidate.backend}:{r.candidate.model}: {r.rejected}" for r in rejected[:4])
            raise InputError(
                f"step {intent.step_id!r}: the model selector found no candidate" + (f" ({why})" if why else ""),
                location=intent.location,
                hint="relax the select: constraints, or configure models on an available backend",
            )
        best = ranked[0]
        reasons.append(
            f"model selector picked {best.candidate.backend}:{best.candidate.model} (score {best.score:.1f}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in best.breakdown.items())
            + f"; speed: {catalog.speed_origin(best.info)})"
        )
        chosen = self.config.backends[best.candidate.backend]
        role = next((r for r, m in chosen.models.items() if m == best.candidate.model), None)
        return self._target(chosen, best.candidate.model, role, "model selector", reasons, intent)

    def candidates(self, only: str | None = None) -> list[selector.Candidate]:
        """Every (backend, model) the selector may choose from: each backend's configured models."""
        out: list[selector.Candidate] = []
        for backend in self.config.backends.values():
            if only and backend.name != only:
                continue
            default, made_up = self._default_model(backend, None)
            if not backend.models and made_up and self._unservable(backend):
                continue
            models = list(dict.fromkeys(backend.models.values())) or [default]
            for model in models:
                out.append(
                    selector.Candidate(
                        backend=backend.name,
                        backend_type=backend.type,
                        model=model,
                        available=backend.unavailable is None,
                        reason=backend.unavailable or "",
                    )
                )
        return out

    def _target(
        self, backend: BackendConfig, model: str, role: str | None, rule: str, reasons: list[str], intent: Intent
    ) -> Target:
        tool = intent.tool
        defaults = self.config.defaults
        deployment = None
        if backend.type == "azure":
            match = backend.deployments.get(role or "") or next(
                (d for d in backend.deployments.values() if d.model == model), None
            )
            deployment = match.deployment if match else (backend.deployment_name or model)
        if backend.unavailable:
            reasons.append(f"note: backend {backend.name} is unavailable ({backend.unavailable}); fallbacks apply at run time")
        endpoints = tuple(e.url for e in self.endpoints.endpoints(backend, role))
        return Target(
            backend=backend.name,
            backend_type=backend.type,
            model=model,
            role=role,
            rule=rule,
            reasons=tuple(reasons),
            endpoints=endpoints,
            deployment=deployment,
            temperature=_first(intent.temperature, tool.temperature if tool else None, defaults.temperature),
            max_tokens=_first(intent.max_tokens, tool.max_tokens if tool else None, defaults.max_tokens),
            timeout=_first(tool.timeout if tool else None, backend.timeout, defaults.timeout),
            fallbacks=tuple(n for n in self.config.fallback_backends if n != backend.name),
            cache=CacheSettings(**{**self.config.cache, **backend.cache, **(tool.cache if tool else {}), **intent.cache}),
        )

    def _model_for_role(self, backend: BackendConfig, role: str, intent: Intent, warnings: list[str]) -> tuple[str, str]:
        """The model `backend` gives `role`, and why; one the user did not write is an error or a warning, never silent."""
        if role in backend.models:
            return backend.models[role], f"model_key {role!r} -> {backend.name}.models.{role} = {backend.models[role]}"
        if backend.type == "azure" and role in backend.deployments:
            d = backend.deployments[role]
            return d.model or d.deployment, f"model_key {role!r} -> {backend.name}.deployments.{role}"
        if backend.managed is not None:
            return backend.managed.model, f"{backend.name} serves its managed model {backend.managed.model}"
        if backend.models:
            close = difflib.get_close_matches(role, list(backend.models), n=1, cutoff=0.5)
            raise InputError(
                f"step {intent.step_id!r}: backend {backend.name!r} has no model for role {role!r}",
                location=intent.location,
                hint=f"did you mean {close[0]!r}?" if close else f"add llm.{backend.name}.models.{role}, or set model:",
            )
        model, made_up = self._default_model(backend, role)
        if not made_up:
            return model, f"{backend.name} lists no models; its deployment_name {model} serves role {role!r}"
        named = f" (named at {backend.location})" if backend.location and backend.location.line else ""
        if self._unservable(backend):
            raise InputError(
                f"step {intent.step_id!r}: backend {backend.name!r}{named} is not declared in {self.config.path}, "
                f"so it has no model for role {role!r}, and dse does not make one up",
                location=intent.location,
                hint=f"declare llm.{backend.name}.models.{role}: the model your {backend.type} server has",
            )
        where = f"{intent.location}: " if intent.location else ""
        warnings.append(
            f"{where}step {intent.step_id!r} gets {model!r}, the built-in default model of {backend.type} for role {role!r}, "
            f"not a model in your config: backend {backend.name}{named} lists no models (set llm.{backend.name}.models.{role})"
        )
        return model, f"{backend.name} lists no models: built-in default model (not in your config) for {backend.type} role {role!r}: {model}"

    def _default_model(self, backend: BackendConfig, role: str | None) -> tuple[str, bool]:
        """What a block without `models:` answers for `role`, and whether it is made up (the protocol's built-in table, not the block)."""
        if backend.managed is not None:
            return backend.managed.model, False
        if backend.type == "azure" and backend.deployment_name:
            return backend.deployment_name, False
        table = backend_type(backend.type).default_models
        return table.get(role) or table.get(None) or "default", True

    def _unservable(self, backend: BackendConfig) -> bool:
        """A local server type the config never declares: which models that server has is anybody's guess."""
        return not backend.declared and backend_type(backend.type).local

    def _default_role(self, backend: BackendConfig) -> str:
        if _DEFAULT_ROLE in backend.models or not backend.models:
            return _DEFAULT_ROLE
        return next(iter(backend.models))

    def _default_backend(self, intent: Intent, reasons: list[str]) -> BackendConfig:
        name = self.config.default_backend
        if not name:
            raise InputError(
                f"step {intent.step_id!r}: no backend to use",
                location=intent.location,
                hint="set llm.backend or llm.global_defaults.default_backend in config.yaml",
            )
        source = "llm.global_defaults.default_backend" if self.config.defaults.default_backend else "llm.backend"
        reasons.append(f"{source} = {name}")
        return self._backend(name, intent)

    def _owner(self, model: str, intent: Intent) -> tuple[BackendConfig, str] | None:
        """The backend a bare model name belongs to: the one that lists it, or its vendor's."""
        owners = [b for b in self.config.backends.values() if model in _listed(b)]
        if len(owners) == 1:
            return owners[0], f"model {model!r} is listed only by backend {owners[0].name}"
        default = self.config.default_backend
        if len(owners) > 1:
            if default in {b.name for b in owners}:
                return self.config.backends[default], f"model {model!r} is listed by several backends; the default {default} is one"
            raise InputError(
                f"step {intent.step_id!r}: model {model!r} is listed by several backends: "
                + ", ".join(sorted(b.name for b in owners)),
                location=intent.location,
                hint=f"write it provider-prefixed, e.g. {sorted(b.name for b in owners)[0]}:{model}",
            )
        vendor = vendor_of(model)
        if vendor and vendor != self._type_of(default):
            typed = [b for b in self.config.backends.values() if b.type == vendor]
            if typed:
                return typed[0], f"model {model!r} is a {vendor} model; backend {typed[0].name} serves {vendor}"
        return None

    def _require_known(self, model: str, intent: Intent) -> None:
        """A bare model name that no backend owns is an error with the closest names (DESIGN.md 3, rule 5).

        Known means: the model selector's table or the built-in catalog describes it, or its
        vendor is a configured backend's type. Anything else would be sent to the default
        backend as written, which is how a typo reaches a server as `gpt-99-ultra`.
        """
        vendor = vendor_of(model)
        if (
            model in self.config.selector.models
            or catalog.lookup(model, "").known
            or (vendor is not None and any(b.type == vendor for b in self.config.backends.values()))
        ):
            return
        listed = sorted({name for b in self.config.backends.values() for name in _listed(b)} | set(self.config.selector.models))
        close = difflib.get_close_matches(model, list(dict.fromkeys([*listed, *catalog.known_models()])), n=3, cutoff=0.5)
        raise InputError(
            f"step {intent.step_id!r}: no backend owns model {model!r}: no backend lists it and the catalog does not know it"
            + (f" (the name is {vendor}'s kind, and no {vendor} backend is configured)" if vendor else ""),
            location=intent.location,
            hint=(f"did you mean {' or '.join(map(repr, close))}? " if close else "")
            + f"list it under a backend's models:, or say where it runs (backend: NAME, or model: NAME:{model})",
        )

    def _type_of(self, name: str) -> str | None:
        backend = self.config.backends.get(name)
        return backend.type if backend else None

    def _backend(self, name: str, intent: Intent) -> BackendConfig:
        backend = self.config.find_backend(name)
        if backend is not None:
            return backend
        close = difflib.get_close_matches(name, self._backend_names(), n=1, cutoff=0.5)
        raise InputError(
            f"step {intent.step_id!r}: unknown backend {name!r}",
            location=intent.location,
            hint=f"did you mean {close[0]!r}?" if close else f"configured: {', '.join(sorted(self.config.backends))}",
        )

    def _backend_names(self) -> list[str]:
        return sorted(set(self.config.backends) | set(type_names()))

    def _backend_for_hint(self, hint: str) -> BackendConfig | None:
        """A directive names a vendor ("claude" -> anthropic) or "local"; find the block that serves it."""
        backends = self.config.backends
        if hint in backends:
            return backends[hint]
        if hint == "local":
            return next((b for b in backends.values() if backend_type(b.type).local), None)
        return next((b for b in backends.values() if b.type == hint), None)

    def _usable(self, name: str) -> bool:
        backend = self.config.backends.get(name)
        return backend is not None and backend.unavailable is None


def _task_of(intent: Intent) -> tuple[str, str] | None:
    """The task a call has, and who set it: the step's replaces its tool's."""
    if intent.task:
        return intent.task, f"step {intent.step_id!r}"
    if intent.tool is not None and intent.tool.task:
        return intent.tool.task, f"tool {intent.tool.name!r}"
    return None


def _listed(backend: BackendConfig) -> set[str]:
    """Every model name a block mentions: its roles, context windows, deployments and managed model."""
    names = {*backend.models.values(), *backend.context_windows}
    names |= {name for d in backend.deployments.values() for name in (d.model, d.deployment) if name}
    if backend.managed is not None:
        names.add(backend.managed.model)
    return names


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
