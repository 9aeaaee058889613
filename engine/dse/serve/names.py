"""What a client may write in `model`, and the target each name resolves to.

A name is, in this order: `auto` (the weighted selector), a tool of the config, a role of the
default backend (`generator`), a backend (its default role), or a model: `backend:model` or a
bare name placed by the config's resolution rules (DESIGN.md section 3). Without directives a
name always resolves the same way, so each is resolved once and remembered.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from ..backends.registry import EMBEDDINGS, backend_type
from ..config.model import BackendConfig, Config
from ..errors import InputError
from ..routing import Intent, Resolver, Target
from .problems import NOT_FOUND, Problem

_STEP = "request"
# `backend:anything` resolves, so what is remembered is bounded: a client cannot fill memory with names.
_REMEMBERED = 1024


@dataclass(frozen=True)
class Offer:
    """One name `/v1/models` lists: `owner` is the backend that serves it, or `dse` for names the gateway resolves."""

    name: str
    owner: str
    kind: str


class ModelNames:
    def __init__(self, config: Config, resolver: Resolver) -> None:
        self._config = config
        self._resolver = resolver
        self._known: dict[str, Target] = {}

    def _usable(self) -> list[BackendConfig]:
        return [b for b in self._config.backends.values() if b.unavailable is None]

    def offers(self) -> list[Offer]:
        default = self._config.find_backend(self._config.default_backend)
        found = [Offer("auto", "dse", "selector")] if self._config.selector.enabled else []
        found += [Offer(name, "dse", "tool") for name in self._config.tools]
        if default is not None:
            found += [Offer(role, default.name, "role") for role in default.models]
        for backend in self._usable():
            models = [*backend.models.values(), *([backend.managed.model] if backend.managed else [])]
            found += [Offer(f"{backend.name}:{model}", backend.name, "model") for model in dict.fromkeys(models)]
        found += [Offer(name, owner, "embedding") for name, owner in self._embedders().items()]
        return list({offer.name: offer for offer in found}.values())

    def target(self, name: str, text: str | None = None) -> Target:
        """The target for `name`; `text` (the client's last message, when directives are on) may retarget it."""
        if text is None and name in self._known:
            return self._known[name]
        if name.endswith(":"):
            raise self._unknown(name, "it names a backend but no model after the colon")
        try:
            resolved = self._resolver.resolve(self._intent(name, text or "")).target
        except InputError as exc:
            raise self._unknown(name, exc.message.removeprefix(f"step {_STEP!r}: ")) from None
        if text is None and len(self._known) < _REMEMBERED:
            self._known[name] = resolved
        return resolved

    def _intent(self, name: str, text: str) -> Intent:
        config = self._config
        if name == "auto":
            return Intent(_STEP, model="auto", text=text)
        if name in config.tools:
            return Intent(_STEP, tool=config.tools[name], text=text)
        default = config.find_backend(config.default_backend)
        if default is not None and name in default.models:
            return Intent(_STEP, model_key=name, text=text)
        if name in config.backends:
            return Intent(_STEP, backend=name, text=text)
        return Intent(_STEP, model=name, text=text)

    def embedding_target(self, name: str) -> Target:
        """A backend that embeds, `backend:model`, or an embedding model a backend names."""
        backend, _, model = name.partition(":") if ":" in name else (self._embedders().get(name, name), "", "")
        config = self._config.find_backend(backend)
        if config is None or EMBEDDINGS not in backend_type(config.type).capabilities:
            raise self._unknown(name, "no backend that embeds goes by this name", embedding=True)
        try:
            target = self._resolver.embedding_target(backend)
        except InputError as exc:
            raise self._unknown(name, exc.message, embedding=True) from None
        return replace(target, model=model) if model else target

    def _embedders(self) -> dict[str, str]:
        """Embedding model name -> the backend that embeds with it, for backends that can."""
        found: dict[str, str] = {}
        for backend in self._usable():
            if EMBEDDINGS not in backend_type(backend.type).capabilities:
                continue
            model = backend.embedding_model or (backend.managed.model if backend.managed and backend.managed.embeddings else None)
            if model:
                found.setdefault(model, backend.name)
        return found

    def _unknown(self, name: str, why: str, *, embedding: bool = False) -> Problem:
        names = [offer.name for offer in self.offers() if (offer.kind == "embedding") == embedding]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        message = f"model {name!r} is not served here ({why}){hint} GET /v1/models lists every name"
        return Problem(404, NOT_FOUND, message, "model", "model_not_found")
