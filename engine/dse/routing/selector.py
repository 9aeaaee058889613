"""The weighted model selector behind `model: auto`, `select:` blocks and "use the best model".

Every (backend, model) candidate is scored on five criteria, each normalised to 0..1 and
weighted by the config's `model_selector.weights`; constraints filter candidates out first,
and every filtered candidate keeps the reason, so a user can always see why a model lost.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType

from .catalog import PRICE_TIERS, MeasuredSpeed, ModelInfo, lookup, price_tier

CRITERIA = ("context_window", "speed", "cost", "quality", "specialization")

_PRIMARY_WEIGHT = 100.0
_TIE_BREAK_WEIGHT = 1.0
_SPECIALIST_WEIGHT = 200.0
_CONTEXT_FLOOR = 1024
_TOKENS_PER_PAGE = 650
_TOKENS_PER_WORD = 1.35
_LONG_CONTEXT = 32768


@dataclass(frozen=True)
class Weights:
    """Relative importance of each criterion; only the proportions matter."""

    context_window: float = 30
    speed: float = 25
    cost: float = 15
    quality: float = 15
    specialization: float = 15

    def __post_init__(self) -> None:
        for name in CRITERIA:
            value = getattr(self, name)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not numeric or not math.isfinite(value) or value < 0:
                raise ValueError(f"weight {name} must be a finite number >= 0, not {value!r}")
        if self.total == 0:
            raise ValueError("at least one selector weight must be above 0")

    @property
    def total(self) -> float:
        return float(sum(getattr(self, name) for name in CRITERIA))

    @classmethod
    def for_criterion(cls, criterion: str, *, specialised: bool = False) -> Weights:
        """Weights for "the fastest / cheapest / best model".

        The named criterion gets 100 and the others 1 each, so the others only break ties: a
        0.5-point difference on the named criterion outweighs all four tie-breakers together.
        With `specialised`, a model with the needed specialization beats any model without it
        ("the best model for code"), and the criterion ranks within each group.
        """
        if criterion not in ("speed", "cost", "quality"):
            raise ValueError(f"criterion must be speed, cost or quality, not {criterion!r}")
        values = {name: _TIE_BREAK_WEIGHT for name in CRITERIA}
        values[criterion] = _PRIMARY_WEIGHT
        if specialised:
            values["specialization"] = _SPECIALIST_WEIGHT
        return cls(**values)


@dataclass(frozen=True)
class Candidate:
    """One (backend, model) the selector may choose; unavailable ones say why in `reason`."""

    backend: str
    backend_type: str
    model: str
    available: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Constraints:
    """Hard filters; a candidate failing any of them is rejected with the reason.

    `max_cost` is a tier name ("free", "low", "medium", "high": no pricier than that tier) or
    a number on the *price* scale, 0 (free) to 10 (most expensive), which is 10 minus the
    catalog's cheapness score, matching the workflow schema. `backends` and
    `exclude_backends` hold backend block names; an empty allow-list allows all.
    """

    max_cost: str | float | None = None
    min_speed: float | None = None
    min_context: int | None = None
    specialization: str | None = None
    backends: tuple[str, ...] = ()
    exclude_backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", tuple(self.backends))
        object.__setattr__(self, "exclude_backends", tuple(self.exclude_backends))
        if isinstance(self.max_cost, str) and self.max_cost not in PRICE_TIERS:
            raise ValueError(f"max_cost must be one of {', '.join(PRICE_TIERS)} or a number, not {self.max_cost!r}")
        if self.max_cost is not None and not isinstance(self.max_cost, str):
            _check_score("max_cost", self.max_cost)
        if self.min_speed is not None:
            _check_score("min_speed", self.min_speed)
        if self.min_context is not None and (
            isinstance(self.min_context, bool) or not isinstance(self.min_context, int) or self.min_context < 0
        ):
            raise ValueError(f"min_context must be a whole number of tokens, not {self.min_context!r}")


@dataclass(frozen=True)
class Ranked:
    """A scored candidate. `breakdown` holds each criterion's share of `score` (0..100).

    Rejected candidates have `rejected` set, a score of 0 and an empty breakdown.
    """

    candidate: Candidate
    info: ModelInfo
    score: float
    breakdown: Mapping[str, float]
    rejected: str = ""


def infer_needs(task: str) -> tuple[str | None, int | None]:
    """Guess the specialization a task needs and the context window it will fill.

    A size that will not fit a common window ("this 300 page document") makes the task
    long_context whatever else it asks for, since a model that cannot read it is useless.
    """
    text = task.lower()
    tokens = _size_in_tokens(text)
    if tokens is not None and tokens >= _LONG_CONTEXT:
        return "long_context", tokens
    if tokens is None and _LONG_HINT.search(text):
        return "long_context", _LONG_CONTEXT
    specialization = next((name for name, hint in _NEED_HINTS if hint.search(text)), None)
    return specialization, tokens


def rank(
    candidates: Sequence[Candidate],
    *,
    task: str | None = None,
    specialization: str | None = None,
    weights: Weights = Weights(),
    constraints: Constraints = Constraints(),
    top_k: int | None = 3,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    context_windows: Mapping[str, Mapping[str, int]] | None = None,
    measured: Mapping[tuple[str, str], MeasuredSpeed] | None = None,
) -> list[Ranked]:
    """Score the candidates that pass the constraints, best first.

    The need comes from `specialization`, else `constraints.specialization`, else the task
    text. Ties break by backend name, then model name, then input order. `measured` holds
    the speeds `dse bench` measured, by (backend, model): each is that candidate's speed.
    """
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, not {top_k}")
    described = _describe(candidates, overrides, context_windows, measured)
    eligible = [(i, c, info) for i, (c, info) in enumerate(described) if not _rejection(c, info, constraints)]
    if not eligible:
        return []
    inferred, needed_context = infer_needs(task) if task else (None, None)
    need = specialization or constraints.specialization or inferred
    cap = max(filter(None, (needed_context, constraints.min_context)), default=None)
    cap = cap or max(info.context_window for _, _, info in eligible)
    scored = [(_exact_parts(info, need, cap, weights), i, c, info) for i, c, info in eligible]
    scored.sort(key=lambda row: (-sum(row[0].values()), row[2].backend, row[2].model, row[1]))
    ranked = [_ranked(c, info, parts) for parts, _, c, info in scored]
    return ranked if top_k is None else ranked[:top_k]


def explain_rejections(
    candidates: Sequence[Candidate],
    *,
    constraints: Constraints = Constraints(),
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    context_windows: Mapping[str, Mapping[str, int]] | None = None,
    measured: Mapping[tuple[str, str], MeasuredSpeed] | None = None,
) -> list[Ranked]:
    """The candidates `rank` leaves out with the same arguments, each with every reason."""
    described = _describe(candidates, overrides, context_windows, measured)
    return [
        Ranked(candidate=c, info=info, score=0.0, breakdown=MappingProxyType({}), rejected=reason)
        for c, info in described
        if (reason := _rejection(c, info, constraints))
    ]


def _check_score(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
        raise ValueError(f"{name} must be a number from 0 to 10, not {value!r}")


def _describe(
    candidates: Sequence[Candidate],
    overrides: Mapping[str, Mapping[str, object]] | None,
    context_windows: Mapping[str, Mapping[str, int]] | None,
    measured: Mapping[tuple[str, str], MeasuredSpeed] | None,
) -> list[tuple[Candidate, ModelInfo]]:
    windows = context_windows or {}
    speeds = measured or {}
    return [
        (c, lookup(c.model, c.backend_type, overrides, windows.get(c.backend), speeds.get((c.backend, c.model))))
        for c in candidates
    ]


def _rejection(candidate: Candidate, info: ModelInfo, constraints: Constraints) -> str:
    """Every reason the candidate is filtered out, joined; empty when it may be ranked."""
    reasons = []
    if not candidate.available:
        reasons.append(f"unavailable: {candidate.reason}" if candidate.reason else "unavailable")
    if constraints.backends and candidate.backend not in constraints.backends:
        reasons.append(f"backend {candidate.backend} is not in backends ({', '.join(constraints.backends)})")
    if candidate.backend in constraints.exclude_backends:
        reasons.append(f"backend {candidate.backend} is in exclude_backends")
    reasons.extend(_limit_failures(info, constraints))
    return "; ".join(reasons)


def _limit_failures(info: ModelInfo, constraints: Constraints) -> list[str]:
    failures = []
    limit = constraints.max_cost
    if isinstance(limit, str) and PRICE_TIERS.index(price_tier(info)) > PRICE_TIERS.index(limit):
        failures.append(f"price tier {price_tier(info)} is above max_cost {limit}")
    elif limit is not None and not isinstance(limit, str) and 10 - info.cost > limit:
        failures.append(f"price {10 - info.cost:g}/10 is above max_cost {limit:g}")
    if constraints.min_speed is not None and info.speed < constraints.min_speed:
        failures.append(f"speed {info.speed:g} is below min_speed {constraints.min_speed:g}")
    if constraints.min_context is not None and info.context_window < constraints.min_context:
        failures.append(f"context window {info.context_window} is below min_context {constraints.min_context}")
    needed = constraints.specialization
    if needed is not None and needed not in info.specialization:
        has = ", ".join(info.specialization) or "none"
        failures.append(f"lacks specialization {needed} (has: {has})")
    return failures


def _exact_parts(info: ModelInfo, need: str | None, cap: int, weights: Weights) -> dict[str, Fraction]:
    """Each criterion's weighted share of the 0..100 score, as exact fractions.

    Exact arithmetic makes equal scores truly equal, so ties fall to the documented name
    order rather than to float rounding, and raising one weight can never reorder two
    candidates the wrong way through summation noise.
    """
    normalised = {
        "context_window": _context_score(info.context_window, cap),
        "speed": info.speed / 10,
        "cost": info.cost / 10,
        "quality": info.quality / 10,
        "specialization": _specialization_score(info, need),
    }
    total = sum((Fraction(getattr(weights, name)) for name in CRITERIA), Fraction(0))
    return {
        name: Fraction(getattr(weights, name)) * Fraction(normalised[name]) * 100 / total
        for name in CRITERIA
    }


def _ranked(candidate: Candidate, info: ModelInfo, parts: dict[str, Fraction]) -> Ranked:
    return Ranked(
        candidate=candidate,
        info=info,
        score=float(sum(parts.values())),
        breakdown=MappingProxyType({name: float(part) for name, part in parts.items()}),
    )


def _context_score(window: int, cap: int) -> float:
    """Log scale from 1k tokens (0) to the cap (1): doubling a small window matters more than a large one."""
    if cap <= _CONTEXT_FLOOR:
        return 1.0
    usable = min(max(window, _CONTEXT_FLOOR), cap)
    return math.log2(usable / _CONTEXT_FLOOR) / math.log2(cap / _CONTEXT_FLOOR)


def _specialization_score(info: ModelInfo, need: str | None) -> float:
    if need is None:
        return 0.5
    return 1.0 if need in info.specialization else 0.0


_COUNT = r"(\d{1,3}(?:,\d{3})+|\d{1,9})"
_SIZE_PATTERNS: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(rf"\b{_COUNT}\s*-?\s*pages?\b"), _TOKENS_PER_PAGE),
    (re.compile(rf"\b{_COUNT}\s*k\s*tokens?\b"), 1000.0),
    (re.compile(rf"\b{_COUNT}\s*tokens?\b"), 1.0),
    (re.compile(rf"\b{_COUNT}\s*k\s*words?\b"), 1000.0 * _TOKENS_PER_WORD),
    (re.compile(rf"\b{_COUNT}\s*words?\b"), _TOKENS_PER_WORD),
)
_LONG_HINT = re.compile(
    r"\blong[\s_-]+(?:context|documents?|texts?|inputs?|files?|transcripts?)\b"
    r"|\b(?:entire|whole) (?:codebase|repository|book)\b|\b(?:this|the) (?:book|manuscript|thesis)\b"
)
_NEED_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "code",
        re.compile(
            r"\b(?:code|coding|coder|program(?:s|ming)?|functions?|class(?:es)?|method|script"
            r"|python|javascript|typescript|java|rust|golang|sql|regex|refactor\w*|debug\w*|bugs?"
            r"|unit tests?|type hints|compile[sr]?|api client|diff)\b|c\+\+"
        ),
    ),
    ("summarization", re.compile(r"\bsummar\w*|\btl;?dr\b|\bcondense\b|\bdigest\b|\bkey points\b")),
    (
        "reasoning",
        re.compile(
            r"\breason\w*|\banaly[sz]\w*|\bmath\w*|\bproofs?\b|\bprove\b|\blogic\w*|\bstep by step\b"
            r"|\bdeduc\w*|\bplan(?:ning)?\b"
        ),
    ),
    (
        "writing",
        re.compile(
            r"\bwriting\b|\bessays?\b|\bstor(?:y|ies)\b|\bpoems?\b|\barticles?\b|\bblog\b|\bprose\b"
            r"|\bcopy\s*writing\b|\bnovel\b"
        ),
    ),
    ("chat", re.compile(r"\bchat\w*|\bconversation\w*|\bdialogue\b|\bcustomer support\b|\bassistant\b")),
)


def _size_in_tokens(text: str) -> int | None:
    """Turn "300 page", "50k tokens" or "2,000 words" into an approximate token count."""
    for pattern, tokens_per_unit in _SIZE_PATTERNS:
        found = pattern.search(text)
        if found:
            return math.ceil(int(found.group(1).replace(",", "")) * tokens_per_unit)
    return None
