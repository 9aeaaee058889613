"""Resolution: one test per rule, per directive phrase, and the DiSE guide's configs as it describes them."""

from __future__ import annotations

from pathlib import Path

import dise_guide
import pytest

from dse.config import load_config
from dse.errors import InputError
from dse.routing import Intent, Resolver

ROOT = Path(__file__).resolve().parents[2]
DISE = ROOT / "tests" / "fixtures" / "dise"
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-test", "OPENAI_API_KEY": "sk-test", "AZURE_OPENAI_API_KEY": "az", "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com"}

MULTI = """\
llm:
  backend: ollama
  fallback_backends: [openai]
  global_defaults: {default_backend: ollama, temperature: 0.3, max_tokens: 99}
  ollama:
    models: {overseer: llama3, generator: "qwen2.5-coder:14b", triage: tinyllama}
    endpoints:
      generator: [http://a:11434, http://b:11434]
  openai:
    api_key: ${OPENAI_API_KEY}
    models: {overseer: gpt-4, generator: gpt-4o, triage: gpt-3.5-turbo}
  anthropic:
    api_key: ${ANTHROPIC_API_KEY}
    models: {overseer: claude-3-5-sonnet-20241022, generator: claude-3-opus-20240229, triage: claude-3-haiku-20240307}
  azure:
    api_key: ${AZURE_OPENAI_API_KEY}
    endpoint: https://res.openai.azure.com
    deployments:
      generator: {deployment: gpt-4-code, model: gpt-4}
  local:
    type: llamacpp
    managed: {model: smollm2}
tools:
  reviewer: {llm: {model_key: generator}}
  triager: {llm: {model_key: triage, temperature: 0.0}}
  pinned: {backend: anthropic, llm: {model_key: triage}}
  direct: {llm: {model: claude-3-opus-20240229}}
  plain: {}
"""


def resolver_for(text: str, write, environ=KEYS) -> Resolver:
    return Resolver(load_config(write("config.yaml", text), environ=environ))


def where(resolver: Resolver, **intent) -> tuple[str, str]:
    tool = intent.pop("tool", None)
    target = resolver.resolve(Intent("s", tool=resolver.config.tools[tool] if tool else None, **intent)).target
    return target.backend, target.model


# --- the DiSE guide, snippet by snippet ------------------------------------------------------


CALLS = [(name, call) for name in dise_guide.NAMES for call in dise_guide.GUIDE[name].calls]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[f"{n}-{c.step}" for n, c in CALLS])
def test_dise_guide_configs_resolve_as_the_guide_says(name: str, call: dise_guide.Call) -> None:
    """Backend, model, role, deployment, endpoints and fallback chain of each call, per tests/dise_guide.py."""
    guide = dise_guide.GUIDE[name]
    resolver = Resolver(load_config(dise_guide.fixture(name), environ=dise_guide.KEYS))
    tool = resolver.config.tools[call.tool] if call.tool else None
    target = resolver.resolve(Intent(call.step, tool=tool, model_key=call.model_key)).target
    assert (target.backend, target.model, target.role) == (call.backend, call.model, call.role)
    assert (target.deployment, target.endpoints) == (call.deployment, call.endpoints)
    assert target.wire_model == (call.deployment or call.model), "Azure is addressed by deployment"
    assert (target.temperature, target.max_tokens) == (guide.temperature, guide.max_tokens)
    assert target.fallbacks == call.fallbacks
    chain = [resolver.retarget(target, fallback) for fallback in target.fallbacks]
    assert [(t.backend, t.model) for t in chain] == list(call.fallback_targets)
    assert all(t.role == target.role for t in chain), "a fallback serves the same role"


@pytest.mark.parametrize("name", dise_guide.NAMES)
def test_dise_guide_embeddings_go_where_the_guide_says(name: str) -> None:
    guide = dise_guide.GUIDE[name]
    resolver = Resolver(load_config(dise_guide.fixture(name), environ=dise_guide.KEYS))
    if guide.embedding is None:
        with pytest.raises(InputError, match="no embedding backend configured"):
            resolver.embedding_target()
    else:
        target = resolver.embedding_target()
        assert (target.backend, target.model) == guide.embedding
    for backend in guide.no_embeddings:
        with pytest.raises(InputError, match="has no embeddings"):
            resolver.embedding_target(backend)


