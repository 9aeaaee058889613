"""The JSON Schemas in schemas/ are the single source of truth for valid input.

These tests check that the schemas are themselves valid and documented, that every YAML
snippet of the mostlylucid DiSE backend guide (tests/fixtures/dise/) is a valid config, and
that the mistakes a user is likely to make are rejected.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator

import dise_guide
import pytest
import yaml
from jsonschema import Draft202012Validator

from dse.backends.registry import type_names
from dse.config.schema import schema_text, validate
from dse.config.yaml_source import dotted, parse_yaml
from dse.errors import InputError, InputErrors

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
DISE_FIXTURES = ROOT / "tests" / "fixtures" / "dise"
FIXTURE_FILES = sorted(DISE_FIXTURES.glob("*.yaml"))

BACKEND_TYPES = type_names()


def load_schema(name: str) -> dict[str, Any]:
    with open(SCHEMAS / f"{name}.schema.json", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def config_validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema("config"))


@pytest.fixture(scope="module")
def workflow_validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema("workflow"))


def errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


# --------------------------------------------------------------------------- the schemas themselves


@pytest.mark.parametrize("name", ["config", "workflow"])
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _property_schemas(node: Any, pointer: str = "#") -> Iterator[tuple[str, Any]]:
    """Every schema that describes a key: values of properties/patternProperties, and schema-valued additionalProperties."""
    if isinstance(node, dict):
        for keyword in ("properties", "patternProperties"):
            for key, sub in node.get(keyword, {}).items():
                yield f"{pointer}/{keyword}/{key}", sub
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            yield f"{pointer}/additionalProperties", extra
        for key, value in node.items():
            if key in ("properties", "patternProperties"):
                for name, sub in value.items():
                    yield from _property_schemas(sub, f"{pointer}/{key}/{name}")
            elif key not in ("enum", "const", "default", "examples", "required"):
                yield from _property_schemas(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _property_schemas(item, f"{pointer}/{index}")


@pytest.mark.parametrize("name", ["config", "workflow"])
def test_every_property_has_a_description(name: str) -> None:
    schema = load_schema(name)
    found = list(_property_schemas(schema))
    assert len(found) > 20, "the walk found suspiciously few properties"
    missing = [
        where for where, sub in found
        if not (isinstance(sub, dict) and isinstance(sub.get("description"), str) and sub["description"].strip())
    ]
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("name", ["config", "workflow"])
def test_every_local_ref_resolves(name: str) -> None:
    schema = load_schema(name)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert refs
    for ref in refs:
        if ref == schema["$schema"]:
            continue  # a step's output_schema is itself a schema of the draft this file declares
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in schema["$defs"], f"dangling $ref {ref}"


def test_backend_type_lists_agree() -> None:
    """The type enum, the llm: pattern and the legacy top-level pattern name the registry's types."""
    schema = load_schema("config")
    pattern = "^(" + "|".join(BACKEND_TYPES) + ")$"
    assert sorted(schema["$defs"]["backendType"]["enum"]) == sorted(BACKEND_TYPES)
    assert list(schema["$defs"]["llm"]["patternProperties"]) == [pattern]
    assert list(schema["patternProperties"]) == [pattern]
    assert schema["patternProperties"][pattern].get("deprecated") is True


