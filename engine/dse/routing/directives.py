"""Natural-language routing directives written inside a step's text.

Users steer routing in prose ("use claude for this", "select the best model for code
generation"). Such a directive outranks every configured default, and it is cut out of the
text before the text reaches a model, so the model never reads routing chatter.

Only a phrase that opens the text, a line, a sentence or a clause counts: "Explain how to use
ollama in production." talks *about* Ollama and must not reroute the step. A phrase must also
end where a clause can end (punctuation, end of text, or a linking word such as "to", "and",
"for"), so "Use haiku form for the poem" and "Use local variables" are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..backends.registry import backend_type, directive_words, is_backend_type, vendor_of

_FLAGS = re.ASCII | re.IGNORECASE


@dataclass(frozen=True)
class Directive:
    """One routing directive found in a text, with the exact span it occupies."""

    phrase: str
    start: int
    end: int
    backend: str | None
    model: str | None
    criterion: str | None
    specialization: str | None


# Each backend type declares the words that name it; "local" names whichever local server is configured.
_BACKEND_WORDS: tuple[tuple[str, str], ...] = (*directive_words(), (r"local(?:ly[ \t]+hosted)?", "local"))

_CRITERION_WORDS: tuple[tuple[str, str], ...] = (
    (r"fastest|quickest|speediest|fast|quick|lowest[ \t-]latency", "speed"),
    (r"cheapest|cheap|least[ \t]+expensive|lowest[ \t-]cost|most[ \t]+affordable|free", "cost"),
    (
        r"best|top|smartest|strongest|most[ \t]+(?:capable|powerful|accurate|intelligent)"
        r"|highest[ \t-]quality|best[ \t-]quality",
        "quality",
    ),
)

_SPECIALIZATION_WORDS: tuple[tuple[str, str], ...] = (
    (
        r"code(?:[ \t]+(?:generation|review|completion|tasks?))?|coding|programming"
        r"|software(?:[ \t]+development)?",
        "code",
    ),
    (r"reasoning|analysis|analytics|logic|math(?:s|ematics)?", "reasoning"),
    (r"(?:creative[ \t]+)?writing|prose|copywriting|essays?", "writing"),
    (r"summari[sz]ation|summari[sz]ing|summaries|summary", "summarization"),
    (
        r"(?:long|large|big)[ \t-](?:documents?|context|inputs?|texts?|files?)",
        "long_context",
    ),
    (r"chat(?:ting)?|conversations?|dialogue", "chat"),
)


def _alternation(table: tuple[tuple[str, str], ...]) -> str:
    return "|".join(f"(?:{pattern})" for pattern, _ in table)


def _classify(word: str, table: tuple[tuple[str, str], ...]) -> str:
    """Map a matched word back to its meaning; the word came from this table's alternation."""
    return next(kind for pattern, kind in table if re.fullmatch(pattern, word, _FLAGS))


_MODEL_ID = (
    r"(?:(?:[a-z][\w-]*/)?"
    r"(?:gpt(?:-|[ \t])?\d[a-z0-9]*(?:[.:_-][a-z0-9]+)*"
    r"|claude(?:[.:_-][a-z0-9]+)+"
    r"|(?:codellama|tinyllama|llama|mistral|mixtral|qwen|gemma|phi|smollm|deepseek|starcoder)"
    r"(?:\d[a-z0-9]*)?(?:[.:_-][a-z0-9]+)*)"
    r"(?!\w)"
    r"|(?:opus|haiku|sonnet)(?![\w-]))"
)
_DETERMINER = r"(?:(?:the|my|our|your|a|an)[ \t]+)?"
_BACKEND = rf"(?P<backend>{_alternation(_BACKEND_WORDS)})(?![\w/]|-\w)"
_NOUN = (
    r"(?:settings|setup|config(?:uration)?|credentials|account|api[ \t]+keys?|keys?|api"
    r"|backend|provider|models?|llms?|server|instance|deployment|endpoint)(?!\w)"
)
_LINK_WORDS = (
    r"to|and|then|for|instead|here|now|please|so|if|when|but|because|as|while|use|using"
)
_FOLLOW = (
    r"(?:[ \t]*(?:[.,;:!?)\]\r\n]|\Z)"
    rf"|[ \t]+(?:{_LINK_WORDS})(?!\w)"
    r"|[ \t]+[-\u2013\u2014](?:[ \t]|\Z))"
)
# A clause may also stop before a trailer ("in this step") or a chained clause ("select ...").
_CLAUSE_END = rf"(?={_FOLLOW}|[ \t]+(?:on|in|select|choose|pick|prefer|switch|go)(?!\w))"

