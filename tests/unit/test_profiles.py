"""Profiles: `profiles.NAME` merged over the config by `--profile` or `$DSE_PROFILE`, errors at the profile's line."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from helpers import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.cli import main
from dse.config import load_config
from dse.config.profiles import SECTION, apply, merge
from dse.config.yaml_source import KeyPath, dotted, parse_yaml
from dse.errors import InputError, InputErrors

REVIEW = str(ROOT / "workflows" / "review.yaml")
PROD_KEY = "sk-prod-from-the-environment"
LITERAL_KEY = "sk-literal-written-in-the-profile"

# Line numbers matter: the tests below point at them.
CONFIG = """\
llm:
  backend: ollama
  global_defaults: {default_backend: ollama, temperature: 0.7}
  ollama:
    models: {generator: llama3, triage: tinyllama, evaluator: llama3}
  openai:
    api_key: ${PROD_KEY}
    models: {generator: gpt-4o, triage: gpt-4o-mini, evaluator: gpt-4o}
tools:
  triage: {llm: {model_key: triage}, prompt: "t {{ changes }}"}
  reviewer: {llm: {model_key: generator}, prompt: "r {{ diff }}"}
  summarizer: {llm: {model_key: evaluator}, prompt: "s {{ findings }}"}
profiles:
  dev: {}
  prod:
    llm:
      backend: openai
      global_defaults:
        default_backend: openai
        temperature: 0.2
      ollama: null
      openai:
        models: {triage: gpt-4o}
  staging:
    llm:
      global_defaults:
        default_backend: openai
        temperature: hot
  literal:
    llm:
      openai: {api_key: %s}
