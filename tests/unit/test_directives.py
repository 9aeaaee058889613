"""Natural-language routing directives: recognition, spans, stripping and false positives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.routing.directives import Directive, find_directive, strip_directive


def _meaning(text: str) -> tuple[str | None, str | None, str | None, str | None]:
    found = find_directive(text)
    assert found is not None, text
    return found.backend, found.model, found.criterion, found.specialization


@pytest.mark.parametrize(
    ("text", "backend", "model", "criterion", "specialization"),
    [
        ("use claude for this", "anthropic", None, None, None),
        ("use gpt-4", "openai", "gpt-4", None, None),
        ("use gpt-4o", "openai", "gpt-4o", None, None),
        ("use gpt-4o-mini", "openai", "gpt-4o-mini", None, None),
        ("use anthropic opus", "anthropic", "opus", None, None),
        ("use haiku", "anthropic", "haiku", None, None),
        ("use sonnet", "anthropic", "sonnet", None, None),
        ("use my openai settings", "openai", None, None, None),
        ("use my openapi settings", "openai", None, None, None),
        ("use azure", "azure", None, None, None),
        ("use the local model", "local", None, None, None),
        ("use ollama", "ollama", None, None, None),
        ("use lm studio", "lmstudio", None, None, None),
        ("use lmstudio", "lmstudio", None, None, None),
        ("use openrouter", "openrouter", None, None, None),
        ("use vllm", "vllm", None, None, None),
        ("use llama.cpp", "llamacpp", None, None, None),
        ("use the fastest model", None, None, "speed", None),
        ("use the cheapest model", None, None, "cost", None),
        ("use the best model for code", None, None, "quality", "code"),
        ("select the best model for code generation", None, None, "quality", "code"),
        ("use the best model", None, None, "quality", None),
        ("Use Anthropic Claude for this analysis", "anthropic", None, None, None),
        ("Using my OpenAPI settings use gpt-4 for this operation", "openai", "gpt-4", None, None),
        ("Using my azure settings use gpt-4", "azure", "gpt-4", None, None),
        ("Use my azure settings, then please use gpt-4", "azure", "gpt-4", None, None),
        ("use openrouter and use claude-3.5-sonnet", "openrouter", "claude-3.5-sonnet", None, None),
        ("USE CLAUDE", "anthropic", None, None, None),
        ("use GPT 4 for this", "openai", "gpt-4", None, None),
        ("use ollama:llama3", "ollama", "llama3", None, None),
        ("use qwen2.5-coder:14b for this", None, "qwen2.5-coder:14b", None, None),
        ("use anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet", None, None),
        ("use claude-3-opus-20240229 here", "anthropic", "claude-3-opus-20240229", None, None),
        ("use the fastest local model for chat", "local", None, "speed", "chat"),
        ("choose the cheapest openai model", "openai", None, "cost", None),
    ],
)
def test_recognises_phrase(
    text: str, backend: str | None, model: str | None, criterion: str | None, specialization: str | None
) -> None:
    assert _meaning(text) == (backend, model, criterion, specialization)


@pytest.mark.parametrize(
    ("task", "specialization"),
    [
        ("code", "code"),
        ("coding", "code"),
        ("programming", "code"),
        ("reasoning", "reasoning"),
        ("analysis", "reasoning"),
        ("writing", "writing"),
        ("prose", "writing"),
        ("summarization", "summarization"),
        ("summaries", "summarization"),
        ("long documents", "long_context"),
        ("long context", "long_context"),
        ("chat", "chat"),
    ],
)
def test_best_model_for_each_specialization(task: str, specialization: str) -> None:
    assert _meaning(f"use the best model for {task}") == (None, None, "quality", specialization)


def test_whole_sentence_is_one_directive_with_its_span() -> None:
    text = "Using my OpenAPI settings use gpt-4 for this operation"
    found = find_directive(text)
    assert found == Directive(
        phrase=text, start=0, end=len(text), backend="openai", model="gpt-4", criterion=None, specialization=None
    )
    assert strip_directive(text, found) == ""


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("Please use claude for this step. Go.", "Please use claude for this step"),
        ("use gpt-4 for this task", "use gpt-4 for this task"),
        ("use ollama for this one!", "use ollama for this one"),
        ("Use claude for this, please. Go.", "Use claude for this, please"),
        ("Use azure for this analysis", "Use azure for this analysis"),
        ("use haiku in this step", "use haiku in this step"),
    ],
)
def test_please_and_for_this_belong_to_the_phrase(text: str, phrase: str) -> None:
    found = find_directive(text)
    assert found is not None and found.phrase == phrase


@pytest.mark.parametrize(
    ("text", "start", "phrase"),
    [
        ("Review the diff. Use claude for this.", 17, "Use claude for this"),
        ("Review the diff!  use ollama", 18, "use ollama"),
        ("Is it fine? Use gpt-4.", 12, "Use gpt-4"),
        ("Step one; use azure", 10, "use azure"),
        ("Note: use the local model.", 6, "use the local model"),
        ("Line one\n  use lm studio\nLine three", 11, "use lm studio"),
    ],
)
def test_offsets_point_at_the_phrase(text: str, start: int, phrase: str) -> None:
    found = find_directive(text)
    assert found is not None
    assert (found.start, found.end, found.phrase) == (start, start + len(phrase), phrase)
    assert text[found.start : found.end] == found.phrase


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("Use claude for this. Review the diff", "Review the diff"),
        ("Review the diff. Use claude for this.", "Review the diff."),
        ("Review the diff. Use claude for this. Then summarise.", "Review the diff. Then summarise."),
        ("Use gpt-4 to write a poem", "Write a poem"),
        ("Use claude, and review the diff", "Review the diff"),
        ("Use claude: review the diff", "Review the diff"),
        ("use claude, then review the diff", "review the diff"),
        ("Use claude for this. review", "review"),
        ("Intro\nUse claude for this.\nReview {{ diff }}", "Intro\nReview {{ diff }}"),
        ("Use claude for this.\nReview", "Review"),
        ("Review.\nUse claude.", "Review."),
        ("Using my OpenAPI settings use gpt-4 for this operation. Summarise it.", "Summarise it."),
        ("use claude", ""),
    ],
)
def test_strip_removes_phrase_and_tidies(text: str, stripped: str) -> None:
    found = find_directive(text)
    assert found is not None
    assert strip_directive(text, found) == stripped


@pytest.mark.parametrize(
    "text",
    [
        "Explain how to use ollama in production.",
        "We use azure at work",
        "Summarise why teams use claude for code review.",
        "Use haiku form for the poem.",
        "Use local variables instead of globals.",
        "Use OpenAPI spec files to generate the client.",
        "Use philosophy to argue the point.",
        "Use utf-8 everywhere.",
        "Select the rows where the user is active.",
        "Choose the best option for the customer.",
        "Pick the best one for the job.",
        "Use the model to predict churn.",
        "Refuse claude for this",
        "app.use claude",
        "",
        "use",
        "use the fastest",
    ],
)
def test_no_directive(text: str) -> None:
    assert find_directive(text) is None


def test_first_directive_wins() -> None:
    found = find_directive("Use claude. Then use gpt-4 for this. Use ollama.")
    assert found is not None and found.backend == "anthropic" and found.start == 0


def test_conflicting_clauses_are_not_merged() -> None:
    text = "Use claude, use gpt-4"
    found = find_directive(text)
    assert found is not None and (found.phrase, found.backend, found.model) == ("Use claude", "anthropic", None)
    rest = strip_directive(text, found)
    assert rest == "Use gpt-4"
    assert _meaning(rest) == ("openai", "gpt-4", None, None)


def test_gpt_4o_is_not_gpt_4() -> None:
    assert _meaning("Use gpt-4o for this")[1] == "gpt-4o"
    assert _meaning("Use GPT4o")[1] == "gpt-4o"
    assert _meaning("use gpt-4-turbo")[1] == "gpt-4-turbo"


_VERBS = ("use", "using", "select", "choose", "pick", "prefer", "switch", "go")
_FRAGMENTS = (
    "use", "Use", "using", "select", "please", "the", "my", "best", "fastest", "cheapest", "model",
    "for", "this", "step", "code", "claude", "anthropic", "opus", "haiku", "gpt-4", "gpt-4o", "openai",
    "openapi", "settings", "azure", "ollama", "local", "lm studio", "openrouter", "llama3",
    "qwen2.5-coder:14b", "to", "and", "then", "here", ".", ",", ";", ":", "!", "?", "\n", " ", "  ",
    "\t", "\r\n", "-", "/", "ſ", "K", "İ", "é", "\u2028", "\x85",
)
_TARGETS = (
    "claude", "gpt-4", "gpt-4o", "anthropic opus", "haiku", "openai settings", "openapi settings", "azure",
    "local model", "ollama", "ollama:llama3", "lm studio", "openrouter", "fastest model", "cheapest model",
    "best model for code", "best local model", "claude gpt-4", "haiku form", "azure use gpt-4", "model",
)
_directive_like = st.tuples(
    st.sampled_from(("", "please ", "Please, ")),
    st.sampled_from(("use ", "Use ", "using ", "select ", "USE ", "go with ")),
    st.sampled_from(("", "the ", "my ")),
    st.sampled_from(_TARGETS),
    st.sampled_from(("", " for this", " for this step", " here", ", please", " to", " and")),
).map("".join)
_sentences = st.lists(
    st.tuples(
        st.one_of(_directive_like, st.sampled_from(_FRAGMENTS), st.text(max_size=6)),
        st.sampled_from((". ", ".", "\n", ", ", " ", "; ", ": ", "! ", "? ", "", " - ")),
    ),
    max_size=8,
).map(lambda pairs: "".join(part + sep for part, sep in pairs))
_texts = st.one_of(
    st.text(max_size=80),
    _sentences,
    st.lists(st.sampled_from(_FRAGMENTS), max_size=25).map("".join),
)


@settings(max_examples=250, deadline=None)
@given(_texts)
def test_find_is_total_and_spans_are_exact(text: str) -> None:
    found = find_directive(text)
    if found is None:
        return
    assert 0 <= found.start < found.end <= len(text)
    assert text[found.start : found.end] == found.phrase
    assert found.phrase.strip() == found.phrase


@settings(max_examples=250, deadline=None)
@given(_texts)
def test_stripping_never_resurrects_the_removed_directive(text: str) -> None:
    """After stripping, any directive left is one that followed the removed phrase."""
    found = find_directive(text)
    if found is None:
        return
    stripped = strip_directive(text, found)
    assert len(stripped) < len(text)
    again = find_directive(stripped)
    if again is not None:
        assert again.start >= len(text[: found.start].rstrip(" \t"))
        assert again.phrase.lower() in text[found.end :].lower()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_text_without_a_verb_has_no_directive(text: str) -> None:
    if not any(verb in text.lower() for verb in _VERBS):
        assert find_directive(text) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60).filter(lambda t: not any(verb in t.lower() for verb in _VERBS)))
def test_directive_after_any_sentence_is_found_and_stripped(prefix: str) -> None:
    text = f"{prefix}. Use claude for this."
    found = find_directive(text)
    assert found is not None
    assert (found.start, found.phrase, found.backend) == (len(prefix) + 2, "Use claude for this", "anthropic")
    assert strip_directive(text, found) == f"{prefix}.".rstrip()
