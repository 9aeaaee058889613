"""The config loader: located errors, env expansion, unavailable backends, the DiSE guide's files."""

from __future__ import annotations

from pathlib import Path

import dise_guide
import pytest

from dse.config import load_config
from dse.config.export import to_data
from dse.errors import InputError, InputErrors

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_default_config_loads() -> None:
    config = load_config(ROOT / "configs" / "config.yaml", environ={})
    local = config.backends["local"]
    assert config.backend == "local" and config.default_backend == "local"
    assert local.type == "llamacpp" and local.managed is not None
    assert local.managed.replicas == 2 and local.managed.threads == 1
    assert set(local.models) == {"overseer", "generator", "evaluator", "triage"}
    assert {"triage", "reviewer", "summarizer"} <= set(config.tools)


@pytest.mark.parametrize("name", dise_guide.NAMES)
def test_every_dise_guide_snippet_loads_as_the_guide_says(name: str) -> None:
    """Each block, role, endpoint, window and default of the snippet, as tests/dise_guide.py spells it out."""
    guide = dise_guide.GUIDE[name]
    path = dise_guide.fixture(name)
    config = load_config(path, environ=dise_guide.KEYS)
    assert config.path == str(path)
    assert (config.backend, config.default_backend, config.fallback_backends) == (
        guide.backend, guide.default_backend, guide.fallbacks
    )
    assert (config.defaults.temperature, config.defaults.max_tokens) == (guide.temperature, guide.max_tokens)
    assert config.defaults.default_embedding_backend == (guide.embedding[0] if guide.embedding else None)
    assert (config.selector.enabled, dict(config.selector.weights)) == (guide.selector_enabled, dict(guide.weights))
    assert list(config.backends) == list(guide.blocks), "every declared backend, and no other"
    assert sorted(config.tools) == sorted(guide.tools)
    for backend, block in guide.blocks.items():
        loaded = config.backends[backend]
        where = loaded.endpoint if loaded.type == "azure" else loaded.base_url
        assert (loaded.type, where, dict(loaded.models)) == (block.type, block.url, dict(block.models)), backend
        assert loaded.api_key_env == block.key_env and (loaded.api_key is not None) == (block.key_env is not None), backend
        assert loaded.unavailable is None, f"{backend}: with every variable set, nothing is missing"
        assert {role: tuple(e.url for e in urls) for role, urls in loaded.endpoints.items()} == dict(block.endpoints), backend
        assert dict(loaded.context_windows) == dict(block.context_windows), backend
        assert loaded.embedding_model == block.embedding_model, backend
        deployments = {role: (d.deployment, d.model, d.endpoint) for role, d in loaded.deployments.items()}
        assert deployments == dict(block.deployments), backend
        assert (loaded.api_version, loaded.deployment_name) == (block.api_version, block.deployment_name), backend
    assert len(config.warnings) == len(guide.warnings)
    for shown, expected in zip(config.warnings, guide.warnings):
        assert expected in shown and shown.startswith(f"{path}:"), "a warning names the file and line"


@pytest.mark.parametrize("name", dise_guide.NAMES)
def test_a_dise_snippet_without_its_variables_loads_with_those_backends_unavailable(name: str) -> None:
    """A missing secret is a reason a backend cannot be used, not a load error; the rest stays usable."""
    guide = dise_guide.GUIDE[name]
    config = load_config(dise_guide.fixture(name), environ={})
    assert {n: b.unavailable for n, b in config.backends.items()} == {n: b.unavailable for n, b in guide.blocks.items()}
    assert all(b.api_key is None for b in config.backends.values())


