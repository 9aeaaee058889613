"""`dse config import`: each DiSE layout becomes a dse config that validates and routes as DiSE did.

The fixtures in tests/fixtures/dise_layouts are small, complete examples of the layouts found in
scottgal/mostlylucid.dse. For each, the expected (backend, model) per role is written out here
by hand from DiSE's rules (see the docstring of dse.config.dise_import), not computed by the code
under test, and so are the keys that must be reported as dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dse.cli import main
from dse.config import load_config, read_yaml
from dse.config.dise_import import ImportResult, import_file
from dse.config.model import Config
from dse.config.yaml_source import dotted
from dse.errors import InputError
from dse.routing import catalog
from dse.routing.resolver import Intent, Resolver

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dise_layouts"
SONNET = "claude-3-5-sonnet-20241022"

# fixture -> (default backend, {role: (backend, model)}, embedding (backend, model) or None, dropped keys)
LAYOUTS: dict[str, tuple[str, dict[str, tuple[str, str]], tuple[str, str] | None, set[str]]] = {
    "registry.yaml": (
        "ollama",  # the backend of defaults.general's model, although anthropic is enabled too
        {
            "overseer": ("ollama", "mistral-nemo"),
            "evaluator": ("ollama", "mistral-nemo"),
            "escalation": ("anthropic", SONNET),
            "generator": ("ollama", "qwen2.5-coder:7b"),
            "triage": ("ollama", "gemma3:1b"),
            "general": ("ollama", "mistral-nemo"),
            "god": ("anthropic", SONNET),
            "fast": ("ollama", "qwen2.5-coder:7b"),
            "veryfast": ("ollama", "gemma3:1b"),
            "code.general": ("ollama", "qwen2.5-coder:7b"),
            "code.god": ("anthropic", SONNET),
            "content.god": ("ollama", "mistral-nemo"),
            "content.escalation": ("anthropic", SONNET),
            "sonnet": ("anthropic", SONNET),
            "tiny": ("ollama", "gemma3:1b"),
        },
        ("ollama", "nomic-embed-text"),
        {
            "llm.models.tiny.timeout",
            "llm.models.writer.timeout",
            "llm.models.embedder.vector_size",
            "llm.embedding.allow_override",
            "llm.backends.anthropic.max_tokens",
            "execution",
        },
    ),
    "model_roles.yaml": (
        "anthropic",
        {
            "fast": ("anthropic", "claude-3-haiku-20240307"),
            "base": ("anthropic", SONNET),
            "powerful": ("anthropic", "claude-3-opus-20240229"),
        },
        ("ollama", "nomic-embed-text"),
        {"llm.model_roles.embedding", "ollama.embedding.vector_size", "logging"},
    ),
    "model_roles_local.yaml": (
        "lmstudio",
        {
            "fast": ("lmstudio", "phi-3-mini"),
            "base": ("lmstudio", "qwen2.5-coder-7b"),
            "powerful": ("lmstudio", "qwen2.5-coder-14b"),
        },
        ("lmstudio", "nomic-embed-text"),
        {"llm.api_settings.timeout", "llm.model_timeouts.phi-3-mini"},
    ),
    "model_tiers.yaml": (
        "ollama",
        {
            "coding.tier_1": ("ollama", "phi3:mini"),
            "coding.tier_2": ("ollama", "codellama"),
            "planning.tier_1": ("ollama", "llama3"),
            "fast": ("ollama", "phi3:mini"),
            "base": ("ollama", "codellama"),
            "overseer": ("ollama", "llama3"),
        },
        ("ollama", "nomic-embed-text"),
        {
            "model_tiers.coding.tier_1.name",
            "model_tiers.coding.tier_1.timeout",
            "model_tiers.coding.tier_1.use_for",
            "model_tiers.coding.tier_1.escalates_to",
            "model_tiers.coding.tier_1.description",
            "model_tiers.coding.tier_2.escalates_to",
            "role_to_tier_mapping.powerful",
            "embedding.vector_size",
        },
    ),
    "ollama_block.yaml": (
        "ollama",
        {
            "overseer": ("ollama", "llama3"),
            "generator": ("ollama", "codellama"),
            "evaluator": ("ollama", "llama3"),
            "evaluator.writing": ("ollama", "phi3:3.8b"),
            "triage": ("ollama", "tinyllama"),
            "escalation": ("ollama", "qwen2.5-coder:14b"),
        },
        ("ollama", "mxbai-embed-large"),  # DiSE reads ollama.models.embedding, never ollama.embedding.model
        {"ollama.context_windows.default", "ollama.embedding.model", "ollama.embedding.vector_size"},
    ),
    "context_windows.yaml": (
        "azure",
        {"fast": ("azure", "gpt-4o-mini"), "base": ("azure", "gpt-4o")},
        None,
        {"context_windows.default", "llm.azure.max_tokens"},
    ),
}


def imported(name: str, tmp_path: Path) -> tuple[ImportResult, Config]:
    """Import a fixture, write the dse config and load it as `dse` would, with no secrets set."""
    result = import_file(FIXTURES / name)
    out = tmp_path / f"{name}.dse.yaml"
    out.write_text(result.to_yaml())
    return result, load_config(out, environ={})


def resolve(config: Config, role: str, backend: str) -> tuple[str, str]:
    """Where a step with `model_key: role` goes; it names its backend only when that is not the default.

    A model the config does not list (a backend's built-in default) comes with a warning: none may.
    """
    named = None if backend == config.backend else backend
    resolution = Resolver(config).resolve(Intent("step", model_key=role, backend=named))
    assert resolution.warnings == ()
    return resolution.target.backend, resolution.target.model


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_role_resolves_to_the_model_dise_would_use(name: str, tmp_path: Path) -> None:
    default, roles, _, _ = LAYOUTS[name]
    _, config = imported(name, tmp_path)
    assert config.backend == default
    assert {role: resolve(config, role, backend) for role, (backend, _) in roles.items()} == roles


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_embeddings_go_where_dise_sent_them(name: str, tmp_path: Path) -> None:
    embedding = LAYOUTS[name][2]
    _, config = imported(name, tmp_path)
    if embedding is None:
        assert config.defaults.default_embedding_backend is None
    else:
        target = Resolver(config).embedding_target()
        assert (target.backend, target.model) == embedding


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_dropped_key_is_named_with_its_line(name: str, tmp_path: Path) -> None:
    result, _ = imported(name, tmp_path)
    lines = (FIXTURES / name).read_text().splitlines()
    assert {d.location.key for d in result.dropped} == LAYOUTS[name][3]
    for dropped in result.dropped:
        assert dropped.location.file == str(FIXTURES / name)
        assert dropped.location.line is not None and dropped.reason
        assert str(dropped.location.key).rsplit(".", 1)[-1] in lines[dropped.location.line - 1]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_no_key_is_left_out_of_the_report(name: str) -> None:
    """Every setting (leaf key) of the file is under something the report names, mapped or dropped."""
    result = import_file(FIXTURES / name)
    paths = [path for path in read_yaml(FIXTURES / name).positions if path]
    locations = [m.location for m in result.mapped] + [d.location for d in result.dropped]
    reported = {location.key for location in locations if location.key}
    keys = {dotted(p) for p in paths if not any(len(q) > len(p) and q[: len(p)] == p for q in paths)}
    silent = {k for k in keys if not any(k == r or k.startswith((f"{r}.", f"{r}[")) for r in reported)}
    assert silent == set()


def test_a_registry_without_a_general_model_runs_on_enabled_anthropic(write: Any) -> None:
    """DiSE's get_primary_llm_backend: no defaults.general, so an enabled anthropic backend is primary."""
    path = write(
        "registry.yaml",
        "llm:\n  models:\n    haiku: {name: claude-3-haiku-20240307, backend: anthropic}\n"
        "  defaults: {fast: haiku}\n  backends:\n    anthropic: {enabled: true}\n",
    )
    assert import_file(path).config["llm"]["backend"] == "anthropic"


def test_registry_metadata_becomes_selector_scores_dse_accepts(tmp_path: Path) -> None:
    _, config = imported("registry.yaml", tmp_path)
    assert config.selector.models["gemma3:1b"] == {"context_window": 8192, "cost": 8.5, "speed": 9.0, "quality": 4.0}
    tiny = catalog.lookup("gemma3:1b", "ollama", config.selector.models)
    assert (tiny.context_window, tiny.cost, tiny.speed, tiny.quality, tiny.known) == (8192, 8.5, 9.0, 4.0, True)
    assert catalog.price_tier(tiny) == "low"  # DiSE's very-low
    assert catalog.lookup("mistral-nemo", "ollama", config.selector.models).specialization == ("writing",)
    assert catalog.lookup("qwen2.5-coder:7b", "ollama", config.selector.models).specialization == ("code",)


def test_tier_words_become_selector_scores(tmp_path: Path) -> None:
    _, config = imported("model_tiers.yaml", tmp_path)
    assert config.selector.models["codellama"] == {"context_window": 16384, "cost": 5.0, "speed": 7.0, "quality": 8.5}


def test_context_windows_reach_the_selector(tmp_path: Path) -> None:
    for name, model, window in (("ollama_block.yaml", "qwen2.5-coder:14b", 32768), ("context_windows.yaml", "gpt-4o-mini", 65536)):
        _, config = imported(name, tmp_path)
        assert catalog.lookup(model, config.backends[config.backend].type, config.selector.models).context_window == window


def test_a_backend_gets_the_longest_timeout_of_its_models(tmp_path: Path) -> None:
    _, config = imported("registry.yaml", tmp_path)
    assert (config.backends["ollama"].timeout, config.backends["anthropic"].timeout) == (300, 120)
    _, local = imported("model_roles_local.yaml", tmp_path)
    assert local.backends["lmstudio"].timeout == 600


def test_api_settings_set_the_address_and_call_defaults(tmp_path: Path) -> None:
    _, config = imported("model_roles_local.yaml", tmp_path)
    assert config.backends["lmstudio"].base_url == "http://workstation:1234/v1"
    assert config.defaults.temperature == 0.2
    _, cloud = imported("model_roles.yaml", tmp_path)
    assert cloud.defaults.max_tokens == 4096


def test_legacy_endpoints_become_role_endpoints(tmp_path: Path) -> None:
    _, config = imported("ollama_block.yaml", tmp_path)
    resolver = Resolver(config)
    endpoints = {role: resolver.resolve(Intent("s", model_key=role)).target.endpoints for role in ("triage", "escalation", "overseer")}
    assert endpoints == {
        "triage": ("http://gpu-box:11434",),
        "escalation": ("http://localhost:11434", "http://gpu-box:11434"),
        "overseer": ("http://localhost:11434",),
    }


def test_an_embedding_model_is_not_a_chat_role(tmp_path: Path) -> None:
    _, config = imported("registry.yaml", tmp_path)
    assert "nomic-embed-text" not in config.backends["ollama"].models.values()


def test_env_references_are_kept_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real-secret")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-real-secret")
    registry = import_file(FIXTURES / "registry.yaml")
    azure = import_file(FIXTURES / "context_windows.yaml")
    assert registry.config["llm"]["anthropic"]["api_key"] == "${ANTHROPIC_API_KEY}"
    assert azure.config["llm"]["azure"]["api_key"] == "${AZURE_OPENAI_API_KEY}"
    assert "real-secret" not in registry.to_yaml() + azure.to_yaml()


