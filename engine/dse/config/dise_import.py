"""`dse config import`: turn a DiSE config file, in any of its layouts, into a dse config.

DiSE (scottgal/mostlylucid.dse) grew several config layouts that its backend guide does not
show. A user moving to dse should get a config that routes every role to the model DiSE would
have used, and a report saying where each setting went, or why it could not go anywhere, with
its `file:line`. Nothing is dropped silently: a final sweep reports every key no rule used.

Layouts, and how DiSE picks a model per role in each (from its `src/config_manager.py`,
`src/llm_client_factory.py`, `src/quality_evaluator.py` and the docs next to the files):

- Model registry (`config.yaml`, `config.local.yaml`, `config.unified.yaml`,
  `config.anthropic*.yaml`, `config.mcp.yaml`): `llm.models.<key>` describes a model once
  (`name`, `backend`, `context_window`, `cost`, `speed`, `quality`, `specialization`,
  `timeout`). `ConfigManager.get_model(role, level)` returns `llm.roles.<role>.<level>`, else
  `llm.defaults.<level>`, a registry key; levels are god, escalation, general, fast, veryfast.
  The named roles are `overseer` and `evaluator` = (default, general), `generator` = (code,
  general), `triage` = (default, veryfast), `escalation` = (default, escalation). A key missing
  from the registry is used as the model name on ollama (`get_model_metadata`). The
  RoutingClient sends each model to its entry's `backend`; the primary backend is the backend
  of `defaults.general`'s model (`get_primary_llm_backend`). Embeddings: `llm.embedding.default`.
  dse roles: the named roles, each level (`general`), each (role, level) of `llm.roles` as
  `role.level` (`code.general`), and each registry key, all on the backend of their model; a
  role whose model is not on the default backend needs `backend:` where it is used. A registry
  entry whose specialization is `embedding` is an embedding model, not a chat role.
- `model_roles` (`config.*.minimal.yaml`): `llm.model_roles.<role>` names a model on
  `llm.backend`; tools say `role: base` (NEW_CONFIG_ARCHITECTURE.md). `api_settings` holds that
  backend's `max_tokens`, `timeout`, `endpoint`, `api_version`; `model_timeouts` per model.
  `ConfigManager` itself never reads these keys; the import follows the documented meaning.
- `model_tiers` (`config.tiered.yaml`): `model_tiers.<category>.<tier>.model` on `llm.backend`,
  addressed as `category.tier` (MODEL_TIERS.md); `role_to_tier_mapping.<role>` names a tier.
  Again only the docs give the meaning: `ConfigManager` does not read `model_tiers`.
- Top-level `ollama:` block (`config.yaml.backup`, `config.local.yaml.backup`, the `CLOUD_*`
  files): `ollama.models.<role>` is a name or `{model, endpoint, endpoints}`
  (`_parse_model_config`); `evaluator` may hold one per type, `default` being the evaluator
  (`QualityEvaluator`). Calls go to `llm.backend` (default ollama) whatever an entry's
  `backend:` says. `ollama.context_windows` and a top-level `context_windows:` give windows
  per model name, whatever the backend: the selector's `model_selector.models.<m>`.
- Embeddings: DiSE reads `llm.embedding.default`, else `embedding.model`, else
  `ollama.models.embedding`; files also write `ollama.embedding.model` and
  `model_roles.embedding`. The first one present wins; it names the backend's
  `embedding_model` and `global_defaults.default_embedding_backend`.
- Guide-style blocks `llm.<backend>` (`config.openai.yaml`, `config.azure.yaml`, the `CLOUD_*`
  files) are dse's own format: copied, less the keys dse has no place for.

Mapping:

| DiSE                                           | dse                                                   |
|------------------------------------------------|-------------------------------------------------------|
| role -> model, as above                        | `llm.<backend>.models.<role>`                         |
| `llm.backend`, else DiSE's primary backend     | `llm.backend`                                         |
| `backends.<b>` / `llm.<b>`: base_url, api_key  | `llm.<b>.base_url`, `api_key` (`${VAR}` kept as text) |
| `llm.base_url`, `api_settings.endpoint`        | the default backend's `base_url` (Azure: `endpoint`)  |
| `enabled`                                      | `llm.<b>.enabled`                                     |
| model or backend `timeout`, `api_settings`     | `llm.<b>.timeout`: the longest, so none is cut short  |
| `api_settings.max_tokens` / `temperature`      | `llm.global_defaults.*`                               |
| `context_window`, `context_windows.<m>`        | `model_selector.models.<m>.context_window`            |
| cost/speed/quality words (`*_tier` too)        | `model_selector.models.<m>.*`, 0-10 (see `SCORES`)    |
| `specialization` (content -> writing)          | `model_selector.models.<m>.specialization`            |
| `ollama.models.<role>.endpoint(s)`             | `llm.<b>.endpoints.<role>`                            |
| Azure `deployments.<role>: NAME`               | `llm.azure.deployments.<role>.deployment`             |

When two settings give one dse key different values the first wins, in the order of `_STEPS`
(embeddings, registry, model_roles, tiers, `llm.<backend>` blocks, the ollama block), and the
other is reported as dropped, naming the winner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backends.registry import EMBEDDINGS, backend_type, is_backend_type, type_names
from ..errors import InputError, Location
from .dise import word
from .loader import url_problem
from .yaml_source import KeyPath, YamlSource, read_yaml

LEVELS = ("god", "escalation", "general", "fast", "veryfast")
NAMED_ROLES: Mapping[str, tuple[str, str]] = {
    "overseer": ("default", "general"),
    "generator": ("code", "general"),
    "evaluator": ("default", "general"),
    "triage": ("default", "veryfast"),
    "escalation": ("default", "escalation"),
}
# DiSE's words on dse's 0..10 scales (cost: 10 is cheapest), evenly spaced as DiSE ranks them;
# cost lands in the selector's price tiers free / low / medium / high.
SCORES: Mapping[str, Mapping[str, float]] = {
    "cost": {"free": 10.0, "very-low": 8.5, "low": 7.0, "medium": 5.0, "high": 3.0, "very-high": 1.0},
    "speed": {"very-fast": 9.0, "fast": 7.0, "medium": 5.0, "slow": 3.0, "very-slow": 1.0},
    "quality": {
        "poor": 1.0, "fair": 3.0, "basic": 4.0, "good": 5.5, "very-good": 7.0, "excellent": 8.5, "exceptional": 9.5,
    },
}
TAGS: Mapping[str, str] = {"content": "writing"}  # DiSE's content models write prose: dse's `writing` tasks

_DISE_DEFAULT_BACKEND = "ollama"  # LLMClientFactory and get_model_metadata fall back to it
_SIMPLE_BLOCK_KEYS = (
    "type", "enabled", "base_url", "api_key", "organization", "embedding_model", "endpoint", "api_version", "deployment_name",
)
_DEPLOYMENT_KEYS = ("deployment", "model", "endpoint", "api_version")
_LLM_SECTIONS = frozenset(
    {"backend", "base_url", "fallback_backends", "global_defaults", "models", "defaults", "roles", "embedding",
     "backends", "model_roles", "api_settings", "model_timeouts"}
)
_GLOBAL_DEFAULT_KEYS = ("default_backend", "default_embedding_backend", "temperature", "max_tokens", "timeout")
_LABEL = "a description for people; dse has no place for it"
_WHY = {
    "vector_size": "dse reads an embedding's size from the server's answer",
    "allow_override": "dse has no protected settings: any step may name its embedding backend",
    "max_tokens": "dse sets max_tokens for every call (llm.global_defaults) or per tool, not per backend",
    "temperature": "dse sets temperature for every call (llm.global_defaults) or per tool, not per backend",
    "name": _LABEL,
    "description": _LABEL,
    "use_for": "DiSE's words for picking a tier; in dse a tool names its role, or the selector matches specialization",
    "escalates_to": "dse has no escalation chain; fallback_backends retry the same role on another backend",
    "api_version": "only an Azure backend has an API version",
}
_SECTION_WHY = {
    "tools": "not imported (`dse config import` translates backends and models), but dse reads DiSE's `tools:` as "
    "written: copy the section over, and `dse validate` checks it against the imported backends",
    "workflows": "not imported (`dse config import` translates backends and models), but dse reads DiSE's `workflows:` "
    "as written (`dse run NAME`): copy the section over with the tools it calls",
    "embeddings": "not imported (`dse config import` translates backends and models), but dse reads DiSE's `embeddings:` "
    "as written: copy the section over unless the import already set default_embedding_backend",
}
_BLOCK_ORDER = (*_SIMPLE_BLOCK_KEYS, "timeout", "models", "deployments", "endpoints", "context_windows")
_FOREIGN = "a section of another DiSE subsystem: `dse config import` translates backends and models"
_NO_DEFAULT_WINDOW = "dse has no catch-all window; a model nobody describes gets the catalog's estimate"


@dataclass(frozen=True)
class Mapped:
    """One DiSE setting and where it went in the dse config."""

    location: Location
    target: str
    value: Any
    note: str = ""

    def __str__(self) -> str:
        return f"{self.location} -> {self.target} = {self.value!r}" + (f" ({self.note})" if self.note else "")

    def as_dict(self) -> dict[str, Any]:
        return {**_where(self.location), "target": self.target, "value": self.value, "note": self.note}


@dataclass(frozen=True)
class Dropped:
    """One DiSE setting with no dse equivalent, and why."""

    location: Location
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {**_where(self.location), "reason": self.reason}


@dataclass(frozen=True)
class ImportResult:
    """The dse config document and the report of what was mapped and what was dropped."""

    source: str
    config: dict[str, Any]
    layouts: tuple[str, ...]
    mapped: tuple[Mapped, ...]
    dropped: tuple[Dropped, ...]

    def to_yaml(self) -> str:
        """The dse config as YAML, headed by where it came from, so a reader knows it was generated."""
        return f"# imported from {self.source} by `dse config import`\n" + yaml.safe_dump(self.config, sort_keys=False)

    def report(self) -> list[str]:
        """One line per DiSE key: where it went, or why it could not go anywhere."""
        return [
            f"{self.source}: {', '.join(self.layouts)}",
            *(f"mapped  {m}" for m in self.mapped),
            *(f"dropped {d}" for d in self.dropped),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "mapped": [m.as_dict() for m in self.mapped],
            "dropped": [d.as_dict() for d in self.dropped],
        }


def import_file(path: Path) -> ImportResult:
    """Read a DiSE config file; unreadable files, bad YAML and unknown layouts are located InputErrors."""
    return import_source(read_yaml(path))


def import_source(source: YamlSource) -> ImportResult:
    """Import parsed YAML: the default backend first, since every layout's roles land on it."""
    if not isinstance(source.data, dict):
        raise InputError("a DiSE config must be a YAML mapping", location=source.locate(()))
    layouts = _layouts(source)
    builder = _Builder(source)
    _default_backend(builder)
    for step in _STEPS:
        step(builder)
    return builder.finish(layouts)


