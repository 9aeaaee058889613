"""Every backend type the engine knows, each declared once in the protocol module that speaks it.

A protocol module (any module of this package whose name has no leading underscore) declares
`TYPES`, a tuple of `BackendType`. Config loading, resolution, directives, the catalog, the
balancer, `dse status` and the schema all read these declarations, so adding a server type is
one module and its tests: no list elsewhere has to learn the new name.

Modules are found and imported on the first question, not at `import dse`, so `dse --help`
never pays for the SDK-facing adapters.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.model import BackendConfig
    from . import Backend

CHAT = "chat"
STREAM = "stream"
EMBEDDINGS = "embeddings"
CHAT_AND_STREAM = frozenset({CHAT, STREAM})
ALL_CAPABILITIES = frozenset({CHAT, STREAM, EMBEDDINGS})

# What a type's servers can hold an answer to (`types.JsonOutput`): a given JSON Schema, or
# any JSON object. A type that declares neither gets no constraint on the wire.
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
STRUCTURED = frozenset({JSON_SCHEMA, JSON_OBJECT})

# Optional request fields a type's adapter sends on (`types.ChatRequest`); the gateway refuses a
# client's field that the target's type does not take, rather than drop it unsaid.
TOP_P = "top_p"
SEED = "seed"
STOP = "stop"
TOOLS = "tools"
# The target's temperature: a type without it leaves the config's temperature unsent (Anthropic's
# API refuses one), and the gateway refuses a client's.
TEMPERATURE = "temperature"
REQUEST_FIELDS = frozenset({TEMPERATURE, TOP_P, SEED, STOP, TOOLS})

# Slots assumed per endpoint when neither the config nor the server says: a local server
# answers a few calls at once (llama-server and Ollama both default to 4); a cloud API scales
# on its side and says 429 when it does not.
LOCAL_SLOTS = 4
CLOUD_SLOTS = 64


@dataclass(frozen=True)
class BackendType:
    """What one backend type is: how to reach it, what it can do, and how to talk about it.

    `directive_words` are regular expressions for the words a user writes in a step ("use
    claude for this"); `model_pattern` matches bare model names only this vendor makes, so
    `model: claude-3-haiku` finds the Anthropic block without a prefix. `default_models` answers
    a role (None: any role) when a block lists no `models:`. `structured_output` says which JSON
    constraints (`JSON_SCHEMA`, `JSON_OBJECT`) the adapter may send; an answer is checked (and
    repaired once) whatever the server did. `request_fields` names the optional request fields
    (`TOP_P`, `SEED`, `STOP`, `TOOLS`) its adapter sends on.
    """

    name: str
    adapter: Callable[[BackendConfig], Backend]
    protocol: str
    local: bool
    default_url: str | None = None
    key_env: str | None = None
    url_env: str | None = None
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer "
    capabilities: frozenset[str] = ALL_CAPABILITIES
    sdk: str | None = None
    default_capacity: int | None = None
    start_hint: str | None = None
    pull_hint: str | None = None
    directive_words: tuple[str, ...] = ()
    model_pattern: str | None = None
    vendor: bool = False
    default_models: Mapping[str | None, str] = field(default_factory=dict)
    structured_output: frozenset[str] = frozenset()
    request_fields: frozenset[str] = REQUEST_FIELDS

    @property
    def slots(self) -> int:
        """Calls one endpoint takes at once when neither the config nor the server says."""
        if self.default_capacity is not None:
            return self.default_capacity
        return LOCAL_SLOTS if self.local else CLOUD_SLOTS

    def auth_headers(self, config: BackendConfig) -> dict[str, str]:
        """The backend's `headers:` plus its key in this type's header, for plain-HTTP requests."""
        key = config.api_key
        auth = {self.auth_header: f"{self.auth_scheme}{key.reveal()}"} if key else {}
        return {**config.headers, **auth}

    def makes(self, model: str) -> bool:
        return self.model_pattern is not None and re.match(self.model_pattern, model, re.I) is not None


@cache
def _registry() -> dict[str, BackendType]:
    """Import every protocol module of this package once and collect what each declares."""
    from . import __path__ as package_path

    found: dict[str, BackendType] = {}
    for module in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        declared: tuple[BackendType, ...] = getattr(importlib.import_module(f"{__package__}.{module.name}"), "TYPES", ())
        for kind in declared:
            if kind.name in found:
                raise RuntimeError(f"backend type {kind.name!r} is declared twice")
            found[kind.name] = kind
    return found


def backend_types() -> Mapping[str, BackendType]:
    """Every known type by name."""
    return _registry()


def type_names() -> tuple[str, ...]:
    return tuple(_registry())


def backend_type(name: str) -> BackendType:
    """The declaration of a type the schema already accepted; an unknown name is a bug, not bad input."""
    return _registry()[name]


def is_backend_type(name: str) -> bool:
    return name in _registry()


def vendor_of(model: str) -> str | None:
    """The type whose vendor makes a bare model name (`gpt-4o` -> openai), if exactly one does."""
    makers = [kind.name for kind in _registry().values() if kind.makes(model)]
    return makers[0] if len(makers) == 1 else None


def directive_words() -> tuple[tuple[str, str], ...]:
    """(pattern, type) for every word that names a type in a directive, longest pattern first."""
    words = [(word, kind.name) for kind in _registry().values() for word in kind.directive_words]
    return tuple(sorted(words, key=lambda pair: -len(pair[0])))