_ANCHOR = re.compile(r"(?:\A|\n|[.!?;:][ \t]+)[ \t]*", _FLAGS)
_VERB = re.compile(
    r"(?:please,?[ \t]+)?(?:use|using|select|choose|pick|prefer|switch[ \t]+to|go[ \t]+with)[ \t]+",
    _FLAGS,
)
_CONNECTOR = re.compile(r"(?:[ \t]*,[ \t]*|[ \t]+)(?:(?:and|then)[ \t]+)?", _FLAGS)
_CRITERION_CLAUSE = re.compile(
    rf"{_DETERMINER}(?P<criterion>{_alternation(_CRITERION_WORDS)})[ \t]+"
    rf"(?:{_BACKEND}[ \t]+)?(?:models?|llms?|backends?)(?!\w)(?:[ \t]+available)?"
    rf"(?:[ \t]+for[ \t]+(?P<specialization>{_alternation(_SPECIALIZATION_WORDS)})(?!\w))?"
    rf"{_CLAUSE_END}",
    _FLAGS,
)
_TARGET_CLAUSE = re.compile(
    rf"{_DETERMINER}(?:{_BACKEND}(?:(?:[ \t]+|:)(?P<model>{_MODEL_ID}))?"
    rf"|(?P<model_only>{_MODEL_ID}))(?:[ \t]+{_NOUN})?{_CLAUSE_END}",
    _FLAGS,
)
_TAIL = re.compile(
    r"(?:[ \t]+(?:for|on|in)[ \t]+this(?:[ \t]+(?:step|task|operation|analysis|one|request"
    r"|job|prompt|part|stage|question|query))?(?!\w))?"
    r"(?:[ \t]+(?:here|instead)(?!\w))?"
    rf"(?:,?[ \t]+please(?!\w))?(?={_FOLLOW})",
    _FLAGS,
)


@dataclass(frozen=True)
class _Clause:
    """One "use X" clause; `stated` says whether the user named the backend or we inferred it."""

    end: int
    backend: str | None
    stated: bool
    model: str | None
    criterion: str | None
    specialization: str | None


def find_directive(text: str) -> Directive | None:
    """Return the first directive that opens the text, a line, a sentence or a clause."""
    for anchor in _ANCHOR.finditer(text):
        directive = _directive_at(text, anchor.end())
        if directive is not None:
            return directive
    return None


def strip_directive(text: str, directive: Directive) -> str:
    """Cut the directive out and tidy the seam, so the rest reads as if it was never there.

    The punctuation or linking word that tied the phrase to the rest goes with it ("Use gpt-4
    to write a poem" -> "Write a poem"), and a line that held only the phrase disappears.
    """
    left = text[: directive.start].rstrip(" \t")
    right, continued = _drop_joint(text[directive.end :])
    if (not left or left.endswith("\n")) and right.startswith(("\r\n", "\n")):
        right = right[2:] if right.startswith("\r\n") else right[1:]
    if continued and directive.phrase[:1].isupper() and right[:1].islower() and right[:1].isascii():
        right = right[0].upper() + right[1:]
    if not right:
        return left.rstrip()
    if not left or left.endswith("\n") or right.startswith(("\r", "\n")):
        return left + right
    return f"{left} {right}"


_STOP = re.compile(r"[ \t]*[.!?]", _FLAGS)
_LINK = re.compile(
    r"[ \t]*(?:[,;:][ \t]*(?:(?:and|then|to)[ \t]+)?|(?:and|then|to)[ \t]+|[-\u2013\u2014][ \t]+)", _FLAGS
)