def _where(location: Location) -> dict[str, Any]:
    return {"file": location.file, "line": location.line, "key": location.key}


def _layouts(source: YamlSource) -> tuple[str, ...]:
    """Which DiSE layouts the file uses; none is an error, since nothing could be imported."""
    data = source.data
    llm = data.get("llm") or {}
    if not isinstance(llm, dict):
        raise InputError("`llm` must be a mapping", location=source.locate(("llm",)))
    found = {
        "model registry (llm.models)": isinstance(llm.get("models"), dict),
        "model_roles": "model_roles" in llm,
        "model_tiers": "model_tiers" in data or "role_to_tier_mapping" in data,
        "top-level ollama block": "ollama" in data,
        "backend blocks (llm.<backend>)": any(_is_block(k, v) for k, v in llm.items()),
        "top-level context_windows": "context_windows" in data,
        "top-level embedding": "embedding" in data,
    }
    layouts = tuple(name for name, present in found.items() if present)
    if not layouts:
        raise InputError(
            "not a DiSE config layout that `dse config import` knows",
            location=source.locate(()),
            hint="expected llm.models (a model registry), llm.model_roles, model_tiers, a top-level ollama: block "
            "or llm.<backend> blocks",
        )
    return layouts


def _is_block(name: str, value: Any) -> bool:
    """A guide-style backend block under `llm:`: named after a type, or saying its type."""
    if name in _LLM_SECTIONS or not isinstance(value, dict):
        return False
    return is_backend_type(name) or is_backend_type(str(value.get("type")))


