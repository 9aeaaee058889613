"""What the model selector knows about models: context window, speed, cost, quality, strengths.

The numbers are honest approximations on 0..10 scales, meant to rank candidates against each
other, not to benchmark them. A user's `model_selector.models` and a backend's
`context_windows` always win over them, and a model nobody describes still gets a labelled
guess from its name, so `model: auto` works with any model a server happens to host.

One figure can be better than a guess: the generation speed `dse bench` measured for a
(backend, model) on this machine. Where there is one, it is the speed score (see
`speed_score` for the scale), over the catalog, the config and the name.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..backends.registry import backend_types

PRICE_TIERS = ("free", "low", "medium", "high")

_OVERRIDE_NUMBERS = ("speed", "cost", "quality")
_HOSTED_OPEN_WEIGHTS_COST = 8.0
_SLOWEST_SCORED = 5.0  # tokens per second that score 0
_POINTS_PER_DOUBLING = 2.0

SPEED_SOURCES = ("catalog", "name", "config", "measured")


@dataclass(frozen=True)
class MeasuredSpeed:
    """The generation speed `dse bench` measured for one (backend, model), and when (epoch seconds)."""

    tokens_per_second: float
    measured_at: float


@dataclass(frozen=True)
class ModelInfo:
    """Selector-facing facts about one model; `known` is False when the numbers are a guess.

    `speed_source` says where `speed` came from (one of SPEED_SOURCES); `measured` holds the
    measurement when it came from `dse bench`.
    """

    name: str
    context_window: int
    speed: float
    cost: float
    quality: float
    specialization: tuple[str, ...]
    known: bool
    speed_source: str = "catalog"
    measured: MeasuredSpeed | None = None


def speed_origin(info: ModelInfo) -> str:
    """Where a speed score came from, in the words `dse select` and `dse plan --why` print after "speed: "."""
    if info.measured is not None:
        day = time.strftime("%Y-%m-%d", time.localtime(info.measured.measured_at))
        return f"measured {day}, {info.measured.tokens_per_second:.1f} tok/s"
    return {"config": "set in model_selector.models", "name": "estimated from the name"}.get(info.speed_source, "catalog estimate")


def speed_score(tokens_per_second: float) -> float:
    """A measured generation speed on the catalog's 0..10 speed scale: 2 points per doubling, 5 tok/s is 0.

    So 10 tok/s is 2, 20 is 4, 40 is 6, 80 is 8 and 160 or more is 10. The anchors put
    published speeds where the catalog already has those models (GPT-4 at about 20 tok/s
    scores 4, Llama 3 8B at about 45 on a consumer GPU 6.3, GPT-4o at about 80 scores 8), so a
    measured model and a catalog estimate compete on one scale; a log scale because doubling
    a slow model's speed matters more to a user than adding the same tokens to a fast one.
    """
    if tokens_per_second <= _SLOWEST_SCORED:
        return 0.0
    return min(10.0, _POINTS_PER_DOUBLING * math.log2(tokens_per_second / _SLOWEST_SCORED))


@dataclass(frozen=True)
class _Entry:
    """A catalog row. Open-weight models are free on local servers and cheap when hosted."""

    info: ModelInfo
    open_weights: bool
    aliases: tuple[str, ...] = ()


def _entry(
    name: str,
    context_window: int,
    speed: float,
    cost: float,
    quality: float,
    specialization: tuple[str, ...],
    *aliases: str,
    open_weights: bool = False,
) -> _Entry:
    info = ModelInfo(name, context_window, speed, cost, quality, specialization, known=True)
    return _Entry(info, open_weights, aliases)


def _open(
    name: str, context_window: int, speed: float, quality: float, specialization: tuple[str, ...], *aliases: str
) -> _Entry:
    return _entry(name, context_window, speed, 10.0, quality, specialization, *aliases, open_weights=True)


# Listed best first within a family: resolve_alias callers pass these names in this order.
_ENTRIES: tuple[_Entry, ...] = (
    _entry("gpt-4o", 128000, 8.0, 5.0, 9.0, ("code", "reasoning", "chat", "long_context")),
    _entry("gpt-4o-mini", 128000, 9.0, 8.5, 7.0, ("chat", "summarization", "long_context")),
    _entry("gpt-4-turbo", 128000, 6.0, 3.0, 9.0, ("code", "reasoning", "long_context"), "gpt-4-turbo-preview"),
    _entry("gpt-4", 8192, 4.0, 1.0, 8.5, ("code", "reasoning")),
    _entry("gpt-3.5-turbo", 16385, 9.0, 8.0, 6.0, ("chat", "summarization")),
    _entry("gpt-35-turbo", 16385, 9.0, 8.0, 6.0, ("chat", "summarization")),
    _entry(
        "claude-3-5-sonnet-20241022",
        200000, 7.0, 4.0, 9.5, ("code", "reasoning", "writing", "long_context"),
        "claude-3-5-sonnet", "claude-3.5-sonnet",
    ),
    _entry(
        "claude-3-opus-20240229",
        200000, 3.0, 1.0, 9.0, ("reasoning", "writing", "long_context"),
        "claude-3-opus",
    ),
    _entry(
        "claude-3-sonnet-20240229",
        200000, 6.0, 4.0, 7.5, ("writing", "long_context"),
        "claude-3-sonnet",
    ),
    _entry(
        "claude-3-haiku-20240307",
        200000, 9.0, 8.0, 6.0, ("chat", "summarization", "long_context"),
        "claude-3-haiku",
    ),
    _open("qwen2.5-coder:14b", 131072, 4.5, 7.5, ("code", "long_context")),
    _open("qwen2.5-coder", 32768, 6.0, 6.5, ("code",)),
    _open("codellama", 16384, 6.0, 5.0, ("code",)),
    _open("mistral-nemo", 131072, 5.0, 6.5, ("chat", "code", "long_context")),
    _open("llama3", 8192, 6.0, 6.0, ("chat", "reasoning"), "meta-llama-3-8b-instruct"),
    _open("llama3.2", 131072, 8.0, 4.5, ("chat", "summarization")),
    _open("llama2", 4096, 5.5, 4.0, ("chat",)),
    _open("mistral", 32768, 6.5, 5.0, ("chat",), "mistral-7b", "mistral-7b-instruct"),
    _open("phi-3.5-mini", 131072, 8.0, 5.0, ("reasoning", "long_context"), "phi3.5"),
    _open("phi", 2048, 8.5, 3.0, ("reasoning",), "phi-2"),
    _open("gemma2", 8192, 6.0, 6.0, ("chat",)),
    _open("gemma2:2b", 8192, 9.0, 3.5, ("chat",)),
    _open("tinyllama", 2048, 9.5, 2.0, ("chat",)),
    _open("smollm2", 8192, 10.0, 1.5, ("chat",), "smollm2:135m", "smollm2-135m", "smollm2-135m-instruct"),
)

_BY_KEY: Mapping[str, _Entry] = {
    key: entry for entry in _ENTRIES for key in (entry.info.name, *entry.aliases)
}


def known_models() -> tuple[str, ...]:
    """Names in the built-in catalog, best first within each family."""
    return tuple(entry.info.name for entry in _ENTRIES)


def catalog_name(model: str) -> str | None:
    """The catalog's own name for `model` spelt as one of its aliases, in any case, with a vendor prefix or `-latest`; else None.

    Unlike `lookup`, a dated snapshot is not taken for its family: "gpt-4o-2024-05-13" is not
    "gpt-4o", and is not priced as it.
    """
    name = _without_provider(model.strip().lower())
    entry = _BY_KEY.get(name) or _BY_KEY.get(re.sub(r"[:\-]latest$", "", name))
    return entry.info.name if entry is not None else None


def is_local(backend_type: str) -> bool:
    """Local servers run open weights on the user's hardware, so calls cost nothing."""
    kind = backend_types().get(backend_type.lower())
    return kind is not None and kind.local