def test_dise_selector_snippet_alone_has_no_backend_to_resolve_to() -> None:
    """15_model_selector configures only the selector: a step has nowhere to go, and says so."""
    resolver = Resolver(load_config(dise_guide.fixture("15_model_selector"), environ=dise_guide.KEYS))
    with pytest.raises(InputError, match="no backend to use"):
        resolver.resolve(Intent("s"))


def test_dise_model_key_retargets_every_tool_when_the_backend_model_changes(write) -> None:
    """13_model_key: "change the model once and all tools update"."""
    text = dise_guide.fixture("13_model_key").read_text().replace('generator: "claude-3-5-sonnet-20241022"', 'generator: "claude-3-haiku-20240307"')
    resolver = resolver_for(text, write)
    assert where(resolver, tool="my_tool") == ("anthropic", "claude-3-haiku-20240307")


def test_dise_cost_pattern_routes_roles_to_their_models() -> None:
    resolver = Resolver(load_config(DISE / "16_pattern1_cost_optimization.yaml", environ=KEYS))
    assert where(resolver, model_key="triage") == ("ollama", "tinyllama")
    assert where(resolver, model_key="evaluator") == ("ollama", "llama3")


def test_dise_multi_region_azure_uses_each_deployment_and_its_endpoint() -> None:
    resolver = Resolver(load_config(DISE / "20_pattern5_multi_region_azure.yaml", environ=KEYS))
    target = resolver.resolve(Intent("s", model_key="eu_west")).target
    assert (target.backend, target.deployment, target.endpoints) == ("azure", "gpt-4-eu-west", ("https://eu-west.openai.azure.com",))
    assert target.wire_model == "gpt-4-eu-west"


def test_dise_azure_block_maps_roles_to_deployments() -> None:
    resolver = Resolver(load_config(DISE / "08_backend_azure.yaml", environ=KEYS))
    target = resolver.resolve(Intent("s", model_key="generator")).target
    assert (target.model, target.deployment) == ("gpt-4", "gpt-4-code")


def test_dise_enterprise_hybrid_azure_without_key_is_unavailable_with_ollama_fallback() -> None:
    config = load_config(DISE / "19_pattern4_enterprise_hybrid.yaml", environ={"AZURE_OPENAI_ENDPOINT": "https://x"})
    target = Resolver(config).resolve(Intent("s")).target
    assert target.backend == "azure" and target.fallbacks == ("ollama",)
    assert config.backends["azure"].unavailable == "AZURE_OPENAI_API_KEY is not set"
    assert any("unavailable" in r for r in target.reasons)


# --- the precedence rules ----------------------------------------------------------------------


def test_rule_global_default_backend_and_model_key(write) -> None:
    resolver = resolver_for(MULTI, write)
    target = resolver.resolve(Intent("s", tool=resolver.config.tools["reviewer"])).target
    assert (target.backend, target.model, target.role) == ("ollama", "qwen2.5-coder:14b", "generator")
    assert target.endpoints == ("http://a:11434", "http://b:11434")
    assert target.temperature == 0.3 and target.max_tokens == 99
    assert target.reasons[0] == "llm.global_defaults.default_backend = ollama"


def test_rule_tool_parameters_override_global_defaults(write) -> None:
    resolver = resolver_for(MULTI, write)
    target = resolver.resolve(Intent("s", tool=resolver.config.tools["triager"])).target
    assert target.temperature == 0.0 and target.model == "tinyllama"


def test_rule_tool_backend_override(write) -> None:
    assert where(resolver_for(MULTI, write), tool="pinned") == ("anthropic", "claude-3-haiku-20240307")


def test_rule_step_settings_beat_the_tool(write) -> None:
    resolver = resolver_for(MULTI, write)
    assert where(resolver, tool="pinned", backend="openai") == ("openai", "gpt-3.5-turbo")
    assert where(resolver, tool="pinned", model_key="overseer") == ("anthropic", "claude-3-5-sonnet-20241022")
    assert where(resolver, tool="reviewer", backend="openai", model="gpt-4") == ("openai", "gpt-4")