@dataclass
class _Builder:
    """The dse document being written, and the report: every source key is mapped or dropped once."""

    source: YamlSource
    doc: dict[str, Any] = field(default_factory=lambda: {"llm": {}})
    mapped: list[Mapped] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    default: str = _DISE_DEFAULT_BACKEND
    _used: set[KeyPath] = field(default_factory=set)
    _origin: dict[tuple[str, ...], KeyPath | None] = field(default_factory=dict)
    _timeouts: dict[str, list[tuple[int | float, KeyPath]]] = field(default_factory=dict)

    def get(self, path: KeyPath) -> Any:
        value: Any = self.source.data
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def section(self, path: KeyPath) -> dict[str, Any]:
        """A mapping the rules walk; absent or null is empty, anything else is a located error."""
        value = self.get(path)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InputError(f"expected a mapping, got {type(value).__name__}", location=self.source.locate(path))
        return value

    def at(self, path: KeyPath | None) -> Location:
        return self.source.locate(path) if path is not None else Location(self.source.file)

    def used(self, path: KeyPath) -> bool:
        return any(path[:n] in self._used for n in range(len(path) + 1))

    def record(self, src: KeyPath | None, target: str, value: Any, note: str = "") -> None:
        self.mapped.append(Mapped(self.at(src), target, value, note))
        if src is not None:
            self._used.add(src)

    def drop(self, src: KeyPath, reason: str) -> None:
        self.dropped.append(Dropped(self.at(src), reason))
        self._used.add(src)

    def put(self, target: tuple[str, ...], value: Any, src: KeyPath | None, note: str = "") -> None:
        """Set `target`; a different value already there (or above it) wins, and this one is dropped naming it."""
        taken = target if target in self._origin else _taken_above(self.doc, target)
        if taken is None:
            _assign(self.doc, target, value)
            self._origin[target] = src
        elif (current := _lookup(self.doc, taken)) != value:
            if src is not None:
                self.drop(src, f"conflicts with {_display(taken)} = {current!r} from {self.at(self._origin.get(taken))}")
            return
        self.record(src, _display(target), value, note)

    def block(self, name: str, src: KeyPath | None, kind: str | None = None) -> str:
        """Make sure `llm.<name>` exists; its name or `type` must be a protocol dse speaks."""
        if ("llm", name) in self._origin:
            return name
        kind = kind or name
        if not is_backend_type(kind):
            raise InputError(
                f"backend {kind!r} is not a backend type dse knows",
                location=self.at(src),
                hint=f"dse speaks {', '.join(type_names())}; give the block a `type:`",
            )
        self._origin[("llm", name)] = src
        self.doc["llm"][name] = {} if kind == name else {"type": kind}
        return name

    def kind(self, name: str) -> str:
        block = self.doc["llm"].get(name) or {}
        return str(block.get("type", name))

    def timeout(self, backend: str, value: Any, src: KeyPath) -> None:
        if _number(value) is None or value <= 0:
            self.drop(src, f"expected a number of seconds, got {value!r}")
            return
        self._timeouts.setdefault(backend, []).append((value, src))
        self._used.add(src)

    def describe(self, model: str, key: str, value: Any, src: KeyPath) -> None:
        """One fact about a model for the selector: window, a 0..10 score, or specialization tags."""
        converted = _CONVERT[key](value)
        if isinstance(converted, str):
            self.drop(src, converted)
        else:
            self.put(("model_selector", "models", model, key), converted, src)

    def finish(self, layouts: tuple[str, ...]) -> ImportResult:
        self._settle_timeouts()
        for key, value in self.source.data.items():
            self._sweep((key,), value)
        llm = self.doc["llm"]
        order = [k for k in ("backend", "fallback_backends", "global_defaults") if k in llm]
        blocks = {k: _ordered(v, _BLOCK_ORDER) for k, v in llm.items() if k not in order}
        self.doc["llm"] = {**{k: llm[k] for k in order}, **blocks}
        return ImportResult(self.source.file, self.doc, layouts, tuple(self.mapped), tuple(self.dropped))

    def _settle_timeouts(self) -> None:
        """dse has one timeout per backend: the longest, so no model is cut off sooner than in DiSE."""
        for backend, candidates in self._timeouts.items():
            longest, first = max(candidates, key=lambda c: c[0])
            self.put(("llm", backend, "timeout"), longest, first, "the longest timeout given for this backend")
            for seconds, src in candidates:
                if src == first:
                    continue
                if seconds == longest:
                    self.record(src, _display(("llm", backend, "timeout")), longest)
                else:
                    self.drop(src, f"dse has one timeout per backend: llm.{backend}.timeout is {longest:g} s, the longest given")

    def _sweep(self, path: KeyPath, value: Any) -> None:
        """Report, as dropped, the outermost keys no rule used."""
        if self.used(path):
            return
        if isinstance(value, dict) and value and any(u[: len(path)] == path for u in self._used):
            for key, child in value.items():
                self._sweep((*path, key), child)
            return
        if len(path) == 1:
            self.drop(path, _SECTION_WHY.get(str(path[0]), _FOREIGN))
        else:
            self.drop(path, _WHY.get(str(path[-1]), "no dse equivalent"))