def test_two_sources_for_one_role_keep_the_first_and_report_the_other(write: Any) -> None:
    path = write(
        "both.yaml",
        "llm:\n  ollama:\n    models:\n      generator: qwen2.5-coder:14b\n"
        "ollama:\n  models:\n    generator: codellama\n",
    )
    result = import_file(path)
    assert result.config["llm"]["ollama"]["models"]["generator"] == "qwen2.5-coder:14b"
    (dropped,) = result.dropped
    assert (dropped.location.line, dropped.location.key) == (7, "ollama.models.generator")
    assert "conflicts with llm.ollama.models.generator" in dropped.reason and f"{path}:4" in dropped.reason


def test_a_role_endpoint_under_endpoints_for_every_role_is_reported(write: Any) -> None:
    path = write(
        "both.yaml",
        "llm:\n  ollama:\n    endpoints: [http://a:11434]\n"
        "ollama:\n  models:\n    triage: {model: tinyllama, endpoint: http://b:11434}\n",
    )
    result = import_file(path)
    assert result.config["llm"]["ollama"]["endpoints"] == ["http://a:11434"]
    (dropped,) = result.dropped
    assert dropped.location.key == "ollama.models.triage.endpoint" and "conflicts with llm.ollama.endpoints" in dropped.reason


def test_a_url_dse_cannot_call_is_dropped_not_written(write: Any, tmp_path: Path) -> None:
    path = write(
        "urls.yaml",
        "llm:\n  ollama:\n    endpoints: [gpu-box]\nollama:\n  base_url: localhost:11434\n  models: {triage: tinyllama}\n",
    )
    result = import_file(path)
    assert [(d.location.line, d.location.key) for d in result.dropped] == [(3, "llm.ollama.endpoints"), (5, "ollama.base_url")]
    assert "URL" in result.dropped[0].reason and "http://" in result.dropped[1].reason
    (tmp_path / "out.yaml").write_text(result.to_yaml())
    assert load_config(tmp_path / "out.yaml", environ={}).backends["ollama"].models == {"triage": "tinyllama"}