def test_rule_direct_model_beats_model_key(write) -> None:
    assert where(resolver_for(MULTI, write), model="llama3", model_key="triage") == ("ollama", "llama3")


def test_rule_bare_model_resolves_to_the_backend_that_owns_it(write) -> None:
    resolver = resolver_for(MULTI, write)
    assert where(resolver, tool="direct") == ("anthropic", "claude-3-opus-20240229")
    target = resolver.resolve(Intent("s", model="gpt-3.5-turbo")).target
    assert target.backend == "openai" and "listed only by backend openai" in target.reasons[0]


def test_rule_ambiguous_bare_model_lists_the_candidates(write) -> None:
    text = "llm:\n  backend: local\n  local: {type: llamacpp, models: {g: shared}}\n  a: {type: ollama, models: {g: shared}}\n  b: {type: vllm, models: {g: shared}}\n"
    resolver = resolver_for(text, write)
    assert where(resolver, model="shared") == ("local", "shared"), "the default backend wins when it owns the model"
    text = text.replace("backend: local\n  local: {type: llamacpp, models: {g: shared}}\n", "backend: local\n  local: {type: llamacpp}\n")
    with pytest.raises(InputError, match="listed by several backends: a, b") as info:
        where(resolver_for(text, write), model="shared")
    assert "a:shared" in str(info.value)


@pytest.mark.parametrize(
    ("model", "backend", "bare"),
    [("ollama:llama2", "ollama", "llama2"), ("openrouter:anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet")],
)
def test_rule_provider_prefixed_model(write, model: str, backend: str, bare: str) -> None:
    resolver = resolver_for(MULTI, write, environ={**KEYS, "OPENROUTER_API_KEY": "k"})
    assert where(resolver, model=model) == (backend, bare)


def test_rule_unknown_model_key_suggests(write) -> None:
    with pytest.raises(InputError, match="no model for role 'generater'") as info:
        where(resolver_for(MULTI, write), model_key="generater")
    assert "did you mean 'generator'?" in str(info.value)


def test_rule_unknown_step_backend_suggests(write) -> None:
    with pytest.raises(InputError, match="unknown backend 'antropic'") as info:
        where(resolver_for(MULTI, write), backend="antropic")
    assert "did you mean 'anthropic'?" in str(info.value)


def test_rule_managed_backend_serves_its_model(write) -> None:
    assert where(resolver_for(MULTI, write), backend="local") == ("local", "smollm2")


def test_flipping_global_default_retargets_every_tool_that_does_not_override(write) -> None:
    before = resolver_for(MULTI, write)
    after = resolver_for(MULTI.replace("default_backend: ollama", "default_backend: openai"), write)
    for name in before.config.tools:
        old, new = where(before, tool=name), where(after, tool=name)
        tool = before.config.tools[name]
        if tool.backend or tool.model:
            assert old == new, name
        else:
            assert old[0] == "ollama" and new[0] == "openai", name