def _display(target: tuple[str, ...]) -> str:
    """A dse key path as users write it, with names that hold dots (`coding.tier_1`, `qwen2.5`) quoted."""
    return "".join(f'["{p}"]' if "." in p else f".{p}" for p in target).lstrip(".")


def _ordered(block: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """A block's keys in the order people read them: what it is, where, then what it serves."""
    return dict(sorted(block.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


def _taken_above(doc: dict[str, Any], target: tuple[str, ...]) -> tuple[str, ...] | None:
    """The key above `target` that holds a value, not a mapping (a list of endpoints for every role, say)."""
    node: Any = doc
    for depth, part in enumerate(target[:-1], 1):
        node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            return target[:depth]
    return None


def _lookup(doc: dict[str, Any], target: tuple[str, ...]) -> Any:
    value: Any = doc
    for part in target:
        value = value[part]
    return value


def _assign(doc: dict[str, Any], target: tuple[str, ...], value: Any) -> None:
    node = doc
    for part in target[:-1]:
        node = node.setdefault(part, {})
    node[target[-1]] = value


def _number(value: Any) -> float | None:
    """A finite number; YAML's `.nan`, `.inf` and booleans are not settings anyone means."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _window(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return f"expected a positive whole number of tokens, got {value!r}"


def _scorer(scale: str) -> Callable[[Any], float | str]:
    words = SCORES[scale]

    def score(value: Any) -> float | str:
        number = _number(value)
        if number is not None and 0 <= number <= 10:
            return number
        spelled = word(str(value))
        if spelled in words:
            return words[spelled]
        return f"unknown {scale} word {value!r}; dse maps " + ", ".join(f"{w}={s:g}" for w, s in words.items())

    return score


def _tags(value: Any) -> list[str] | str:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t for t in items):
        return f"expected a tag or a list of tags, got {value!r}"
    return list(dict.fromkeys(TAGS.get(t.lower(), t.lower()) for t in items))


_CONVERT: Mapping[str, Callable[[Any], Any]] = {
    "context_window": _window,
    "cost": _scorer("cost"),
    "speed": _scorer("speed"),
    "quality": _scorer("quality"),
    "specialization": _tags,
}
_DESCRIBED = {"context_window": "context_window", "cost": "cost", "speed": "speed", "quality": "quality",
              "specialization": "specialization", "cost_tier": "cost", "speed_tier": "speed", "quality_tier": "quality"}


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ---- the default backend -------------------------------------------------------------------


def _default_backend(b: _Builder) -> None:
    """`llm.backend` when the file names one; a registry's primary backend; else DiSE's ollama."""
    named = b.get(("llm", "backend"))
    if _text(named):
        b.default = b.block(named, ("llm", "backend"), _declared_type(b, named))
        b.put(("llm", "backend"), named, ("llm", "backend"))
        return
    registry = isinstance(b.get(("llm", "models")), dict)
    general = _registry_key(b, ("llm", "defaults", "general")) if registry else None
    where: KeyPath | None = None
    if general is not None:
        b.default = _registry_target(b, general)[1]
        where = ("llm", "models", general, "backend") if b.get(("llm", "models", general, "backend")) else ("llm", "defaults", "general")
        why = f"DiSE's primary backend: that of llm.defaults.general ({general})"
    elif registry and b.get(("llm", "backends", "anthropic", "enabled")) is True:
        b.default, why = "anthropic", "DiSE's primary backend: anthropic, as it is enabled"
    else:
        why = "the file names no backend; DiSE's default"
    b.block(b.default, where, _declared_type(b, b.default))
    b.put(("llm", "backend"), b.default, None, why)


def _declared_type(b: _Builder, name: str) -> str | None:
    """The `type:` a block of this name declares, where DiSE files put blocks."""
    for path in (("llm", name, "type"), ("llm", "backends", name, "type")):
        if _text(b.get(path)):
            return str(b.get(path))
    return None


# ---- the model registry --------------------------------------------------------------------


def _registry(b: _Builder) -> None:
    """`llm.models` with `defaults`, `roles`, `backends`: every (role, level) DiSE can ask for."""
    registry = b.get(("llm", "models"))
    if not isinstance(registry, dict):
        return
    for key in registry:
        _registry_entry(b, str(key))
    defaults = b.section(("llm", "defaults"))
    roles = b.section(("llm", "roles"))
    for level in defaults:
        if level not in LEVELS:
            b.drop(("llm", "defaults", level), f"DiSE reads only the levels {', '.join(LEVELS)} from llm.defaults")
    for role, overrides in roles.items():
        _role_overrides(b, str(role), overrides)
    for role in ("default", *[str(r) for r in roles if r != "default"]):
        for level in LEVELS:
            _registry_role(b, level if role == "default" else f"{role}.{level}", role, level)
    for name, (role, level) in NAMED_ROLES.items():
        _registry_role(b, name, role, level)
    _registry_backends(b)


def _registry_entry(b: _Builder, key: str) -> None:
    """A registry model: a dse role named by its key, on its backend, and its selector facts."""
    path: KeyPath = ("llm", "models", key)
    entry = b.get(path)
    if not isinstance(entry, dict) or not _text(entry.get("name")):
        b.drop(path, "a registry entry needs a `name` (the model): which model this is is unknown")
        return
    name, backend = _registry_target(b, key)
    b.block(backend, (*path, "backend") if "backend" in entry else path)
    if "backend" in entry:
        b.record((*path, "backend"), f"llm.{backend}", backend, f"the backend of {key}")
    if _tags(entry.get("specialization")) == ["embedding"]:
        _registry_embedding(b, key, name, backend)
    else:
        b.put(("llm", backend, "models", key), name, (*path, "name"), "the registry key, as a role")
    for field_name, value in entry.items():
        src = (*path, field_name)
        if field_name in _DESCRIBED:
            b.describe(name, _DESCRIBED[field_name], value, src)
        elif field_name == "timeout":
            b.timeout(backend, value, src)


def _registry_embedding(b: _Builder, key: str, name: str, backend: str) -> None:
    """An embedding model is no chat role: a selector could otherwise send prose to it."""
    src: KeyPath = ("llm", "models", key, "name")
    if b.get(("llm", "embedding", "default")) == key:
        b.record(src, f"llm.{backend}.embedding_model", name, "the embedding model (llm.embedding.default)")
    else:
        b.drop(src, "an embedding model other than llm.embedding.default: dse has one embedding model per backend")


def _registry_key(b: _Builder, path: KeyPath) -> str | None:
    value = b.get(path)
    return value if _text(value) else None


def _registry_target(b: _Builder, key: str) -> tuple[str, str]:
    """(model, backend) DiSE uses for a registry key; an unknown key is itself a model on ollama."""
    entry = b.get(("llm", "models", key))
    if isinstance(entry, dict) and _text(entry.get("name")):
        backend = entry.get("backend", _DISE_DEFAULT_BACKEND)
        return str(entry["name"]), str(backend)
    return key, _DISE_DEFAULT_BACKEND


def _role_overrides(b: _Builder, role: str, overrides: Any) -> None:
    """An empty role inherits every level; keys that are not levels DiSE never looks up."""
    path: KeyPath = ("llm", "roles", role)
    if overrides is None:
        target = f"roles {role}.<level>" if role != "default" else "roles <level>"
        b.record(path, target, None, "inherits every level from llm.defaults")
    elif not isinstance(overrides, dict):
        b.drop(path, f"expected a mapping of levels to registry keys, got {overrides!r}")
    else:
        for level in overrides:
            if level not in LEVELS:
                b.drop((*path, level), f"not a level DiSE looks up ({', '.join(LEVELS)})")


def _registry_role(b: _Builder, dse_role: str, role: str, level: str) -> None:
    """What `get_model(role, level)` returns, as a dse role on the model's backend."""
    override: KeyPath = ("llm", "roles", role, level)
    fallback: KeyPath = ("llm", "defaults", level)
    src = override if _registry_key(b, override) else fallback if _registry_key(b, fallback) else None
    if src is None:
        return
    key = str(b.get(src))
    model, backend = _registry_target(b, key)
    notes = [f"DiSE's get_model({role!r}, {level!r}) = {key}"]
    if not isinstance(b.get(("llm", "models", key)), dict):
        notes.append("not in llm.models, so DiSE uses the key as the model name on ollama")
    if backend != b.default:
        notes.append(f"on {backend}, not the default {b.default}: say `backend: {backend}` where you use it")
    b.block(backend, src)
    b.put(("llm", backend, "models", dse_role), model, src, "; ".join(notes))


def _registry_backends(b: _Builder) -> None:
    for name, settings in b.section(("llm", "backends")).items():
        path: KeyPath = ("llm", "backends", str(name))
        if not isinstance(settings, dict):
            b.drop(path, f"expected a mapping, got {settings!r}")
            continue
        backend = b.block(str(name), path, settings.get("type") if _text(settings.get("type")) else None)
        _block_settings(b, backend, path, settings)


def _block_settings(b: _Builder, backend: str, path: KeyPath, settings: Mapping[str, Any]) -> None:
    """The keys a DiSE backend block shares with dse's: copied; `timeout` joins the longest-wins rule."""
    for key, value in settings.items():
        src = (*path, key)
        if key == "type":
            b.record(src, f"llm.{backend}.type", value)
        elif key in _SIMPLE_BLOCK_KEYS:
            _simple(b, backend, key, value, src)
        elif key == "timeout":
            b.timeout(backend, value, src)


def _simple(b: _Builder, backend: str, key: str, value: Any, src: KeyPath) -> None:
    """A scalar backend setting, checked so that the written config loads: text, a flag, a callable URL."""
    ok = isinstance(value, bool) if key == "enabled" else value is None or isinstance(value, str)
    if not ok:
        b.drop(src, f"expected {'true or false' if key == 'enabled' else 'text'}, got {value!r}")
        return
    if key in ("base_url", "endpoint") and value is not None and (problem := _url_problem(value)):
        b.drop(src, f"not a URL dse can call: {problem}")
        return
    literal = key == "api_key" and isinstance(value, str) and "${" not in value
    b.put(("llm", backend, key), value, src, "a literal key: better `${VAR}`" if literal else "")


# ---- model_roles ---------------------------------------------------------------------------


def _model_roles(b: _Builder) -> None:
    """`llm.model_roles` on `llm.backend`, with its `api_settings` and `model_timeouts`."""
    for role, model in b.section(("llm", "model_roles")).items():
        src: KeyPath = ("llm", "model_roles", role)
        if b.used(src):
            continue
        if _text(model):
            b.put(("llm", b.default, "models", str(role)), model, src, f"on llm.backend {b.default}")
        else:
            b.drop(src, f"no model for this role ({model!r})")
    _api_settings(b)
    for model, seconds in b.section(("llm", "model_timeouts")).items():
        b.timeout(b.default, seconds, ("llm", "model_timeouts", model))


def _api_settings(b: _Builder) -> None:
    """`api_settings` are the selected backend's: its timeout and address, every call's sampling defaults."""
    azure = b.kind(b.default) == "azure"
    for key, value in b.section(("llm", "api_settings")).items():
        src: KeyPath = ("llm", "api_settings", key)
        if key == "timeout":
            b.timeout(b.default, value, src)
        elif key == "endpoint" and _text(value):
            _simple(b, b.default, "endpoint" if azure else "base_url", value, src)
        elif key == "api_version" and azure and _text(value):
            b.put(("llm", b.default, "api_version"), value, src)
        elif key in ("max_tokens", "temperature"):
            _global_default(b, key, value, src)


def _global_default(b: _Builder, key: str, value: Any, src: KeyPath) -> None:
    """One `llm.global_defaults` key, if its value is one dse accepts; a named backend must exist."""
    number = _number(value)
    valid = number is not None and (
        (key == "max_tokens" and isinstance(value, int) and value >= 1)
        or (key == "temperature" and 0 <= number <= 2)
        or (key == "timeout" and number > 0)
    )
    if key in ("default_backend", "default_embedding_backend"):
        valid = value is None or (_text(value) and bool(b.block(value, src, _declared_type(b, value))))
    if valid:
        b.put(("llm", "global_defaults", key), value, src)
    else:
        b.drop(src, f"not a valid {key}: {value!r}")


# ---- model_tiers ---------------------------------------------------------------------------


def _tiers(b: _Builder) -> None:
    """`model_tiers` as `category.tier` roles on `llm.backend`, and the roles `role_to_tier_mapping` names."""
    for category in b.section(("model_tiers",)):
        for tier in b.section(("model_tiers", category)):
            _tier(b, str(category), str(tier))
    for role, ref in b.section(("role_to_tier_mapping",)).items():
        _tier_role(b, str(role), ref)


def _tier(b: _Builder, category: str, tier: str) -> None:
    path: KeyPath = ("model_tiers", category, tier)
    settings = b.section(path)
    model = settings.get("model")
    if not _text(model):
        b.drop(path, "a tier needs a `model`")
        return
    role = f"{category}.{tier}"
    b.put(("llm", b.default, "models", role), model, (*path, "model"), f"tier {role}, on {b.default}")
    for key, value in settings.items():
        if key in _DESCRIBED:
            b.describe(str(model), _DESCRIBED[key], value, (*path, key))
        elif key == "timeout":
            b.timeout(b.default, value, (*path, key))


def _tier_role(b: _Builder, role: str, ref: Any) -> None:
    src: KeyPath = ("role_to_tier_mapping", role)
    category, _, tier = str(ref).partition(".")
    model = b.get(("model_tiers", category, tier, "model"))
    if not _text(model):
        b.drop(src, f"{ref!r} names no tier in model_tiers")
        return
    b.put(("llm", b.default, "models", role), model, src, f"tier {ref}")


# ---- guide-style llm.<backend> blocks and llm-wide settings --------------------------------


def _blocks(b: _Builder) -> None:
    """Guide-style `llm.<backend>` blocks and the llm-wide keys beside them."""
    llm = b.section(("llm",))
    for name, settings in llm.items():
        if _is_block(name, settings):
            _guide_block(b, str(name), settings)
    if "fallback_backends" in llm:
        _fallbacks(b, llm["fallback_backends"])
    for key, value in b.section(("llm", "global_defaults")).items():
        if key in _GLOBAL_DEFAULT_KEYS:
            _global_default(b, key, value, ("llm", "global_defaults", key))
    if _text(llm.get("base_url")):
        _simple(b, b.default, "base_url", llm["base_url"], ("llm", "base_url"))


def _guide_block(b: _Builder, name: str, settings: Mapping[str, Any]) -> None:
    path: KeyPath = ("llm", name)
    backend = b.block(name, path, str(settings.get("type", name)))
    _block_settings(b, backend, path, settings)
    for role, model in _mapping(settings.get("models")).items():
        if _text(model):
            b.put(("llm", backend, "models", str(role)), model, (*path, "models", role))
    for model, window in _mapping(settings.get("context_windows")).items():
        _block_window(b, backend, str(model), window, (*path, "context_windows", model))
    for role, deployment in _mapping(settings.get("deployments")).items():
        _deployment(b, backend, str(role), deployment, (*path, "deployments", role))
    if _endpoint_lists(settings.get("endpoints")):
        b.put(("llm", backend, "endpoints"), settings["endpoints"], (*path, "endpoints"))
    elif "endpoints" in settings:
        b.drop((*path, "endpoints"), "expected a list of URLs, or role to a list of URLs")


def _url_problem(url: Any) -> str | None:
    """Why dse could not call `url`; one built from `${VAR}` is checked when dse loads it, as dse does."""
    return None if isinstance(url, str) and "${" in url else url_problem(url)


def _endpoint_lists(value: Any) -> bool:
    """The guide's `endpoints`: a list of URLs, or role to such a list."""
    lists = value.values() if isinstance(value, dict) else [value]
    return all(isinstance(urls, list) and urls and not any(map(_url_problem, urls)) for urls in lists)


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _block_window(b: _Builder, backend: str, model: str, window: Any, src: KeyPath) -> None:
    if model == "default":
        b.drop(src, _NO_DEFAULT_WINDOW)
        return
    value = _window(window)
    if isinstance(value, str):
        b.drop(src, value)
    else:
        b.put(("llm", backend, "context_windows", model), value, src)


def _deployment(b: _Builder, backend: str, role: str, deployment: Any, src: KeyPath) -> None:
    """Azure addresses deployments; DiSE's files write a deployment's name where dse wants `{deployment: NAME}`."""
    if _text(deployment):
        b.put(("llm", backend, "deployments", role), {"deployment": deployment}, src)
    elif isinstance(deployment, dict) and _text(deployment.get("deployment")):
        kept = {k: v for k, v in deployment.items() if k in _DEPLOYMENT_KEYS and _text(v)}
        b.put(("llm", backend, "deployments", role), kept, src)
        for key in deployment:
            if key not in kept:
                b.drop((*src, key), "not a deployment setting dse has")


def _fallbacks(b: _Builder, names: Any) -> None:
    src: KeyPath = ("llm", "fallback_backends")
    if not isinstance(names, list) or not all(_text(n) for n in names):
        b.drop(src, f"expected a list of backend names, got {names!r}")
        return
    for name in names:
        b.block(str(name), src)
    b.put(("llm", "fallback_backends"), list(dict.fromkeys(names)), src)


# ---- the top-level ollama block ------------------------------------------------------------


def _ollama_block(b: _Builder) -> None:
    """DiSE's first layout: a top-level `ollama:` block; its roles run on `llm.backend`."""
    block = b.section(("ollama",))
    if not block:
        return
    b.block("ollama", ("ollama",))
    if "base_url" in block:
        _simple(b, "ollama", "base_url", block["base_url"], ("ollama", "base_url"))
    for role, entry in b.section(("ollama", "models")).items():
        if not b.used(("ollama", "models", role)):
            _legacy_role(b, str(role), entry, ("ollama", "models", role))
    for model, window in b.section(("ollama", "context_windows")).items():
        _window_anywhere(b, str(model), window, ("ollama", "context_windows", model))


def _legacy_role(b: _Builder, role: str, entry: Any, src: KeyPath) -> None:
    """`ollama.models.<role>`: a name, `{model, endpoint(s)}`, or (the evaluator) one per type."""
    if _text(entry):
        b.put(("llm", b.default, "models", role), entry, src, f"DiSE calls llm.backend, {b.default}")
    elif isinstance(entry, dict) and "model" in entry:
        _legacy_entry(b, role, entry, src)
    elif isinstance(entry, dict):
        for kind, sub in entry.items():
            _legacy_role(b, role if kind == "default" else f"{role}.{kind}", sub, (*src, kind))
    else:
        b.drop(src, f"expected a model name or {{model: NAME}}, got {entry!r}")


def _legacy_entry(b: _Builder, role: str, entry: Mapping[str, Any], src: KeyPath) -> None:
    """`{model, backend, endpoint | endpoints}`; a null endpoint is the base URL (`_parse_model_config`)."""
    model = entry["model"]
    if not _text(model):
        b.drop((*src, "model"), f"expected a model name, got {model!r}")
        return
    b.put(("llm", b.default, "models", role), model, (*src, "model"), f"DiSE calls llm.backend, {b.default}")
    named = entry.get("backend")
    if named is not None and named == b.default:
        b.record((*src, "backend"), f"llm.{b.default}", named)
    elif named is not None:
        b.drop((*src, "backend"), f"DiSE ignores it: the call goes to llm.backend, {b.default}")
    urls = entry.get("endpoints", [entry.get("endpoint")])
    key = "endpoints" if "endpoints" in entry else "endpoint"
    if not isinstance(urls, list) or any(u is not None and _url_problem(u) for u in urls):
        b.drop((*src, key), f"expected URLs, got {urls!r}")
    elif all(u is None for u in urls):
        b.record((*src, key), f"llm.{b.default}", None, "null: calls go to the backend's base URL")
    else:
        base = b.get(("ollama", "base_url")) or "http://localhost:11434"
        b.put(("llm", b.default, "endpoints", role), list(dict.fromkeys(u or base for u in urls)), (*src, key))


def _window_anywhere(b: _Builder, model: str, window: Any, src: KeyPath) -> None:
    """DiSE keeps one window per model name for every backend: the selector's table is the same."""
    if model == "default":
        b.drop(src, _NO_DEFAULT_WINDOW)
    else:
        b.describe(model, "context_window", window, src)


def _top_context_windows(b: _Builder) -> None:
    for model, window in b.section(("context_windows",)).items():
        _window_anywhere(b, str(model), window, ("context_windows", model))


# ---- embeddings ----------------------------------------------------------------------------


def _embeddings(b: _Builder) -> None:
    """The first embedding setting DiSE would read wins; the others are dropped naming it."""
    winner: KeyPath | None = None
    for src, backend, model in _embedding_sources(b):
        if winner is not None:
            b.drop(src, f"embeddings already come from {b.at(winner)}, which DiSE reads first")
        elif model is None:
            b.drop(src, "null: no embedding model here")
        elif EMBEDDINGS not in backend_type(b.kind(b.block(backend, src))).capabilities:
            b.drop(src, f"backend {backend} ({b.kind(backend)}) computes no embeddings in dse")
        else:
            winner = src
            b.put(("llm", backend, "embedding_model"), model, src)
            b.put(("llm", "global_defaults", "default_embedding_backend"), backend, src)


def _embedding_sources(b: _Builder) -> list[tuple[KeyPath, str, str | None]]:
    """(where, backend, model) for each place a DiSE file names its embedding model, DiSE's order first."""
    found: list[tuple[KeyPath, str, str | None]] = []
    key = b.get(("llm", "embedding", "default"))
    if key is not None:
        model, backend = _registry_target(b, str(key))
        found.append((("llm", "embedding", "default"), backend, model))
    top = b.get(("embedding",))
    if isinstance(top, dict) and "model" in top:
        found.append((("embedding", "model"), str(top.get("backend", _DISE_DEFAULT_BACKEND)), _name(top["model"])))
    legacy = b.get(("ollama", "models", "embedding"))
    if legacy is not None:
        named = legacy.get("model") if isinstance(legacy, dict) else legacy
        found.append((("ollama", "models", "embedding"), "ollama", _name(named)))
    block = b.get(("ollama", "embedding"))
    if isinstance(block, dict) and "model" in block:
        found.append((("ollama", "embedding", "model"), str(block.get("backend", "ollama")), _name(block["model"])))
    roles = b.get(("llm", "model_roles"))
    if isinstance(roles, dict) and "embedding" in roles:
        found.append((("llm", "model_roles", "embedding"), b.default, _name(roles["embedding"])))
    return found


def _name(value: Any) -> str | None:
    return value if _text(value) else None


def _embedding_extras(b: _Builder) -> None:
    """Settings beside an embedding model: its backend (used above), address and window."""
    for path in (("embedding",), ("ollama", "embedding")):
        section = b.get(path)
        if not isinstance(section, dict):
            continue
        backend = str(section.get("backend", _DISE_DEFAULT_BACKEND))
        if "backend" in section:
            b.record((*path, "backend"), f"llm.{backend}", backend, "the embedding backend")
        for key in ("base_url", "endpoint"):
            if _text(section.get(key)):
                _simple(b, b.block(backend, (*path, key)), "base_url", section[key], (*path, key))
            elif key in section and section[key] is None:
                b.record((*path, key), f"llm.{backend}", None, "null: calls go to the backend's base URL")
        if "context_window" in section and _text(section.get("model")):
            b.describe(str(section["model"]), "context_window", section["context_window"], (*path, "context_window"))


_STEPS: tuple[Callable[[_Builder], None], ...] = (
    _embeddings,
    _registry,
    _model_roles,
    _tiers,
    _blocks,
    _ollama_block,
    _top_context_windows,
    _embedding_extras,
)