def lookup(
    model: str,
    backend_type: str,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    context_windows: Mapping[str, int] | None = None,
    measured: MeasuredSpeed | None = None,
) -> ModelInfo:
    """Describe a model as served by a backend of this type.

    Order: `measured` (what `dse bench` measured for this backend and model) for the speed,
    `context_windows` (the backend's own config) for the window, `overrides` (the config's
    model_selector.models) for everything else, then the catalog by exact then normalised
    name, then a guess from the name and backend type.
    """
    keys = _match_keys(model)
    base = _catalog_info(keys, backend_type) or _guess(model, keys[-1], backend_type)
    override = _find(keys, overrides)
    window = _find(keys, context_windows)
    info = replace(base, name=model)
    if override is not None:
        info = _apply_override(info, model, override)
    if window is not None:
        info = replace(info, context_window=_window(model, window))
    if measured is not None:
        info = replace(info, speed=speed_score(measured.tokens_per_second), speed_source="measured", measured=measured)
    guessed = not base.known and not _covers(override, window)
    return replace(info, known=not guessed)


def price_tier(info: ModelInfo) -> str:
    """Bucket the 0..10 cheapness score into the tiers users write in `max_cost`."""
    if info.cost >= 9.5:
        return "free"
    if info.cost >= 7.0:
        return "low"
    if info.cost >= 4.0:
        return "medium"
    return "high"