def test_a_legacy_role_runs_on_llm_backend_whatever_its_backend_key_says(write: Any) -> None:
    """DiSE's _parse_model_config never reads `backend:`; the call goes to llm.backend's client."""
    path = write(
        "hybrid.yaml",
        "llm:\n  backend: anthropic\nollama:\n  models:\n"
        "    triage: {model: claude-3-haiku-20240307, backend: openai}\n    generator: claude-3-5-sonnet-20241022\n",
    )
    result = import_file(path)
    assert result.config["llm"]["anthropic"]["models"] == {"triage": "claude-3-haiku-20240307", "generator": SONNET}
    (dropped,) = result.dropped
    assert (dropped.location.line, dropped.location.key) == (5, "ollama.models.triage.backend")
    assert "llm.backend, anthropic" in dropped.reason


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("- a\n- b\n", "must be a YAML mapping", 1),
        ("execution:\n  retries: 3\n", "not a DiSE config layout", 1),
        ("llm:\n  model_roles: [a, b]\n", "expected a mapping", 2),
        ("llm:\n  models:\n    m: {name: x, backend: groq}\n  defaults: {general: m}\n", "not a backend type", 3),
        ("llm:\n  global_defaults: {default_backend: groq}\n  ollama: {}\n", "not a backend type", 2),
        ("llm:\n  backend: ollama\n  ollama: {models: {a: x}}\n  ollama: {}\n", "duplicate key", 4),
    ],
)
def test_bad_input_is_a_located_error(write: Any, text: str, message: str, line: int) -> None:
    path = write("dise.yaml", text)
    with pytest.raises(InputError) as caught:
        import_file(path)
    errors = getattr(caught.value, "errors", [caught.value])
    assert message in errors[0].message
    assert errors[0].location is not None and (errors[0].location.file, errors[0].location.line) == (str(path), line)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_a_config_that_validates_and_reports_on_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source, out = FIXTURES / "registry.yaml", tmp_path / "config.yaml"
    code, stdout, err = cli(capsys, "config", "import", str(source), "-o", str(out))
    assert (code, stdout) == (0, "")
    assert f"dropped {source}:41:7: llm.models.embedder.vector_size: " in err
    assert f"mapped  {source}:46:5: llm.defaults.general -> llm.ollama.models.overseer = 'mistral-nemo'" in err
    assert cli(capsys, "validate", "--config", str(out))[0] == 0