# --- directives --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "backend", "model"),
    [
        ("Use claude for this. Review the code.", "anthropic", "claude-3-opus-20240229"),
        ("Use gpt-4. Review the code.", "openai", "gpt-4"),
        ("Use gpt-4o for this. Review.", "openai", "gpt-4o"),
        ("Use anthropic opus. Review.", "anthropic", "claude-3-opus-20240229"),
        ("Use haiku. Review.", "anthropic", "claude-3-haiku-20240307"),
        ("Use my openai settings. Review.", "openai", "gpt-4o"),
        ("Use my openapi settings. Review.", "openai", "gpt-4o"),
        ("Use azure. Review.", "azure", "gpt-4"),
        ("Use the local model. Review.", "local", "smollm2"),
        ("Use ollama. Review.", "ollama", "qwen2.5-coder:14b"),
        ("Using my OpenAPI settings use gpt-4 for this operation. Review.", "openai", "gpt-4"),
    ],
)
def test_directive_retargets_the_step_and_is_removed_from_the_prompt(write, text: str, backend: str, model: str) -> None:
    resolver = resolver_for(MULTI, write)
    resolution = resolver.resolve(Intent("s", tool=resolver.config.tools["reviewer"], text=text))
    assert (resolution.target.backend, resolution.target.model) == (backend, model)
    assert resolution.target.rule == "directive"
    assert resolution.text.strip().startswith("Review")
    assert "use " not in resolution.text.lower()


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("Use the fastest model. Summarise.", {"tinyllama", "claude-3-haiku-20240307", "gpt-3.5-turbo", "smollm2"}),
        ("Use the cheapest model. Summarise.", {"tinyllama", "llama3", "qwen2.5-coder:14b", "smollm2"}),
        ("Use the best model for code. Write a parser.", {"qwen2.5-coder:14b", "gpt-4o", "claude-3-5-sonnet-20241022", "gpt-4", "claude-3-opus-20240229"}),
    ],
)
def test_criterion_directives_ask_the_selector(write, text: str, expect: set[str]) -> None:
    resolution = resolver_for(MULTI, write).resolve(Intent("s", text=text))
    assert resolution.target.model in expect
    assert resolution.target.rule == "model selector"
    assert any("model selector picked" in r for r in resolution.target.reasons)


def test_directive_for_an_unconfigured_backend_falls_back_with_the_reason(write) -> None:
    text = MULTI.replace("  anthropic:\n    api_key: ${ANTHROPIC_API_KEY}\n", "  anthropic:\n    api_key: ${NOT_SET_KEY}\n")
    resolution = resolver_for(text, write).resolve(Intent("s", text="Use claude for this. Review."))
    assert resolution.target.backend == "openai"
    assert resolution.warnings and "NOT_SET_KEY is not set" in resolution.warnings[0]
    assert any("falling back along fallback_backends to openai" in r for r in resolution.target.reasons)


def test_directive_mid_sentence_is_not_a_directive(write) -> None:
    resolution = resolver_for(MULTI, write).resolve(Intent("s", text="Explain how to use ollama in production."))
    assert resolution.target.backend == "ollama" and resolution.directive is None
    assert resolution.text == "Explain how to use ollama in production."


def test_model_auto_uses_the_selector_with_constraints(write) -> None:
    resolver = resolver_for(MULTI, write)
    target = resolver.resolve(Intent("s", model="auto", select={"task": "write python code", "backends": ["openai"]})).target
    assert target.backend == "openai" and target.rule == "model selector"


def test_directive_naming_a_model_finds_the_backend_that_serves_it(write) -> None:
    text = MULTI.replace("  openai:\n    api_key: ${OPENAI_API_KEY}\n", "  openai:\n    api_key: ${NOT_SET_KEY}\n")
    resolution = resolver_for(text, write).resolve(Intent("s", text="Use gpt-4. Review."))
    target = resolution.target
    assert (target.backend, target.model, target.deployment) == ("azure", "gpt-4", "gpt-4-code")
    assert not resolution.warnings


def test_step_parameters_beat_tool_and_global_defaults(write) -> None:
    resolver = resolver_for(MULTI, write)
    target = resolver.resolve(Intent("s", tool=resolver.config.tools["triager"], temperature=0.9, max_tokens=7)).target
    assert (target.temperature, target.max_tokens) == (0.9, 7)


def test_a_disabled_selector_is_not_asked(write) -> None:
    resolver = resolver_for(MULTI + "model_selector: {enabled: false}\n", write)
    with pytest.raises(InputError, match="model_selector.enabled is false"):
        resolver.resolve(Intent("s", model="auto"))
    with pytest.raises(InputError, match="model_selector.enabled is false"):
        resolver.resolve(Intent("s", text="Use the fastest model. Go."))


def test_a_step_model_key_replaces_the_tools_direct_model(write) -> None:
    resolver = resolver_for(MULTI, write)
    target = resolver.resolve(Intent("s", tool=resolver.config.tools["direct"], model_key="triage")).target
    assert (target.backend, target.model) == ("ollama", "tinyllama")
    assert target.rule == "global default + step model_key"