def resolve_alias(alias: str, names: Iterable[str]) -> str | None:
    """Pick the name among `names` that a family alias ("opus", "gpt-4", "sonnet") means.

    Exact beats normalised-equal beats a whole-token match at the start of the name beats one
    anywhere in it; "gpt-4" never matches "gpt-4o" because "4" and "4o" are different tokens.
    Ties go to the earlier name, so callers list their preferred names first.
    """
    wanted = alias.strip().lower()
    pool = list(dict.fromkeys(names))
    if not wanted:
        return None
    tiers = (
        lambda name: name.lower() == wanted,
        lambda name: wanted in _match_keys(name),
        lambda name: _token_match(wanted, name, anywhere=False),
        lambda name: _token_match(wanted, name, anywhere=True),
    )
    for matches in tiers:
        found = next((name for name in pool if matches(name)), None)
        if found is not None:
            return found
    return None


def _match_keys(model: str) -> list[str]:
    """Ever looser spellings of a name, most specific first; the last one is the bare family."""
    name = model.strip().lower()
    keys = [name]
    name = _without_provider(name)
    keys.append(name)
    name = re.sub(r"[:\-]latest$", "", name)
    name = re.sub(r"(?:[.\-](?:gguf|q\d\w*|f16|fp16|bf16|awq|gptq))+$", "", name)
    keys.append(name)
    keys.append(re.sub(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|\d{4})$", "", name))
    keys.append(keys[-1].split(":", 1)[0])
    return list(dict.fromkeys(keys))


def _without_provider(name: str) -> str:
    """Drop "anthropic/" (OpenRouter, Hugging Face) or "ollama:" (dse's backend prefix)."""
    if "/" in name:
        return name.rsplit("/", 1)[1]
    if ":" in name and name.split(":", 1)[0] in backend_types():
        return name.split(":", 1)[1]
    return name


def _catalog_info(keys: list[str], backend_type: str) -> ModelInfo | None:
    entry = next((_BY_KEY[key] for key in keys if key in _BY_KEY), None)
    if entry is None:
        return None
    if entry.open_weights and not is_local(backend_type):
        return replace(entry.info, cost=_HOSTED_OPEN_WEIGHTS_COST)
    return entry.info


def _find(keys: list[str], table: Mapping[str, object] | None) -> object | None:
    """Find a config entry under any spelling of the name, so "llama3" also covers "llama3:latest"."""
    if not table:
        return None
    folded = {re.sub(r":latest$", "", str(key).strip().lower()): value for key, value in table.items()}
    return next((folded[key] for key in keys if key in folded), None)


def _covers(override: object | None, window: object | None) -> bool:
    """True when the user supplied every number, so nothing about the model is a guess."""
    given = set(override) if isinstance(override, Mapping) else set()
    return set(_OVERRIDE_NUMBERS) <= given and ("context_window" in given or window is not None)


def _apply_override(info: ModelInfo, model: str, override: object) -> ModelInfo:
    if not isinstance(override, Mapping):
        raise ValueError(f"model_selector.models.{model} must be a mapping, not {type(override).__name__}")
    changes: dict[str, Any] = {}
    for key, value in override.items():
        if key == "context_window":
            changes[key] = _window(model, value)
        elif key in _OVERRIDE_NUMBERS:
            changes[key] = _score(model, key, value)
            if key == "speed":
                changes["speed_source"] = "config"
        elif key == "specialization":
            changes[key] = _tags(model, value)
        else:
            raise ValueError(f"model_selector.models.{model}: unknown key {key!r}")
    return replace(info, **changes)


def _window(model: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"context window of {model} must be a positive integer, not {value!r}")
    return value


def _score(model: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
        raise ValueError(f"model_selector.models.{model}.{key} must be a number from 0 to 10, not {value!r}")
    return float(value)


def _tags(model: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(tag, str) for tag in value):
        return tuple(value)
    raise ValueError(f"model_selector.models.{model}.specialization must be a list of strings, not {value!r}")


_SIZE = re.compile(r"(?<![\w.])(?:\d+x)?(\d+(?:\.\d+)?)([bm])(?![a-z])")
_SIZE_CLASSES: tuple[tuple[float, float, float], ...] = (
    (1.0, 9.5, 2.0),
    (3.0, 9.0, 3.5),
    (8.0, 7.0, 5.5),
    (15.0, 5.5, 6.5),
    (35.0, 4.0, 7.5),
    (math.inf, 2.5, 8.5),
)
_SPECIALIZATION_HINTS: tuple[tuple[str, str], ...] = (
    ("code", r"cod(?:e|er|ing)|starcoder|devstral"),
    ("reasoning", r"reason|math|(?<![a-z])r1(?!\d)|qwq|think"),
    ("chat", r"chat|instruct"),
)


def _guess(model: str, family: str, backend_type: str) -> ModelInfo:
    """Estimate from the name: size tags set speed and quality, keywords set strengths."""
    speed, quality = _size_class(family, model.lower())
    context = re.search(r"(?<!\d)(\d{1,3})k(?![a-z])", model.lower())
    default_window = 4096 if is_local(backend_type) else 8192
    return ModelInfo(
        name=model,
        context_window=int(context.group(1)) * 1024 if context else default_window,
        speed=speed,
        cost=10.0 if is_local(backend_type) else 5.0,
        quality=quality,
        specialization=tuple(tag for tag, hint in _SPECIALIZATION_HINTS if re.search(hint, model.lower())),
        known=False,
        speed_source="name",
    )


def _size_class(family: str, name: str) -> tuple[float, float]:
    size = _SIZE.search(name)
    if size is None:
        if re.search(r"tiny|mini|small|nano", family):
            return 8.5, 3.5
        return 5.0, 5.0
    billions = float(size.group(1)) / (1000.0 if size.group(2) == "m" else 1.0)
    return next((speed, quality) for limit, speed, quality in _SIZE_CLASSES if billions <= limit)


def _token_match(wanted: str, name: str, *, anywhere: bool) -> bool:
    """Does `wanted` occur in `name` as whole tokens? Tried with "3.5" kept apart and joined."""
    bare = _without_provider(name.strip().lower())
    for split in (_tokens, _joined_tokens):
        needle, hay = split(wanted), split(bare)
        if not needle:
            continue
        starts = range(len(hay) - len(needle) + 1) if anywhere else range(1)
        if any(hay[i : i + len(needle)] == needle for i in starts):
            return True
    return False


def _tokens(name: str) -> list[str]:
    return [token for token in re.split(r"[\s\-:/_.]+", name) if token]


def _joined_tokens(name: str) -> list[str]:
    return _tokens(re.sub(r"(?<=\d)\.(?=\d)", "", name))
