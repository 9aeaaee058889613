"""Which backend a `dse models` command acts on, and which of its servers.

A model is pulled and loaded where the config would send calls for it: the backend that lists
the name (under `models:` or as its `managed.model`), else the default backend; `--backend`
or a `backend:` prefix says so outright. Only two kinds of backend hold models on request:
Ollama servers and the llama.cpp servers dse manages itself.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..backends.ollama import ollama_name
from ..config.model import BackendConfig, Config, Endpoint
from ..errors import InputError


@dataclass(frozen=True)
class Subject:
    """A model on one backend; `roles` are the roles that backend lists it for."""

    backend: BackendConfig
    model: str
    roles: tuple[str, ...]

    def endpoints(self) -> list[Endpoint]:
        """Every server of an Ollama backend that serves one of the model's roles (all of them for a model with no role)."""
        lists = [self.backend.endpoints_for(role) for role in self.roles] or [self.backend.endpoints_for(None)]
        return list({e.url: e for endpoints in lists for e in endpoints}.values())


def subject(config: Config, name: str, backend: str | None, verb: str) -> Subject:
    """The backend and model `name` means; an InputError (exit 2) when no backend can hold it."""
    chosen, model = _choose(config, name, backend, verb)
    if chosen.managed is not None:
        if verb == "pull":
            raise InputError(
                f"backend {chosen.name} is a managed llama.cpp backend: it runs a model file, there is nothing to pull",
                hint=_ollama_hint(config, "pull", name),
            )
        if not _same(chosen, model, chosen.managed.model):
            raise InputError(
                f"backend {chosen.name} runs {chosen.managed.model!r} (llm.{chosen.name}.managed.model), not {model!r}",
                hint=f"dse models {verb} {chosen.managed.model} --backend {chosen.name}, or change llm.{chosen.name}.managed.model",
            )
    elif chosen.type != "ollama":
        raise InputError(
            f"backend {chosen.name} (type {chosen.type}) does not {verb} models on request: only Ollama and managed llama.cpp backends do",
            hint=_ollama_hint(config, verb, name),
        )
    roles = tuple(role for role, listed in chosen.models.items() if _same(chosen, listed, model))
    return Subject(chosen, model, roles)


def lifecycle_backends(config: Config, only: str | None = None) -> list[BackendConfig]:
    """The backends `dse models ps` looks at: every Ollama and managed one, or the one named."""
    if only is not None:
        return [_named(config, only)]
    return [b for b in config.backends.values() if b.managed is not None or b.type == "ollama"]


def _choose(config: Config, name: str, backend: str | None, verb: str) -> tuple[BackendConfig, str]:
    if backend is not None:
        return _named(config, backend), name
    prefix, _, rest = name.partition(":")
    if rest and prefix in config.backends:
        return config.backends[prefix], rest
    owners = [b for b in config.backends.values() if any(_same(b, listed, name) for listed in _listed(b))]
    if len(owners) == 1:
        return owners[0], name
    default = config.default_backend
    if owners and default not in {b.name for b in owners}:
        names = sorted(b.name for b in owners)
        raise InputError(f"model {name!r} is listed by several backends: {', '.join(names)}", hint=f"dse models {verb} {name} --backend {names[0]}")
    return _named(config, default), name


def _named(config: Config, name: str) -> BackendConfig:
    found = config.backends.get(name)
    if found is not None:
        return found
    close = difflib.get_close_matches(name, list(config.backends), n=1, cutoff=0.5)
    raise InputError(
        f"no backend {name!r} in {config.path}",
        hint=f"did you mean {close[0]!r}?" if close else f"configured: {', '.join(sorted(config.backends)) or 'none'}",
    )


def _listed(backend: BackendConfig) -> list[str]:
    return [*backend.models.values(), *([backend.managed.model] if backend.managed else [])]


def _same(backend: BackendConfig, a: str, b: str) -> bool:
    """Ollama answers to `llama3` for `llama3:latest`; every other backend takes names as written."""
    return ollama_name(a) == ollama_name(b) if backend.type == "ollama" and backend.managed is None else a == b


def _ollama_hint(config: Config, verb: str, name: str) -> str:
    ollamas = [b.name for b in config.backends.values() if b.type == "ollama"]
    if ollamas:
        return f"dse models {verb} {name} --backend {ollamas[0]}"
    return "add an Ollama backend (llm.ollama: {base_url: http://localhost:11434}) to pull and load models on request"