def test_the_schema_files_are_what_the_registry_makes_them() -> None:
    """A new backend type reaches the files with `make schemas`; a stale file fails here."""
    for name in ("config", "workflow"):
        assert (SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8") == schema_text(name), f"run `make schemas` ({name})"


def test_the_validator_takes_backend_types_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry, not the file, decides which types validate: a type declared only there is accepted."""
    from dse.backends import registry
    from dse.config import schema

    extended = {**registry.backend_types(), "koboldcpp": registry.backend_type("lmstudio")}
    monkeypatch.setattr(schema, "type_names", lambda: tuple(extended))
    fresh = Draft202012Validator(schema.schema_document("config"))
    assert errors(fresh, {"llm": {"kobold": {"type": "koboldcpp"}, "koboldcpp": {}}}) == []
    assert errors(config_validator_for_file(), {"llm": {"kobold": {"type": "koboldcpp"}}}) != []


def config_validator_for_file() -> Draft202012Validator:
    return Draft202012Validator(load_schema("config"))


# --------------------------------------------------------------------------- DiSE guide fixtures


def test_all_dise_snippets_have_fixtures_and_expectations() -> None:
    # quick starts 3, top-level config 1, backend blocks 5, tools options 3, model key/direct 2,
    # model_selector 1, advanced patterns 5, env var 1, migration before/after/override 3
    assert len(FIXTURE_FILES) == 24, [p.name for p in FIXTURE_FILES]
    assert [p.stem for p in FIXTURE_FILES] == dise_guide.NAMES, "each fixture's behaviour is spelled out in tests/dise_guide.py"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_dise_fixture_is_annotated(path: Path) -> None:
    """The header names the guide section whose behaviour tests/dise_guide.py asserts for this file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert lines[0] == "# yaml-language-server: $schema=../../../schemas/config.schema.json"
    assert f"# DiSE guide: {dise_guide.GUIDE[path.stem].section}" in header
    assert any(line.startswith("# expect: ") for line in header), "missing '# expect:' comment"


def _mappings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from _mappings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _mappings(value, (*path, index))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_dise_fixture_validates_and_the_schema_guards_each_of_its_blocks(path: Path) -> None:
    """Valid as the guide wrote it; and no block of it is a free-for-all.

    A stray nested key is put into every mapping of the snippet in turn: the schema must
    reject each one at that key path, so a block whose schema were loosened to accept
    anything (and so "validate" every snippet) fails here.
    """
    source = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    validate(source, "config")
    probed = list(_mappings(source.data))
    assert len(probed) >= 2
    for where in probed:
        document = copy.deepcopy(source.data)
        node = document
        for key in where:
            node = node[key]
        node["zz_stray"] = {"nested": 1}
        with pytest.raises(InputError) as caught:
            validate(source, "config", document)
        found = caught.value.errors if isinstance(caught.value, InputErrors) else [caught.value]
        stray = dotted((*where, "zz_stray"))
        assert any(e.location and (e.location.key or "").startswith(stray) for e in found), (where, [str(e) for e in found])
        assert all(e.location and e.location.file == str(path) for e in found)


# --------------------------------------------------------------------------- config: positive cases

DESIGN_CONFIG = """
llm:
  backend: local
  fallback_backends: [ollama]
  global_defaults:
    default_backend: local
    default_embedding_backend: local
    temperature: 0.7
    max_tokens: 512
  local:
    type: llamacpp
    managed: {model: smollm2, replicas: 2, threads: 1}
    models: {overseer: smollm2, generator: smollm2, evaluator: smollm2, triage: smollm2}
  ollama:
    base_url: http://localhost:11434
    models: {overseer: llama3, generator: "qwen2.5-coder:14b", triage: tinyllama}
    endpoints:
      overseer: [http://localhost:11434, http://server2:11434]
    context_windows: {llama3: 8192}
  anthropic:
    api_key: ${ANTHROPIC_API_KEY}
    models: {overseer: claude-3-5-sonnet-20241022, triage: claude-3-haiku-20240307}
model_selector:
  enabled: true
  weights: {context_window: 30, speed: 25, cost: 15, quality: 15, specialization: 15}
tools:
  reviewer:
    type: llm
    llm: {model_key: generator}
    system: You review code changes.
    prompt: "Review this diff:\\n{{ diff }}"
"""

FULL_CONFIG = """
llm:
  backend: gpu_a
  fallback_backends: [gpu_b, openrouter]
  balancer:
    policy: least_loaded
    min_free_gpu_memory_mb: 2048
    max_gpu_utilization: 90
    queue_limit: 100
    queue_timeout: 30
    metrics_max_age: 5
  gpu_a:
    type: ollama
    enabled: true
    base_url: http://10.0.0.5:11434
    endpoints:
      - http://10.0.0.5:11434
      - {url: http://10.0.0.6:11434, weight: 2, max_concurrency: 4, gpu: 0}
      - {url: http://10.0.0.7:11434, gpu: GPU-5f1c2d3e-0000-1111-2222-333344445555}
    timeout: 60
    balancer: {policy: round_robin}
  gpu_b:
    type: vllm
    base_url: http://10.0.0.8:8000/v1
    api_key: null
    organization: null
  openrouter:
    api_key: ${OPENROUTER_API_KEY:-}
    headers: {HTTP-Referer: https://example.org, X-Title: dse}
    models: {generator: "meta-llama/llama-3.1-70b-instruct"}
  local:
    type: llamacpp
    managed:
      model: /models/qwen.gguf
      replicas: 4
      threads: 2
      ctx_size: 4096
      parallel: 2
      binary: /usr/local/bin/llama-server
      host: 127.0.0.1
      startup_timeout: 120
model_selector:
  enabled: true
  top_k: 3
  models:
    "qwen2.5-coder:14b": {context_window: 131072, speed: 6, cost: 10, quality: 7, specialization: [code]}
tools:
  summarizer:
    description: Summarise text.
    backend: null
    llm: {model: auto, temperature: 0.2, max_tokens: 256, timeout: 30}
    prompt: "Summarise:\\n{{ text }}"
"""


@pytest.mark.parametrize("text", [DESIGN_CONFIG, FULL_CONFIG], ids=["design-example", "every-key"])
def test_config_examples_validate(text: str, config_validator: Draft202012Validator) -> None:
    assert errors(config_validator, yaml.safe_load(text)) == []


def test_every_backend_type_is_accepted_by_name_and_by_type(config_validator: Draft202012Validator) -> None:
    for kind in BACKEND_TYPES:
        assert errors(config_validator, {"llm": {kind: {}}}) == [], kind
        assert errors(config_validator, {"llm": {f"my_{kind}": {"type": kind}}}) == [], kind
        assert errors(config_validator, {kind: {}}) == [], kind  # legacy top-level form


def test_empty_config_is_valid(config_validator: Draft202012Validator) -> None:
    assert errors(config_validator, {}) == []


# --------------------------------------------------------------------------- config: negative cases

BASE = yaml.safe_load(DESIGN_CONFIG)


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with `value` set at the dotted `path`."""
    document = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return document


BAD_CONFIGS = {
    "unknown-top-level-key": _with("llms", {"backend": "ollama"}),
    "unknown-legacy-block-name": _with("gpu_a", {"type": "ollama"}),
    "unknown-key-in-backend-block": _with("llm.ollama.base_uri", "http://localhost:11434"),
    "unknown-key-in-named-backend-block": _with("llm.local.model", "smollm2"),
    "fallback-backends-as-string": _with("llm.fallback_backends", "ollama"),
    "fallback-backends-duplicate": _with("llm.fallback_backends", ["ollama", "ollama"]),
    "named-block-without-type": _with("llm.gpu_a", {"base_url": "http://10.0.0.5:11434"}),
    "bad-backend-type": _with("llm.gpu_a", {"type": "olama"}),
    "endpoint-item-without-url": _with("llm.ollama.endpoints", [{"weight": 1}]),
    "endpoint-item-zero-weight": _with("llm.ollama.endpoints", [{"url": "http://a:1", "weight": 0}]),
    "endpoint-item-unknown-key": _with("llm.ollama.endpoints", [{"url": "http://a:1", "gpus": 0}]),
    "endpoint-item-number": _with("llm.ollama.endpoints", [11434]),
    "endpoint-item-zero-concurrency": _with("llm.ollama.endpoints", [{"url": "http://a:1", "max_concurrency": 0}]),
    "endpoint-item-negative-gpu": _with("llm.ollama.endpoints", [{"url": "http://a:1", "gpu": -1}]),
    "endpoints-empty-list": _with("llm.ollama.endpoints", []),
    "endpoints-role-as-string": _with("llm.ollama.endpoints", {"overseer": "http://a:1"}),
    "models-value-not-string": _with("llm.ollama.models", {"overseer": 3}),
    "context-window-zero": _with("llm.ollama.context_windows", {"llama3": 0}),
    "headers-value-not-string": _with("llm.ollama.headers", {"X-Retries": 3}),
    "azure-deployment-without-deployment": _with("llm.azure", {"deployments": {"overseer": {"model": "gpt-4"}}}),
    "azure-deployment-unknown-key": _with("llm.azure", {"deployments": {"overseer": {"deployment": "d", "region": "x"}}}),
    "managed-zero-replicas": _with("llm.local.managed", {"model": "smollm2", "replicas": 0}),
    "managed-too-many-slots": _with("llm.local.managed", {"model": "smollm2", "parallel": 65}),
    "managed-tiny-context": _with("llm.local.managed", {"model": "smollm2", "ctx_size": 128}),
    "managed-unknown-key": _with("llm.local.managed", {"model": "smollm2", "port": 8080}),
    "balancer-bad-policy": _with("llm.balancer", {"policy": "fastest"}),
    "balancer-utilization-over-100": _with("llm.balancer", {"max_gpu_utilization": 150}),
    "global-defaults-unknown-key": _with("llm.global_defaults.default_model", "llama3"),
    "global-defaults-temperature-too-high": _with("llm.global_defaults.temperature", 3),
    "global-defaults-zero-max-tokens": _with("llm.global_defaults.max_tokens", 0),
    "timeout-zero": _with("llm.ollama.timeout", 0),
    "selector-unknown-weight": _with("model_selector.weights", {"latency": 10}),
    "selector-negative-weight": _with("model_selector.weights", {"speed": -1}),
    "selector-score-over-10": _with("model_selector.models", {"llama3": {"speed": 11}}),
    "tool-unknown-key": _with("tools.reviewer.model", "llama3"),
    "tool-bad-type": _with("tools.reviewer.type", "python"),
    "tool-llm-unknown-key": _with("tools.reviewer.llm", {"model_name": "llama3"}),
    "tool-not-an-object": _with("tools.reviewer", "llm"),
}


# What a user is told for each bad config: the key path it points at, and the message.
CONFIG_ERRORS: dict[str, tuple[str | None, str]] = {
    "unknown-top-level-key": ("llms", "unknown key 'llms'"),
    "unknown-legacy-block-name": ("gpu_a", "unknown key 'gpu_a'"),
    "unknown-key-in-backend-block": ("llm.ollama.base_uri", "unknown key 'base_uri'"),
    "unknown-key-in-named-backend-block": ("llm.local.model", "unknown key 'model'"),
    "fallback-backends-as-string": ("llm.fallback_backends", 'expected array, got str "ollama"'),
    "fallback-backends-duplicate": ("llm.fallback_backends", "['ollama', 'ollama'] has non-unique elements"),
    "named-block-without-type": ("llm.gpu_a", "missing required key 'type'"),
    "bad-backend-type": ("llm.gpu_a.type", "'olama' is not allowed here"),
    "endpoint-item-without-url": ("llm.ollama.endpoints[0]", "missing required key 'url'"),
    "endpoint-item-zero-weight": ("llm.ollama.endpoints[0].weight", "0 is out of range (exclusiveMinimum 0)"),
    "endpoint-item-unknown-key": ("llm.ollama.endpoints[0].gpus", "unknown key 'gpus'"),
    "endpoint-item-number": ("llm.ollama.endpoints[0]", "expected string or object, got int 11434"),
    "endpoint-item-zero-concurrency": ("llm.ollama.endpoints[0].max_concurrency", "0 is out of range (minimum 1)"),
    "endpoint-item-negative-gpu": ("llm.ollama.endpoints[0].gpu", "-1 is out of range (minimum 0)"),
    "endpoints-empty-list": ("llm.ollama.endpoints", "[] should be non-empty"),
    "endpoints-role-as-string": ("llm.ollama.endpoints.overseer", 'expected array, got str "http://a:1"'),
    "models-value-not-string": ("llm.ollama.models.overseer", "expected string, got int 3"),
    "context-window-zero": ("llm.ollama.context_windows.llama3", "0 is out of range (minimum 1)"),
    "headers-value-not-string": ("llm.ollama.headers.X-Retries", "expected string, got int 3"),
    "azure-deployment-without-deployment": ("llm.azure.deployments.overseer", "missing required key 'deployment'"),
    "azure-deployment-unknown-key": ("llm.azure.deployments.overseer.region", "unknown key 'region'"),
    "managed-zero-replicas": ("llm.local.managed.replicas", "0 is out of range (minimum 1)"),
    "managed-too-many-slots": ("llm.local.managed.parallel", "65 is out of range (maximum 64)"),
    "managed-tiny-context": ("llm.local.managed.ctx_size", "128 is out of range (minimum 256)"),
    "managed-unknown-key": ("llm.local.managed.port", "unknown key 'port'"),
    "balancer-bad-policy": ("llm.balancer.policy", "'fastest' is not allowed here"),
    "balancer-utilization-over-100": ("llm.balancer.max_gpu_utilization", "150 is out of range (maximum 100)"),
    "global-defaults-unknown-key": ("llm.global_defaults.default_model", "unknown key 'default_model'"),
    "global-defaults-temperature-too-high": ("llm.global_defaults.temperature", "3 is out of range (maximum 2)"),
    "global-defaults-zero-max-tokens": ("llm.global_defaults.max_tokens", "0 is out of range (minimum 1)"),
    "timeout-zero": ("llm.ollama.timeout", "0 is out of range (exclusiveMinimum 0)"),
    "selector-unknown-weight": ("model_selector.weights.latency", "unknown key 'latency'"),
    "selector-negative-weight": ("model_selector.weights.speed", "-1 is out of range (minimum 0)"),
    "selector-score-over-10": ("model_selector.models.llama3.speed", "11 is out of range (maximum 10)"),
    "tool-unknown-key": ("tools.reviewer.model", "unknown key 'model'"),
    "tool-bad-type": ("tools.reviewer.type", "'python' is not allowed here"),
    "tool-llm-unknown-key": ("tools.reviewer.llm.model_name", "unknown key 'model_name'"),
    "tool-not-an-object": ("tools.reviewer", 'expected object, got str "llm"'),
}
# Hints that point at the fix, where the schema knows it.
CONFIG_HINTS = {
    "unknown-top-level-key": "did you mean 'llm'?",
    "unknown-key-in-backend-block": "did you mean 'base_url'?",
    "bad-backend-type": "did you mean 'ollama'?",
    "endpoint-item-unknown-key": "did you mean 'gpu'?",
    "balancer-bad-policy": "one of: least_loaded, round_robin, random",
    "tool-llm-unknown-key": "did you mean 'model_key'?",
}
# Known wrong answers, kept visible: strict, so fixing the engine turns them into failures to remove.
def located_error(document: Any, schema_name: str, file: str) -> InputError:
    """The one error `dse` reports for `document` written out as YAML, through the engine's validator."""
    text = yaml.safe_dump(document, sort_keys=False)
    source = parse_yaml(text, file)
    with pytest.raises(InputError) as caught:
        validate(source, schema_name)
    error = caught.value
    assert not isinstance(error, InputErrors), f"one mistake, one error: {error}"
    assert error.location is not None and error.location.file == file
    if error.location.key is not None:
        # The line named is the one that holds the key (or, for a list item, the item).
        line = text.splitlines()[error.location.line - 1]
        last = error.location.key.rsplit(".", 1)[-1]
        name = last.split("[", 1)[0]
        assert (line.lstrip().startswith("-") if last.endswith("]") else f"{name}:" in line), (error.location, line)
        assert str(error).startswith(f"{file}:{error.location.line}:{error.location.column}: {error.location.key}: ")
    return error


@pytest.mark.parametrize(
    ("name", "document"),
    [
        pytest.param(n, d, id=n)
        for n, d in BAD_CONFIGS.items()
    ],
)
def test_bad_config_is_rejected_at_its_key_with_what_is_wrong(name: str, document: dict[str, Any]) -> None:
    key, message = CONFIG_ERRORS[name]
    error = located_error(document, "config", "config.yaml")
    assert error.location is not None
    assert (error.location.key, error.message) == (key, message)
    if name in CONFIG_HINTS:
        assert error.hint == CONFIG_HINTS[name]


def test_every_bad_config_has_its_expected_error() -> None:
    assert set(CONFIG_ERRORS) == set(BAD_CONFIGS)


# --------------------------------------------------------------------------- workflows

DESIGN_WORKFLOW = """
name: review
inputs:
  target: {type: string, default: "."}
steps:
  - id: diff
    run: [git, diff, --stat, "{{ inputs.target }}"]
  - id: triage
    tool: triage
    with: {diff: "{{ steps.diff.output }}"}
  - id: review
    tool: reviewer
    needs: [triage]
    when: "steps.triage.output != 'trivial'"
    prompt: "Use claude for this. {{ steps.diff.output }}"
    retry: {attempts: 3, backoff: 2.0}
    timeout: 120
  - id: summary
    tool: summarizer
    with: {review: "{{ steps.review.output }}"}
outputs:
  report: "{{ steps.summary.output }}"
"""

FULL_WORKFLOW = """
name: everything
description: Uses every step key once.
inputs:
  files: {type: array, default: [a.py, b.py], description: Files to review, required: false}
  depth: {type: integer, required: true}
env: [HOME, CI]
max_parallel: 4
steps:
  - id: list_files
    name: List files
    run: [ls, "-1"]
    cwd: "{{ inputs.target }}"
    env: {LC_ALL: C}
    continue_on_error: true
  - id: per-file
    prompt: "Explain {{ item }}"
    system: You are terse.
    for_each: "{{ inputs.files }}"
    backend: ollama
    model_key: generator
    output: json
    output_schema: {type: object}
    stream: false
    temperature: 0.1
    max_tokens: 128
  - id: literal_fanout
    prompt: "Say {{ item }}"
    for_each: [one, two]
    model: "anthropic:claude-3-haiku-20240307"
  - id: chosen
    prompt: "Write a binary search in Python."
    select:
      task: generate Python code
      max_cost: 5
      min_speed: 3
      min_context: 8192
      specialization: code
      backends: [ollama, anthropic]
      exclude_backends: [openai]
      top_k: 3
  - id: nested
    workflow: sub/summarise.yaml
    with: {text: "{{ steps.chosen.output }}", n: 3}
    needs: [chosen, per-file]
outputs:
  report: "{{ steps.nested.output }}"
"""


@pytest.mark.parametrize("text", [DESIGN_WORKFLOW, FULL_WORKFLOW], ids=["design-example", "every-key"])
def test_workflow_examples_validate(text: str, workflow_validator: Draft202012Validator) -> None:
    assert errors(workflow_validator, yaml.safe_load(text)) == []


def _step(**keys: Any) -> dict[str, Any]:
    return {"name": "w", "steps": [{"id": "s", **keys}]}


BAD_WORKFLOWS = {
    "run-as-string": _step(run="git diff --stat"),
    "run-empty": _step(run=[]),
    "run-item-a-mapping": _step(run=["sleep", {"seconds": 1}]),
    "step-id-with-spaces": {"name": "w", "steps": [{"id": "my step", "prompt": "hi"}]},
    "step-id-starting-with-digit": {"name": "w", "steps": [{"id": "1st", "prompt": "hi"}]},
    "step-without-id": {"name": "w", "steps": [{"prompt": "hi"}]},
    "step-does-nothing": _step(name="idle"),
    "step-only-with": _step(**{"with": {"x": 1}}),
    "run-with-tool": _step(run=["ls"], tool="reviewer"),
    "run-with-prompt": _step(run=["ls"], prompt="hi"),
    "run-with-workflow": _step(run=["ls"], workflow="sub.yaml"),
    "workflow-with-tool": _step(workflow="sub.yaml", tool="reviewer"),
    "workflow-with-prompt": _step(workflow="sub.yaml", prompt="hi"),
    "unknown-step-key": _step(prompt="hi", depends_on=["x"]),
    "needs-bad-id": _step(prompt="hi", needs=["not an id"]),
    "needs-duplicate": _step(prompt="hi", needs=["a", "a"]),
    "retry-zero-attempts": _step(prompt="hi", retry={"attempts": 0}),
    "retry-unknown-key": _step(prompt="hi", retry={"attempts": 2, "delay": 1}),
    "timeout-zero": _step(prompt="hi", timeout=0),
    "bad-output-kind": _step(prompt="hi", output="yaml"),
    "select-unknown-key": _step(prompt="hi", select={"fastest": True}),
    "for-each-number": _step(prompt="hi", for_each=3),
    "missing-name": {"steps": [{"id": "s", "prompt": "hi"}]},
    "missing-steps": {"name": "w"},
    "empty-steps": {"name": "w", "steps": []},
    "unknown-top-level-key": {"name": "w", "jobs": [], "steps": [{"id": "s", "prompt": "hi"}]},
    "bad-input-type": {"name": "w", "inputs": {"n": {"type": "int"}}, "steps": [{"id": "s", "prompt": "hi"}]},
    "input-unknown-key": {"name": "w", "inputs": {"n": {"kind": "string"}}, "steps": [{"id": "s", "prompt": "hi"}]},
    "env-bad-name": {"name": "w", "env": ["NOT-A-VAR"], "steps": [{"id": "s", "prompt": "hi"}]},
    "max-parallel-zero": {"name": "w", "max_parallel": 0, "steps": [{"id": "s", "prompt": "hi"}]},
    "output-not-string": {"name": "w", "outputs": {"r": 1}, "steps": [{"id": "s", "prompt": "hi"}]},
}


ID_PATTERN = "^[A-Za-z_][A-Za-z0-9_-]*$"
RUN_ALONE = "A `run` step executes a command; it cannot also have `tool`, `prompt` or `workflow`."
WORKFLOW_ALONE = "A `workflow` step runs a sub-workflow; it cannot also have `tool` or `prompt`."
WORKFLOW_ERRORS: dict[str, tuple[str | None, str]] = {
    "run-as-string": ("steps[0].run", 'expected array, got str "git diff --stat"'),
    "run-empty": ("steps[0].run", "[] should be non-empty"),
    "run-item-a-mapping": ("steps[0].run[1]", 'expected string or number, got dict {"seconds": 1}'),
    "step-id-with-spaces": ("steps[0].id", f"'my step' does not match the pattern {ID_PATTERN}"),
    "step-id-starting-with-digit": ("steps[0].id", f"'1st' does not match the pattern {ID_PATTERN}"),
    "step-without-id": ("steps[0]", "missing required key 'id'"),
    # A step needs one of tool, prompt, run or workflow; the schema names the first of them.
    "step-does-nothing": ("steps[0]", "missing required key 'tool'"),
    "step-only-with": ("steps[0]", "missing required key 'tool'"),
    "run-with-tool": ("steps[0]", "invalid combination of keys at steps[0]"),
    "run-with-prompt": ("steps[0]", "invalid combination of keys at steps[0]"),
    "run-with-workflow": ("steps[0]", "invalid combination of keys at steps[0]"),
    "workflow-with-tool": ("steps[0]", "invalid combination of keys at steps[0]"),
    "workflow-with-prompt": ("steps[0]", "invalid combination of keys at steps[0]"),
    "unknown-step-key": ("steps[0].depends_on", "unknown key 'depends_on'"),
    "needs-bad-id": ("steps[0].needs[0]", f"'not an id' does not match the pattern {ID_PATTERN}"),
    "needs-duplicate": ("steps[0].needs", "['a', 'a'] has non-unique elements"),
    "retry-zero-attempts": ("steps[0].retry.attempts", "0 is out of range (minimum 1)"),
    "retry-unknown-key": ("steps[0].retry.delay", "unknown key 'delay'"),
    "timeout-zero": ("steps[0].timeout", "0 is out of range (exclusiveMinimum 0)"),
    "bad-output-kind": ("steps[0].output", "'yaml' is not allowed here"),
    "select-unknown-key": ("steps[0].select.fastest", "unknown key 'fastest'"),
    "for-each-number": ("steps[0].for_each", "expected string or array, got int 3"),
    "missing-name": (None, "missing required key 'name'"),
    "missing-steps": (None, "missing required key 'steps'"),
    "empty-steps": ("steps", "[] should be non-empty"),
    "unknown-top-level-key": ("jobs", "unknown key 'jobs'"),
    "bad-input-type": ("inputs.n.type", "'int' is not allowed here"),
    "input-unknown-key": ("inputs.n.kind", "unknown key 'kind'"),
    "env-bad-name": ("env[0]", "'NOT-A-VAR' does not match the pattern ^[A-Za-z_][A-Za-z0-9_]*$"),
    "max-parallel-zero": ("max_parallel", "0 is out of range (minimum 1)"),
    "output-not-string": ("outputs.r", "expected string, got int 1"),
}
WORKFLOW_HINTS = {
    "run-with-tool": RUN_ALONE,
    "run-with-prompt": RUN_ALONE,
    "run-with-workflow": RUN_ALONE,
    "workflow-with-tool": WORKFLOW_ALONE,
    "workflow-with-prompt": WORKFLOW_ALONE,
    "bad-input-type": "did you mean 'integer'?",
    "bad-output-kind": "one of: text, json",
    "retry-unknown-key": "allowed keys: attempts, backoff",
}


@pytest.mark.parametrize(("name", "document"), BAD_WORKFLOWS.items(), ids=BAD_WORKFLOWS.keys())
def test_bad_workflow_is_rejected_at_its_key_with_what_is_wrong(name: str, document: dict[str, Any]) -> None:
    key, message = WORKFLOW_ERRORS[name]
    error = located_error(document, "workflow", "wf.yaml")
    assert error.location is not None
    assert (error.location.key, error.message) == (key, message)
    if name in WORKFLOW_HINTS:
        assert error.hint == WORKFLOW_HINTS[name]


def test_every_bad_workflow_has_its_expected_error() -> None:
    assert set(WORKFLOW_ERRORS) == set(BAD_WORKFLOWS)


@pytest.mark.parametrize(
    "keys",
    [
        {"tool": "reviewer"},
        {"prompt": "hi"},
        {"tool": "reviewer", "prompt": "Use claude for this."},
        {"run": ["true"]},
        {"workflow": "sub.yaml", "with": {"x": 1}},
    ],
    ids=["tool", "prompt", "tool+prompt", "run", "workflow"],
)
def test_allowed_step_kinds(keys: dict[str, Any], workflow_validator: Draft202012Validator) -> None:
    assert errors(workflow_validator, _step(**keys)) == []