def test_cli_prints_the_config_without_output_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = cli(capsys, "config", "import", str(FIXTURES / "model_tiers.yaml"))
    assert code == 0
    assert yaml.safe_load(stdout) == import_file(FIXTURES / "model_tiers.yaml").config


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    source = FIXTURES / "ollama_block.yaml"
    code, stdout, _ = cli(capsys, "config", "import", str(source), "--json")
    data = json.loads(stdout)
    assert code == 0 and set(data) == {"config", "mapped", "dropped"}
    assert data["config"]["llm"]["ollama"]["models"]["triage"] == "tinyllama"
    dropped = {d["key"]: d for d in data["dropped"]}
    assert (dropped["ollama.embedding.vector_size"]["file"], dropped["ollama.embedding.vector_size"]["line"]) == (str(source), 24)
    assert "size" in dropped["ollama.embedding.vector_size"]["reason"]
    assert any(m["key"] == "ollama.models.triage.model" and m["target"] == "llm.ollama.models.triage" for m in data["mapped"])


@pytest.mark.parametrize("text", ["just text\n", "llm: 3\n"])
def test_cli_bad_input_exits_2_with_the_place(capsys: pytest.CaptureFixture[str], write: Any, text: str) -> None:
    path = write("bad.yaml", text)
    code, _, err = cli(capsys, "config", "import", str(path))
    assert code == 2 and f"dse: error: {path}:1:" in err and "Traceback" not in err


def test_cli_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "config", "import", str(tmp_path / "nope.yaml"))
    assert code == 2 and "file not found" in err