""" % LITERAL_KEY


@pytest.fixture(autouse=True)
def _no_profile_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSE_PROFILE", raising=False)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def located(error: InputError) -> list[tuple[int | None, str | None, str]]:
    errors = error.errors if isinstance(error, InputErrors) else [error]
    return [(e.location.line if e.location else None, e.location.key if e.location else None, e.message) for e in errors]


def test_merge_is_a_json_merge_patch() -> None:
    base = {"llm": {"backend": "ollama", "ollama": {"models": {"a": "x"}}, "fallback_backends": ["a", "b"]}, "keep": 1}
    patch = {"llm": {"backend": "openai", "ollama": None, "fallback_backends": ["c"], "new": {"k": 1, "gone": None}}, "keep": None}
    assert merge(base, patch) == {"llm": {"backend": "openai", "fallback_backends": ["c"], "new": {"k": 1}}}
    assert merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}, "a mapping replaces a scalar"
    assert merge({"a": {"b": 2}}, {"a": 3}) == {"a": 3}, "a scalar replaces a mapping"
    assert base["llm"]["ollama"] == {"models": {"a": "x"}} and base["keep"] == 1, "the base is not changed"


_KEYS = st.sampled_from(["a", "b", "c", "d"])
_SCALARS = st.one_of(st.integers(-5, 5), st.text("xyz", min_size=1, max_size=3), st.lists(st.integers(0, 3), max_size=2))


def _trees(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(st.dictionaries(_KEYS, leaves, min_size=1, max_size=3), lambda inner: st.dictionaries(_KEYS, inner | leaves, min_size=1, max_size=3), max_leaves=12)


def _flat(tree: Any, path: KeyPath = ()) -> dict[KeyPath, Any]:
    """Every leaf by its key path; an empty mapping holds no leaf."""
    if not isinstance(tree, dict):
        return {path: tree}
    return {leaf: value for key, below in tree.items() for leaf, value in _flat(below, (*path, key)).items()}


def _overlaps(a: KeyPath, b: KeyPath) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


@settings(max_examples=300, deadline=None)
@given(_trees(_SCALARS | st.none()), _trees(_SCALARS | st.none()))
def test_merged_leaves_are_the_profiles_and_the_bases_it_does_not_touch(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """Every leaf the profile sets is in the result; a base leaf stays unless the profile sets, removes or replaces its path."""
    set_by_patch = _flat(patch)
    expected = {path: value for path, value in _flat(base).items() if not any(_overlaps(path, p) for p in set_by_patch)}
    expected.update({path: value for path, value in set_by_patch.items() if value is not None})
    merged = merge(base, patch)
    assert _flat(merged) == expected
    assert merge(merged, patch) == merged, "applying a profile twice changes nothing more"
    assert merge(base, {}) == base


@settings(max_examples=150, deadline=None)
@given(_trees(_SCALARS | st.none()), _trees(_SCALARS | st.none()))
def test_every_merged_value_is_located_where_it_is_written(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """A value from the profile is located at its line in the profile, under its key path there; a base value at its own."""
    text = yaml.safe_dump({**base, SECTION: {"p": patch}}, sort_keys=False)
    lines = text.splitlines()
    profiles_line = lines.index(f"{SECTION}:") + 1
    source = apply(parse_yaml(text, "c.yaml"), "p")
    from_patch = _flat(patch)
    for path in _flat(source.data):
        where = source.locate(path)
        assert where.line is not None and where.column is not None
        assert lines[where.line - 1][where.column - 1 :].startswith(f"{path[-1]}:")
        if path in from_patch:
            assert (where.key, where.line > profiles_line) == (dotted((SECTION, "p", *path)), True)
        else:
            assert (where.key, where.line < profiles_line) == (dotted(path), True)


def test_a_profile_is_merged_over_the_base_with_its_variables_expanded(write) -> None:
    path = write("config.yaml", CONFIG)
    base = load_config(path, environ={})
    assert (base.backend, base.default_backend, base.defaults.temperature, base.profile) == ("ollama", "ollama", 0.7, None)
    assert base.backends["openai"].unavailable == "PROD_KEY is not set"
    prod = load_config(path, environ={"DSE_PROFILE": "prod", "PROD_KEY": PROD_KEY})
    assert (prod.backend, prod.default_backend, prod.defaults.temperature, prod.profile) == ("openai", "openai", 0.2, "prod")
    assert "ollama" not in prod.backends, "null removes the block"
    openai = prod.backends["openai"]
    assert openai.api_key is not None and openai.api_key.reveal() == PROD_KEY
    assert dict(openai.models) == {"generator": "gpt-4o", "triage": "gpt-4o", "evaluator": "gpt-4o"}, "models merge key by key"
    assert set(prod.tools) == {"triage", "reviewer", "summarizer"}, "what the profile does not name stays"
    assert load_config(path, environ={"DSE_PROFILE": "dev"}).backend == "ollama", "an empty profile is the base"


def test_a_variable_written_in_the_profile_is_expanded(write) -> None:
    path = write("config.yaml", CONFIG.replace("models: {triage: gpt-4o}", "models: {triage: '${PROD_TRIAGE:-gpt-4.1}'}"))
    assert load_config(path, environ={"DSE_PROFILE": "prod"}).backends["openai"].models["triage"] == "gpt-4.1"
    chosen = load_config(path, environ={"DSE_PROFILE": "prod", "PROD_TRIAGE": "o3-mini"})
    assert chosen.backends["openai"].models["triage"] == "o3-mini"


def test_an_error_from_the_profile_points_at_its_line_in_the_profile(write) -> None:
    path = write("config.yaml", CONFIG)
    with pytest.raises(InputError) as caught:
        load_config(path, environ={"DSE_PROFILE": "staging"})
    assert located(caught.value) == [(28, "profiles.staging.llm.global_defaults.temperature", 'expected number, got str "hot"')]
    assert str(caught.value).startswith(f"{path}:28:9: profiles.staging.llm.global_defaults.temperature: ")


def test_an_unknown_key_the_profile_adds_is_located_in_the_profile(write) -> None:
    path = write("config.yaml", CONFIG.replace("        temperature: 0.2", "        temprature: 0.2"))
    with pytest.raises(InputError) as caught:
        load_config(path, environ={"DSE_PROFILE": "prod"})
    assert located(caught.value) == [(20, "profiles.prod.llm.global_defaults.temprature", "unknown key 'temprature'")]


def test_an_error_in_the_base_keeps_its_own_line_under_a_profile(write) -> None:
    path = write("config.yaml", CONFIG.replace("models: {generator: llama3,", "models: {generator: 3,"))
    with pytest.raises(InputError) as caught:
        load_config(path, environ={"DSE_PROFILE": "dev"})
    assert [(line, key) for line, key, _ in located(caught.value)] == [(5, "llm.ollama.models.generator")]
    fixed = load_config(path, environ={"DSE_PROFILE": "prod", "PROD_KEY": PROD_KEY})
    assert "ollama" not in fixed.backends, "a profile that removes the wrong value leaves nothing to report"


def test_a_unknown_profile_names_the_ones_there_are(capsys, write) -> None:
    path = write("config.yaml", CONFIG)
    code, _, err = cli(capsys, "validate", "--config", str(path), "--profile", "prdo")
    assert code == 2 and "Traceback" not in err
    assert f"dse: error: {path}:13:1: profiles: no profile 'prdo' (from --profile)" in err
    assert "did you mean 'prod'? profiles here: dev, prod, staging, literal" in err


def test_a_profile_asked_of_a_config_without_profiles_is_a_clear_error(capsys, write, monkeypatch) -> None:
    path = write("config.yaml", CONFIG[: CONFIG.index(SECTION)])
    monkeypatch.setenv("DSE_PROFILE", "prod")
    code, _, err = cli(capsys, "config", "show", "--config", str(path))
    assert code == 2
    assert f"dse: error: {path}:1:1: profile 'prod' (from $DSE_PROFILE) asked for, but this config has no `profiles:`" in err


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [("profiles: [dev, prod]\n", 13, "profiles"), ("profiles:\n  dev: 3\n", 14, "profiles.dev"), ("profiles:\n  x: {profiles: {}}\n", 14, "profiles.x.profiles")],
)
def test_a_malformed_profiles_section_is_located_even_when_no_profile_is_chosen(write, section: str, line: int, key: str) -> None:
    path = write("config.yaml", CONFIG[: CONFIG.index(SECTION)] + section)
    with pytest.raises(InputError) as caught:
        load_config(path, environ={"DSE_PROFILE": "x"} if key.endswith(".profiles") else {})
    assert [(at, where) for at, where, _ in located(caught.value)] == [(line, key)]


def test_the_flag_wins_over_the_environment(capsys, write, monkeypatch) -> None:
    path = write("config.yaml", CONFIG)
    monkeypatch.setenv("DSE_PROFILE", "staging")
    monkeypatch.setenv("PROD_KEY", PROD_KEY)
    code, out, err = cli(capsys, "config", "show", "--config", str(path), "--profile", "prod", "--json")
    assert code == 0, err
    assert json.loads(out)["llm"]["global_defaults"]["temperature"] == 0.2
    code, _, err = cli(capsys, "config", "show", "--config", str(path))
    assert code == 2 and "profiles.staging.llm.global_defaults.temperature" in err, "without the flag, $DSE_PROFILE applies"


def test_config_show_prints_the_merged_config_with_secrets_as_written(capsys, write, monkeypatch) -> None:
    path = write("config.yaml", CONFIG)
    monkeypatch.setenv("PROD_KEY", PROD_KEY)
    code, out, err = cli(capsys, "config", "show", "--config", str(path), "--profile", "prod", "--json")
    assert code == 0, err
    llm = json.loads(out)["llm"]
    assert (llm["backend"], llm["global_defaults"]["default_backend"], "ollama" in llm) == ("openai", "openai", False)
    assert llm["openai"]["api_key"] == "${PROD_KEY}" and PROD_KEY not in out
    code, out, err = cli(capsys, "config", "show", "--config", str(path), "--profile", "literal")
    assert code == 0, err
    assert LITERAL_KEY not in out + err and "api_key: '***'" in out
    shown = write("shown.yaml", out)
    assert load_config(shown, environ={}).backends["openai"].models == load_config(path, environ={"DSE_PROFILE": "literal"}).backends["openai"].models


def test_plan_with_a_profile_uses_the_profiles_backend(capsys, write) -> None:
    path = write("config.yaml", CONFIG)

    def backends(*profile: str) -> set[tuple[str, str]]:
        code, out, err = cli(capsys, "plan", REVIEW, "--config", str(path), *profile, "--json")
        assert code == 0, err
        return {(s["backend"], s["model"]) for s in json.loads(out)["steps"] if s["kind"] == "llm"}

    assert backends() == {("ollama", "tinyllama"), ("ollama", "llama3")}
    assert backends("--profile", "prod") == {("openai", "gpt-4o")}
    code, out, _ = cli(capsys, "plan", REVIEW, "--config", str(path), "--profile", "prod")
    assert code == 0 and "  config profile prod" in out.splitlines()[:3], "the table says the profile that placed its steps"
    code, out, _ = cli(capsys, "plan", REVIEW, "--config", str(path), "--json")
    assert json.loads(out)["profile"] is None


def test_the_shipped_environments_example_is_ollama_in_dev_and_openai_in_prod() -> None:
    example = ROOT / "configs" / "environments.yaml"
    for profile, backend in ((None, "ollama"), ("dev", "ollama"), ("prod", "openai")):
        config = load_config(example, environ={"DSE_PROFILE": profile} if profile else {})
        assert {config.default_backend, *config.backends} == {backend}, profile