def test_yaml_syntax_error_names_line_and_column(write) -> None:
    path = write("config.yaml", "llm:\n  backend: local\n  local: [unclosed\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    assert info.value.location is not None and info.value.location.line == 4
    assert "YAML syntax error" in str(info.value)


def test_unknown_key_suggests_the_closest(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  ollama:\n    base_ur: http://x\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert f"{path}:4:5: llm.ollama.base_ur: unknown key 'base_ur'" in message
    assert "did you mean 'base_url'?" in message


def test_all_errors_are_reported_at_once(write) -> None:
    path = write(
        "config.yaml",
        "llm:\n  backend: ollama\n  fallback_backends: openai\n  ollama:\n    modles: {}\ntools:\n  t:\n    llm: {temperature: 9}\n",
    )
    with pytest.raises(InputErrors) as info:
        load_config(path, environ={})
    keys = [e.location.key for e in info.value.errors if e.location]
    assert keys == ["llm.fallback_backends", "llm.ollama.modles", "tools.t.llm.temperature"]
    lines = [e.location.line for e in info.value.errors if e.location]
    assert lines == [3, 5, 8]


def test_duplicate_keys_are_errors_not_silently_dropped(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  backend: openai\n")
    with pytest.raises(InputError, match="duplicate key") as info:
        load_config(path, environ={})
    assert info.value.location is not None and info.value.location.line == 3


def test_env_expansion_and_defaults(write) -> None:
    path = write(
        "config.yaml",
        "llm:\n  backend: ollama\n  ollama:\n    base_url: ${OLLAMA_URL:-http://localhost:11434}\n"
        "  openai:\n    api_key: ${MY_KEY}\n    base_url: http://${HOST}/v1\n",
    )
    config = load_config(path, environ={"MY_KEY": "sk-secret", "HOST": "box"})
    assert config.backends["ollama"].base_url == "http://localhost:11434"
    openai = config.backends["openai"]
    assert openai.base_url == "http://box/v1" and openai.unavailable is None
    assert openai.api_key is not None and openai.api_key.reveal() == "sk-secret"


def test_missing_secret_makes_the_backend_unavailable_not_the_load_fail(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  ollama: {}\n  anthropic:\n    api_key: ${ANTHROPIC_API_KEY}\n")
    config = load_config(path, environ={})
    assert config.backends["anthropic"].unavailable == "ANTHROPIC_API_KEY is not set"
    assert config.backends["ollama"].unavailable is None


def test_implicit_vendor_backend_reads_its_standard_variable(write) -> None:
    path = write("config.yaml", 'llm:\n  backend: "anthropic"\n  fallback_backends: ["openai", "ollama"]\n')
    config = load_config(path, environ={"OPENAI_API_KEY": "sk-x"})
    assert config.backends["anthropic"].unavailable == "ANTHROPIC_API_KEY is not set"
    assert config.backends["openai"].unavailable is None
    assert config.backends["ollama"].base_url == "http://localhost:11434"


def test_missing_variable_outside_a_backend_is_a_located_error(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ${PRIMARY}\n")
    with pytest.raises(InputError, match="PRIMARY is not set") as info:
        load_config(path, environ={})
    assert info.value.location is not None and info.value.location.line == 2


def test_unknown_backend_reference_suggests(write) -> None:
    path = write("config.yaml", "llm:\n  backend: olama\n  ollama: {}\n")
    with pytest.raises(InputError, match="unknown backend 'olama'") as info:
        load_config(path, environ={})
    assert "did you mean 'ollama'" in str(info.value)


def test_named_backend_needs_a_type(write) -> None:
    path = write("config.yaml", "llm:\n  backend: gpu_a\n  gpu_a:\n    base_url: http://a:11434\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    assert info.value.location is not None and info.value.location.key == "llm.gpu_a"


def test_two_ollama_boxes_by_name(write) -> None:
    path = write(
        "config.yaml",
        "llm:\n  backend: gpu_a\n  gpu_a: {type: ollama, base_url: 'http://a:11434'}\n"
        "  gpu_b: {type: ollama, endpoints: ['http://b:11434', {url: 'http://c:11434', weight: 2}]}\n",
    )
    config = load_config(path, environ={})
    assert config.backends["gpu_a"].type == config.backends["gpu_b"].type == "ollama"
    assert [e.url for e in config.backends["gpu_b"].endpoints_for("generator")] == ["http://b:11434", "http://c:11434"]
    assert config.backends["gpu_b"].endpoints_for(None)[1].weight == 2


def test_legacy_top_level_block_is_read_with_a_warning() -> None:
    config = load_config(ROOT / "tests" / "fixtures" / "dise" / "22_migration_before.yaml", environ={})
    assert config.backend == "ollama"
    assert config.backends["ollama"].base_url == "http://localhost:11434"
    assert any("move it under `llm:`" in w for w in config.warnings)


def test_config_show_never_contains_the_secret(write) -> None:
    path = write("config.yaml", "llm:\n  backend: openai\n  openai:\n    api_key: ${OPENAI_API_KEY}\n")
    config = load_config(path, environ={"OPENAI_API_KEY": "sk-very-secret-value"})
    assert "sk-very-secret-value" not in repr(config)
    shown = to_data(config)
    assert shown["llm"]["openai"]["api_key"] == "${OPENAI_API_KEY}", "the reference it was written as, never its value"
    assert "sk-very-secret-value" not in str(shown)


def test_an_error_about_a_secret_never_echoes_it(write) -> None:
    path = write("config.yaml", "llm:\n  backend: openai\n  openai:\n    api_key: 987654321987\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    assert "987654321987" not in str(info.value)
    assert info.value.location.key == "llm.openai.api_key" and "not shown" in str(info.value)


def test_secret_headers_are_redacted_in_config_show(write) -> None:
    path = write("config.yaml", "llm:\n  backend: openrouter\n  openrouter:\n    api_key: sk-or-1\n    headers: {Authorization: Bearer sk-hidden-9, X-Title: dse}\n")
    shown = to_data(load_config(path, environ={}))
    headers = shown["llm"]["openrouter"]["headers"]
    assert headers == {"Authorization": "***", "X-Title": "dse"} and "sk-hidden-9" not in str(shown)
