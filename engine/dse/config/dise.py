"""What DiSE's own config files hold beyond the guide, and what each part means to dse.

DiSE users keep one `config.yaml` for all of DiSE: sections for its RAG store, logging, HTTP
server and so on sit beside `llm:` and `tools:`. Those sections are DiSE's business, so dse
names them in one warning and leaves them alone (their `${VAR}` are neither expanded nor
required). The tool fields DiSE documents mean what DiSE uses them for; the word scales here
turn its tiers and output lengths into what dse's selector and requests understand.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from ..errors import InputError, Location

# Top-level sections of DiSE's config files (mostlylucid.dse) that belong to other subsystems.
FOREIGN_SECTIONS = frozenset(
    {
        "auto_evolution",
        "bugcatcher",
        "build",
        "chat",
        "database",
        "execution",
        "filesystem",
        "fine_tuning",
        "git",
        "google",
        "http_server",
        "llmapi",
        "logging",
        "loki",
        "mcp_servers",
        "nodes",
        "optimization",
        "optimization_pressure",
        "pattern_recognizer",
        "performance",
        "quality_evaluation",
        "rag",
        "rag_memory",
        "registry",
        "style_extractor",
        "testing",
    }
)

# How much a tool's tier asks the selector to care about that criterion: its weight is scaled by this.
_STRONG, _SOME, _NEUTRAL, _LITTLE = 2.0, 1.5, 1.0, 0.5
TIER_WEIGHTS: Mapping[str, Mapping[str, float]] = {
    "cost": {
        "free": _STRONG, "very-low": _STRONG, "cheap": _STRONG, "low": _SOME, "medium": _NEUTRAL,
        "variable": _NEUTRAL, "high": _LITTLE, "very-high": _LITTLE, "highest": _LITTLE,
    },
    "speed": {
        "instant": _STRONG, "real-time": _STRONG, "realtime": _STRONG, "very-fast": _STRONG, "fast": _SOME,
        "medium": _NEUTRAL, "variable": _NEUTRAL, "slow": _LITTLE, "very-slow": _LITTLE,
    },
    "quality": {
        "god": _STRONG, "exceptional": _STRONG, "excellent": _STRONG, "very-good": _SOME, "good": _SOME,
        "general": _NEUTRAL, "escalation": _NEUTRAL, "fast": _LITTLE, "basic": _LITTLE,
    },
}

# `max_output_length` words as a token cap; "unlimited" sets none.
OUTPUT_TOKENS: Mapping[str, int | None] = {
    "short": 256, "medium": 1024, "long": 4096, "large": 8192, "very-long": 8192, "unlimited": None,
}

# Tool tags that name a selector specialization.
_TAG_SPECIALIZATIONS = (
    (re.compile(r"code|coding|programming|refactor"), "code"),
    (re.compile(r"summar"), "summarization"),
    (re.compile(r"writ|content|creative|article|blog|doc"), "writing"),
    (re.compile(r"reason|analy|logic|math|plan"), "reasoning"),
    (re.compile(r"long.?context|large.?(doc|input|file)"), "long_context"),
    (re.compile(r"chat|conversation|dialog"), "chat"),
)


def word(value: str) -> str:
    """DiSE writes `very_fast` and `very-fast` alike."""
    return value.strip().lower().replace("_", "-")


def specialization_of(tags: tuple[str, ...]) -> str | None:
    """The first selector specialization the tags name, in the order they are written."""
    for tag in tags:
        for pattern, specialization in _TAG_SPECIALIZATIONS:
            if pattern.search(tag.lower()):
                return specialization
    return None


def format_to_jinja(text: str, where: Location) -> str:
    """A DiSE template (`"Review: {code}"`, Python format syntax) as the Jinja dse renders.

    `{name}` becomes `{{ name }}`; `{{` and `}}` are literal braces in DiSE's syntax and stay
    literal; literal text that looks like Jinja is fenced in `{% raw %}` so it is sent as written.
    """
    out: list[str] = []
    literal = ""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise InputError(f"not a valid DiSE template: {exc}", location=where, hint="write {name} for a value, {{ and }} for braces") from None
    for piece, field, spec, conversion in parts:
        literal += piece
        if field is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field) or spec or conversion:
            raise InputError(
                f"DiSE template field {{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} is not supported",
                location=where,
                hint="use a plain {name}, or write the template as `prompt:` in Jinja",
            )
        if field in _JINJA_WORDS:
            raise InputError(
                f"DiSE template field {{{field}}} is a word of dse's Jinja templates, not a value",
                location=where,
                hint="name the value otherwise, or write the template as `prompt:` in Jinja",
            )
        out += [_fenced(literal, before_field=True), f"{{{{ {field} }}}}"]
        literal = ""
    return "".join([*out, _fenced(literal)])


# Names Jinja reads as its own (literals, operators, globals): `{none}` would render "None", not a value.
_JINJA_WORDS = frozenset(
    {
        "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else",
        "self", "range", "dict", "cycler", "joiner", "namespace", "loop", "caller", "varargs", "kwargs",
    }
)


def _fenced(literal: str, *, before_field: bool = False) -> str:
    """Text that Jinja would read as its own syntax is kept as written.

    A `{` just before a field would open `{{{ name }}`, and an `{% endraw %}` in the text would
    end the fence early: the text is then fenced piece by piece around each `{%`.
    """
    if not (re.search(r"\{[{%#]|[}%#]\}", literal) or (before_field and literal.endswith("{"))):
        return literal
    if re.search(r"\{%[-+]?\s*endraw", literal):
        return '{{ "{%" }}'.join(f"{{% raw %}}{piece}{{% endraw %}}" if piece else "" for piece in literal.split("{%"))
    return f"{{% raw %}}{literal}{{% endraw %}}"


# Keys that only DiSE's other config layouts have, and what each layout is called.
_OTHER_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("llm", "models"), "model registry (llm.models)"),
    (("llm", "defaults"), "model registry (llm.defaults)"),
    (("llm", "roles"), "model registry (llm.roles)"),
    (("llm", "backends"), "model registry (llm.backends)"),
    (("llm", "model_roles"), "model_roles"),
    (("model_tiers",), "model_tiers"),
    (("role_to_tier_mapping",), "model_tiers (role_to_tier_mapping)"),
    (("context_windows",), "top-level context_windows"),
    (("embedding",), "top-level embedding"),
)


def other_layout(data: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """Where a config uses one of DiSE's layouts other than the guide's, and which: those are imported, not read."""
    for path, name in _OTHER_LAYOUTS:
        node: Any = data
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            return path, name
    legacy = data.get("ollama")
    if isinstance(legacy, Mapping):
        models = legacy.get("models")
        if isinstance(models, Mapping) and any(isinstance(v, Mapping) for v in models.values()):
            return ("ollama", "models"), "top-level ollama block with per-role settings"
        if "embedding" in legacy:
            return ("ollama", "embedding"), "top-level ollama block with per-role settings"
    return None