def _drop_joint(right: str) -> tuple[str, bool]:
    """Remove what linked the phrase to the rest; say whether the rest continued its sentence."""
    stop = _STOP.match(right)
    if stop:
        return right[stop.end() :].lstrip(" \t"), False
    link = _LINK.match(right)
    if link:
        return right[link.end() :].lstrip(" \t"), True
    return right.lstrip(" \t"), False


def _directive_at(text: str, start: int) -> Directive | None:
    """Match a directive at an anchor: one or more compatible clauses plus an optional trailer."""
    first = _clause_at(text, start)
    if first is None:
        return None
    chain = [first]
    while (following := _chained_clause(text, chain[-1].end)) is not None:
        merged = _merge(chain[-1], following)
        if merged is None:
            break
        chain.append(merged)
    for clause in reversed(chain):
        tail = _TAIL.match(text, clause.end)
        if tail is not None:
            end = tail.end()
            return Directive(
                phrase=text[start:end],
                start=start,
                end=end,
                backend=clause.backend,
                model=clause.model,
                criterion=clause.criterion,
                specialization=clause.specialization,
            )
    return None


def _chained_clause(text: str, pos: int) -> _Clause | None:
    connector = _CONNECTOR.match(text, pos)
    return _clause_at(text, connector.end()) if connector else None


def _clause_at(text: str, pos: int) -> _Clause | None:
    verb = _VERB.match(text, pos)
    if verb is None:
        return None
    criterion = _CRITERION_CLAUSE.match(text, verb.end())
    if criterion is not None:
        return _criterion_clause(criterion)
    target = _TARGET_CLAUSE.match(text, verb.end())
    return _target_clause(target) if target is not None else None


def _criterion_clause(match: re.Match[str]) -> _Clause:
    backend = match.group("backend")
    specialization = match.group("specialization")
    return _Clause(
        end=match.end(),
        backend=_classify(backend, _BACKEND_WORDS) if backend else None,
        stated=backend is not None,
        model=None,
        criterion=_classify(match.group("criterion"), _CRITERION_WORDS),
        specialization=_classify(specialization, _SPECIALIZATION_WORDS) if specialization else None,
    )


def _target_clause(match: re.Match[str]) -> _Clause:
    backend = match.group("backend")
    raw_model = match.group("model") or match.group("model_only")
    model = _canonical_model(raw_model) if raw_model else None
    stated = backend is not None
    return _Clause(
        end=match.end(),
        backend=_classify(backend, _BACKEND_WORDS) if stated else (vendor_of(model) if model else None),
        stated=stated,
        model=model,
        criterion=None,
        specialization=None,
    )


def _canonical_model(raw: str) -> str:
    """Lower-case, and spell GPT names the way OpenAI does ("GPT4o" and "gpt 4" -> "gpt-4o", "gpt-4")."""
    return re.sub(r"^gpt[ \t-]?(?=\d)", "gpt-", raw.lower())


class _Disagreement(Exception):
    """Two chained clauses name different things, so they are two directives, not one."""


def _merge(first: _Clause, second: _Clause) -> _Clause | None:
    """Combine "using my azure settings" + "use gpt-4"; None when the clauses disagree."""
    try:
        return _Clause(
            end=second.end,
            backend=_merged_backend(first, second),
            stated=first.stated or second.stated,
            model=_agree(first.model, second.model),
            criterion=_agree(first.criterion, second.criterion),
            specialization=_agree(first.specialization, second.specialization),
        )
    except _Disagreement:
        return None


def _agree(first: str | None, second: str | None) -> str | None:
    if first is None or second is None or first == second:
        return first if first is not None else second
    raise _Disagreement


def _merged_backend(first: _Clause, second: _Clause) -> str | None:
    """A stated host backend (azure, openrouter, ollama...) may serve a model another vendor makes."""
    try:
        return _agree(first.backend, second.backend)
    except _Disagreement:
        stated = [clause for clause in (first, second) if clause.stated]
        host = stated[0].backend if len(stated) == 1 else None
        if host is not None and not (is_backend_type(host) and backend_type(host).vendor):
            return stated[0].backend
        raise
