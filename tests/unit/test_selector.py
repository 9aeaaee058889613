"""The model catalog and the weighted model selector."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.routing.catalog import (
    PRICE_TIERS,
    ModelInfo,
    is_local,
    known_models,
    lookup,
    price_tier,
    resolve_alias,
)
from dse.routing.selector import (
    CRITERIA,
    Candidate,
    Constraints,
    Weights,
    explain_rejections,
    infer_needs,
    rank,
)

OLLAMA = ("qwen2.5-coder:14b", "codellama", "llama3", "mistral-nemo", "tinyllama", "gemma2:2b")
OPENAI = ("gpt-4", "gpt-4o", "gpt-3.5-turbo")
ANTHROPIC = ("claude-3-5-sonnet-20241022", "claude-3-opus-20240229", "claude-3-haiku-20240307")

POOL = (
    *(Candidate("ollama", "ollama", m) for m in OLLAMA),
    Candidate("local", "llamacpp", "smollm2"),
    *(Candidate("openai", "openai", m) for m in OPENAI),
    *(Candidate("anthropic", "anthropic", m) for m in ANTHROPIC),
)


def _names(ranked: list) -> list[str]:
    return [r.candidate.model for r in ranked]


# --- catalog -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "backend_type", "window"),
    [
        ("gpt-4", "openai", 8192),
        ("gpt-4-turbo", "openai", 128000),
        ("gpt-4o", "openai", 128000),
        ("gpt-4o-mini", "openai", 128000),
        ("gpt-3.5-turbo", "openai", 16385),
        ("gpt-35-turbo", "azure", 16385),
        ("claude-3-5-sonnet-20241022", "anthropic", 200000),
        ("claude-3-opus-20240229", "anthropic", 200000),
        ("claude-3-haiku-20240307", "anthropic", 200000),
        ("anthropic/claude-3.5-sonnet", "openrouter", 200000),
        ("llama3", "ollama", 8192),
        ("llama2", "ollama", 4096),
        ("mistral", "ollama", 32768),
        ("mistral-nemo", "ollama", 131072),
        ("codellama", "ollama", 16384),
        ("qwen2.5-coder:14b", "ollama", 131072),
        ("tinyllama", "ollama", 2048),
        ("gemma2:2b", "ollama", 8192),
        ("smollm2", "llamacpp", 8192),
    ],
)
def test_catalog_knows_the_guide_models(model: str, backend_type: str, window: int) -> None:
    info = lookup(model, backend_type)
    assert info.known and info.name == model and info.context_window == window
    assert all(0 <= value <= 10 for value in (info.speed, info.cost, info.quality))


def test_catalog_numbers_are_ordered_sensibly() -> None:
    smollm2 = lookup("smollm2", "llamacpp")
    assert 2048 <= smollm2.context_window <= 8192 and smollm2.cost == 10 and smollm2.speed >= 9.5
    assert smollm2.quality < lookup("tinyllama", "ollama").quality < lookup("llama3", "ollama").quality
    assert lookup("claude-3-haiku-20240307", "anthropic").speed > lookup("claude-3-opus-20240229", "anthropic").speed
    assert lookup("gpt-4", "openai").cost < lookup("gpt-3.5-turbo", "openai").cost
    assert "code" in lookup("qwen2.5-coder:14b", "ollama").specialization
    assert "code" in lookup("codellama", "ollama").specialization
    assert "long_context" in lookup("mistral-nemo", "ollama").specialization
    assert set(OLLAMA + OPENAI + ANTHROPIC + ("smollm2",)) <= set(known_models())


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("ollama:llama3", "llama3"),
        ("llama3:latest", "llama3"),
        ("ollama:llama3:latest", "llama3"),
        ("qwen2.5-coder:7b", "qwen2.5-coder"),
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet-20241022"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
        ("claude-3-opus", "claude-3-opus-20240229"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4-0613", "gpt-4"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
        ("smollm2-135m-instruct-q8_0.gguf", "smollm2"),
        ("GPT-4", "gpt-4"),
    ],
)
def test_normalised_names_match_their_family(model: str, family: str) -> None:
    backend_type = "ollama" if "llama3" in model or "qwen" in model else "openai"
    got, want = lookup(model, backend_type), lookup(family, backend_type)
    assert got.known and got.name == model
    assert replace(got, name=family) == want


def test_exact_tag_beats_family() -> None:
    assert lookup("qwen2.5-coder:14b", "ollama").context_window == 131072
    assert lookup("qwen2.5-coder:7b", "ollama").context_window == 32768


def test_open_weights_are_free_locally_and_cheap_when_hosted() -> None:
    assert lookup("llama3", "ollama").cost == 10
    assert price_tier(lookup("llama3", "vllm")) == "free"
    hosted = lookup("llama3", "openrouter")
    assert hosted.cost < 10 and price_tier(hosted) == "low"
    assert lookup("gpt-4", "azure").cost == lookup("gpt-4", "openai").cost


def test_context_windows_config_wins_for_the_window() -> None:
    info = lookup("llama3:latest", "ollama", overrides={"llama3": {"context_window": 4000}}, context_windows={"llama3": 2000})
    assert info.context_window == 2000
    assert lookup("gpt-4", "openai", context_windows={"GPT-4": 32768}).context_window == 32768


def test_overrides_win_over_the_catalog() -> None:
    info = lookup("llama3", "ollama", overrides={"llama3": {"speed": 9, "quality": 2.5, "specialization": "code"}})
    assert (info.speed, info.quality, info.specialization, info.cost) == (9.0, 2.5, ("code",), 10.0)
    assert info.known


def test_overrides_describe_an_unknown_model_completely() -> None:
    numbers = {"speed": 3, "cost": 4, "quality": 9, "specialization": ["reasoning", "code"]}
    partial = lookup("house-model", "vllm", overrides={"house-model": numbers})
    assert not partial.known
    full = lookup("house-model", "vllm", overrides={"house-model": {**numbers, "context_window": 65536}})
    assert full == ModelInfo("house-model", 65536, 3.0, 4.0, 9.0, ("reasoning", "code"), known=True, speed_source="config")
    assert lookup("house-model", "vllm", overrides={"house-model": numbers}, context_windows={"house-model": 1}).known


@pytest.mark.parametrize(
    "override",
    [{"speed": 11}, {"cost": -1}, {"quality": "high"}, {"context_window": 0}, {"context_window": 1.5},
     {"specialization": 3}, {"colour": "blue"}, {"speed": True}],
)
def test_bad_overrides_are_rejected_with_the_model_named(override: dict) -> None:
    with pytest.raises(ValueError, match="llama3"):
        lookup("llama3", "ollama", overrides={"llama3": override})


def test_unknown_models_get_a_labelled_guess() -> None:
    coder = lookup("deepseek-coder-v2:16b", "ollama")
    assert not coder.known and "code" in coder.specialization and coder.cost == 10
    big, small = lookup("llama3.1:70b", "ollama"), lookup("llama3.2:1b", "ollama")
    assert big.quality > small.quality and big.speed < small.speed
    assert lookup("mystery-128k", "openai").context_window == 131072
    remote = lookup("mystery", "openai")
    assert not remote.known and remote.cost < 10
    for backend_type in ("ollama", "llamacpp", "lmstudio", "vllm", "tabbyapi", "foundry"):
        assert is_local(backend_type) and lookup("local-model", backend_type).cost == 10
    assert not is_local("openrouter")


@pytest.mark.parametrize(
    ("model", "backend_type", "tier"),
    [("smollm2", "llamacpp", "free"), ("gpt-3.5-turbo", "openai", "low"), ("claude-3-haiku-20240307", "anthropic", "low"),
     ("gpt-4o", "openai", "medium"), ("claude-3-5-sonnet-20241022", "anthropic", "medium"),
     ("gpt-4", "openai", "high"), ("claude-3-opus-20240229", "anthropic", "high")],
)
def test_price_tiers(model: str, backend_type: str, tier: str) -> None:
    assert price_tier(lookup(model, backend_type)) == tier


@given(st.floats(min_value=0, max_value=10), st.floats(min_value=0, max_value=10))
def test_price_tier_is_monotone_in_cheapness(a: float, b: float) -> None:
    def tier(cost: float) -> int:
        return PRICE_TIERS.index(price_tier(ModelInfo("m", 1, 5, cost, 5, (), True)))

    if a <= b:
        assert tier(a) >= tier(b)


@pytest.mark.parametrize(
    ("alias", "names", "expected"),
    [
        ("opus", known_models(), "claude-3-opus-20240229"),
        ("haiku", known_models(), "claude-3-haiku-20240307"),
        ("sonnet", known_models(), "claude-3-5-sonnet-20241022"),
        ("gpt-4o", known_models(), "gpt-4o"),
        ("gpt-4", ["gpt-4o", "gpt-4", "gpt-4-turbo"], "gpt-4"),
        ("gpt-4", ["gpt-4o", "gpt-4-turbo"], "gpt-4-turbo"),
        ("gpt-4", ["gpt-4o", "gpt-4o-mini"], None),
        ("GPT-4", ["gpt-4"], "gpt-4"),
        ("gpt-3.5", ["gpt-35-turbo"], "gpt-35-turbo"),
        ("claude-3.5-sonnet", ["claude-3-5-sonnet-20241022"], "claude-3-5-sonnet-20241022"),
        ("llama3", ["ollama:llama3:latest", "llama3.1"], "ollama:llama3:latest"),
        ("sonnet", ["claude-3-sonnet-20240229", "claude-3-5-sonnet-20241022"], "claude-3-sonnet-20240229"),
        ("claude", ["gpt-4", "anthropic/claude-3.5-sonnet"], "anthropic/claude-3.5-sonnet"),
        ("opus", ["gpt-4"], None),
        ("", ["gpt-4"], None),
    ],
)
def test_resolve_alias(alias: str, names: list[str], expected: str | None) -> None:
    assert resolve_alias(alias, names) == expected


# --- selector: weights, constraints, needs -----------------------------------


def test_default_weights_match_the_guide() -> None:
    assert Weights() == Weights(context_window=30, speed=25, cost=15, quality=15, specialization=15)
    assert Weights().total == 100
    assert Weights(speed=50) == Weights(30, 50, 15, 15, 15)


@pytest.mark.parametrize("criterion", ["speed", "cost", "quality"])
def test_for_criterion_puts_the_criterion_first(criterion: str) -> None:
    weights = Weights.for_criterion(criterion)
    others = [getattr(weights, name) for name in CRITERIA if name != criterion]
    assert getattr(weights, criterion) > 20 * sum(others)
    specialised = Weights.for_criterion(criterion, specialised=True)
    assert specialised.specialization > getattr(specialised, criterion)


@pytest.mark.parametrize(
    "bad", [{"speed": -1}, {"cost": math.inf}, {"quality": math.nan}, {"speed": True},
            dict.fromkeys(CRITERIA, 0)],
)
def test_invalid_weights_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        Weights(**bad)


def test_unknown_criterion_is_rejected() -> None:
    with pytest.raises(ValueError, match="colour"):
        Weights.for_criterion("colour")


@pytest.mark.parametrize(
    "bad", [{"max_cost": "cheap"}, {"max_cost": 11}, {"min_speed": -1}, {"min_context": -5}, {"min_context": 1.5}],
)
def test_invalid_constraints_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        Constraints(**bad)


@pytest.mark.parametrize(
    ("task", "specialization", "window"),
    [
        ("Generate complex Python code with type hints", "code", None),
        ("Write a binary search function", "code", None),
        ("summarise this 300 page document", "long_context", 195000),
        ("Summarize the meeting notes", "summarization", None),
        ("Reason step by step about the proof", "reasoning", None),
        ("Write a short story about a fox", "writing", None),
        ("Chat with the customer", "chat", None),
        ("Review this 100k tokens transcript", "long_context", 100000),
        ("Summarise these 2 pages", "summarization", 1300),
        ("Read the entire codebase and list entry points", "long_context", 32768),
        ("long_context", "long_context", 32768),
        ("Do the thing", None, None),
    ],
)
def test_infer_needs(task: str, specialization: str | None, window: int | None) -> None:
    assert infer_needs(task) == (specialization, window)


# --- selector: ranking -------------------------------------------------------


def test_code_task_prefers_code_models_over_tinyllama() -> None:
    ranked = rank(POOL, task="Generate complex Python code with type hints", top_k=None)
    order = _names(ranked)
    for coder in ("qwen2.5-coder:14b", "codellama", "gpt-4"):
        assert order.index(coder) < order.index("tinyllama")
    assert ranked[0].breakdown["specialization"] == 15


def test_fastest_picks_a_tiny_fast_model() -> None:
    ranked = rank(POOL, weights=Weights.for_criterion("speed"))
    assert ranked[0].candidate.model == "smollm2"
    assert set(_names(ranked)) <= {"smollm2", "tinyllama", "claude-3-haiku-20240307", "gpt-3.5-turbo", "gemma2:2b"}


def test_cheapest_prefers_free_local_models() -> None:
    ranked = rank(POOL, weights=Weights.for_criterion("cost"), top_k=None)
    tiers = [price_tier(r.info) for r in ranked]
    assert tiers[:7] == ["free"] * 7 and "free" not in tiers[7:]


def test_best_for_code_keeps_specialists_first() -> None:
    ranked = rank(POOL, weights=Weights.for_criterion("quality", specialised=True), specialization="code", top_k=None)
    coders = [r for r in ranked if "code" in r.info.specialization]
    assert ranked[: len(coders)] == coders
    assert ranked[0].candidate.model == "claude-3-5-sonnet-20241022"


def test_long_document_task_prefers_long_windows() -> None:
    ranked = rank(POOL, task="summarise this 300 page document", top_k=3)
    assert all(r.info.context_window >= 128000 for r in ranked)


def test_breakdown_sums_to_score_with_default_weights() -> None:
    for ranked in rank(POOL, task="write python code", top_k=None):
        assert list(ranked.breakdown) == list(CRITERIA)
        assert sum(ranked.breakdown.values()) == pytest.approx(ranked.score)
        assert ranked.breakdown["cost"] == pytest.approx(15 * ranked.info.cost / 10)
        assert ranked.breakdown["speed"] == pytest.approx(25 * ranked.info.speed / 10)
        assert not ranked.rejected


def test_context_window_is_log_scaled_against_the_largest_candidate() -> None:
    ranked = {r.candidate.model: r for r in rank(POOL, top_k=None)}
    assert ranked["claude-3-opus-20240229"].breakdown["context_window"] == pytest.approx(30)
    assert 0 < ranked["tinyllama"].breakdown["context_window"] < ranked["gpt-4"].breakdown["context_window"] < 15


def test_context_score_is_capped_at_what_the_task_needs() -> None:
    ranked = rank(POOL, constraints=Constraints(min_context=8000), top_k=None)
    full = [r for r in ranked if r.breakdown["context_window"] == pytest.approx(30)]
    assert {r.candidate.model for r in full} >= {"gpt-4", "llama3", "smollm2"}


def test_specialization_is_neutral_without_a_need() -> None:
    assert {r.breakdown["specialization"] for r in rank(POOL, top_k=None)} == {7.5}


def test_constraints_filter_with_reasons() -> None:
    constraints = Constraints(max_cost="low", min_speed=6, min_context=10000, specialization="code")
    assert _names(rank(POOL, constraints=constraints, top_k=None)) == ["codellama"]
    reasons = {r.candidate.model: r.rejected for r in explain_rejections(POOL, constraints=constraints)}
    assert "price tier high is above max_cost low" in reasons["gpt-4"]
    assert "speed 3 is below min_speed 6" in reasons["claude-3-opus-20240229"]
    assert "context window 2048 is below min_context 10000" in reasons["tinyllama"]
    assert "lacks specialization code (has: chat)" in reasons["tinyllama"]


def test_numeric_max_cost_is_on_the_price_scale() -> None:
    ranked = rank(POOL, constraints=Constraints(max_cost=2), top_k=None)
    assert {price_tier(r.info) for r in ranked} <= {"free", "low"}
    assert all(10 - r.info.cost <= 2 for r in ranked)
    assert rank(POOL, constraints=Constraints(max_cost=0), top_k=None) == rank(
        POOL, constraints=Constraints(max_cost="free"), top_k=None
    )


def test_allow_and_deny_lists_use_backend_names() -> None:
    only = rank(POOL, constraints=Constraints(backends=("anthropic", "local")), top_k=None)
    assert {r.candidate.backend for r in only} == {"anthropic", "local"}
    without = rank(POOL, constraints=Constraints(exclude_backends=["openai", "ollama"]), top_k=None)
    assert {r.candidate.backend for r in without} == {"anthropic", "local"}
    reasons = {r.candidate.backend: r.rejected for r in explain_rejections(POOL, constraints=Constraints(backends=("local",)))}
    assert reasons["openai"] == "backend openai is not in backends (local)"


def test_unavailable_candidates_are_excluded_with_their_reason() -> None:
    pool = (*POOL, Candidate("spare", "openai", "gpt-4o-mini", available=False, reason="OPENAI_API_KEY is not set"))
    assert "gpt-4o-mini" not in _names(rank(pool, weights=Weights.for_criterion("speed"), top_k=None))
    [rejected] = explain_rejections(pool)
    assert rejected.rejected == "unavailable: OPENAI_API_KEY is not set" and rejected.score == 0


def test_no_eligible_candidate_gives_an_empty_ranking() -> None:
    assert rank(POOL, constraints=Constraints(backends=("nowhere",))) == []
    assert rank([]) == []


def test_ties_break_by_backend_then_model() -> None:
    pool = [Candidate("b", "ollama", "llama3"), Candidate("a", "ollama", "llama3"), Candidate("a", "vllm", "llama3")]
    ranked = rank(pool, top_k=None)
    assert [(r.candidate.backend, r.candidate.backend_type) for r in ranked] == [("a", "ollama"), ("a", "vllm"), ("b", "ollama")]


def test_per_backend_context_windows_and_overrides_reach_the_score() -> None:
    pool = [Candidate("big", "ollama", "llama3"), Candidate("small", "ollama", "llama3")]
    ranked = rank(pool, context_windows={"big": {"llama3": 65536}}, top_k=None)
    assert [r.candidate.backend for r in ranked] == ["big", "small"]
    assert ranked[0].info.context_window == 65536 and ranked[1].info.context_window == 8192
    boosted = rank(POOL, weights=Weights.for_criterion("quality"), overrides={"tinyllama": {"quality": 10}})
    assert boosted[0].candidate.model == "tinyllama"


def test_top_k() -> None:
    assert len(rank(POOL)) == 3
    assert len(rank(POOL, top_k=1)) == 1
    assert len(rank(POOL, top_k=None)) == len(POOL)
    assert rank(POOL, top_k=0) == []
    with pytest.raises(ValueError):
        rank(POOL, top_k=-1)


# --- selector: properties ----------------------------------------------------

_MODELS = (*OLLAMA, *OPENAI, *ANTHROPIC, "smollm2", "mystery-7b", "house-coder:32b", "gpt-4o-mini", "llama3.2")
_BACKENDS = (("ollama", "ollama"), ("gpu_b", "ollama"), ("openai", "openai"), ("anthropic", "anthropic"),
             ("router", "openrouter"), ("local", "llamacpp"))
_candidates = st.lists(
    st.builds(
        lambda backend, model, available: Candidate(backend[0], backend[1], model, available, "" if available else "down"),
        st.sampled_from(_BACKENDS),
        st.sampled_from(_MODELS),
        st.sampled_from((True, True, True, False)),
    ),
    max_size=12,
)
_weight = st.floats(min_value=0, max_value=100, allow_nan=False)
_weights = st.tuples(_weight, _weight, _weight, _weight, _weight).filter(lambda ws: sum(ws) > 0).map(lambda ws: Weights(*ws))
_constraints = st.builds(
    Constraints,
    max_cost=st.none() | st.sampled_from(PRICE_TIERS) | st.floats(min_value=0, max_value=10),
    min_speed=st.none() | st.floats(min_value=0, max_value=10),
    min_context=st.none() | st.integers(min_value=0, max_value=300000),
    specialization=st.none() | st.sampled_from(("code", "chat", "long_context", "reasoning")),
    backends=st.lists(st.sampled_from([b for b, _ in _BACKENDS]), max_size=3).map(tuple),
    exclude_backends=st.lists(st.sampled_from([b for b, _ in _BACKENDS]), max_size=2).map(tuple),
)
_tasks = st.none() | st.sampled_from(
    ("write python code", "summarise this 300 page document", "chat with the user", "do it", "prove the theorem")
)


@settings(max_examples=150, deadline=None)
@given(_candidates, _weights, _constraints, _tasks, st.none() | st.integers(min_value=0, max_value=5))
def test_ranking_invariants(
    pool: list[Candidate], weights: Weights, constraints: Constraints, task: str | None, top_k: int | None
) -> None:
    everything = rank(pool, task=task, weights=weights, constraints=constraints, top_k=None)
    ranked = rank(pool, task=task, weights=weights, constraints=constraints, top_k=top_k)
    rejected = explain_rejections(pool, constraints=constraints)
    assert ranked == everything[: len(ranked)]
    assert len(ranked) == (len(everything) if top_k is None else min(top_k, len(everything)))
    assert len(everything) + len(rejected) == len(pool)
    assert all(r.rejected for r in rejected) and not any(r.rejected for r in everything)
    assert all(r.candidate.available for r in everything)
    scores = [r.score for r in everything]
    assert scores == sorted(scores, reverse=True)
    for r in everything:
        assert 0 <= r.score <= 100
        assert sum(r.breakdown.values()) == pytest.approx(r.score, abs=1e-9)
        assert all(0 <= part <= 100 * getattr(weights, name) / weights.total + 1e-9 for name, part in r.breakdown.items())


_RAW = {
    "context_window": lambda info: info.context_window,
    "speed": lambda info: info.speed,
    "cost": lambda info: info.cost,
    "quality": lambda info: info.quality,
}


@settings(max_examples=150, deadline=None)
@given(_candidates, _weights, st.sampled_from(tuple(_RAW)), st.floats(min_value=0, max_value=500), _tasks)
def test_raising_a_weight_never_demotes_the_leader_on_that_criterion(
    pool: list[Candidate], weights: Weights, criterion: str, extra: float, task: str | None
) -> None:
    """Each score is linear in the weights, so the best on a criterion only gains ground on it."""
    before = rank(pool, task=task, weights=weights, top_k=None)
    if not before:
        return
    best = max(_RAW[criterion](r.info) for r in before)
    after = rank(pool, task=task, weights=replace(weights, **{criterion: getattr(weights, criterion) + extra}), top_k=None)
    key = [(r.candidate, r.info.name) for r in after]
    for position, leader in enumerate(before):
        if _RAW[criterion](leader.info) == best:
            assert key.index((leader.candidate, leader.info.name)) <= position


@settings(max_examples=100, deadline=None)
@given(_candidates, _weights, _tasks)
def test_scaling_all_weights_changes_nothing(pool: list[Candidate], weights: Weights, task: str | None) -> None:
    scaled = Weights(*(getattr(weights, name) * 4 for name in CRITERIA))
    assert [r.candidate for r in rank(pool, task=task, weights=weights, top_k=None)] == [
        r.candidate for r in rank(pool, task=task, weights=scaled, top_k=None)
    ]
