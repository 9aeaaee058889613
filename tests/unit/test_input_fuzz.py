"""Property: any config or workflow, generated from the schemas or mutated from real files, ends in
exit 0 or in an exit 2 whose every line names file:line; never a traceback, never unbounded.

Documents are drawn from `schemas/*.schema.json` themselves (each keyword turned into a
strategy), then mutated, and seeded with the classes of input that once got through: nesting
and alias bombs, broken URLs, endpoint items with typos, invalid output schemas, misspelt step
fields, model names nobody owns, backends nobody declared. Each example runs the real command
in this process, so an exception other than an input error fails the test outright; the
process's peak memory may not grow by more than a bound per example (a resource check, not a
clock). A few cases also go through a subprocess, as a user runs them.
"""

from __future__ import annotations

import json
import re
import resource
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CONFIG, ROOT, run_dse
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dse.cli import main

SCHEMAS = {name: json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text()) for name in ("config", "workflow")}
WORKFLOW_SEEDS = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "workflows").glob("*.yaml"))]
CONFIG_SEEDS = [yaml.safe_load(p.read_text()) for p in [CONFIG, *sorted((ROOT / "tests" / "fixtures" / "dise").glob("*.yaml"))]]
MEMORY_BOUND_KB = 256 * 1024

# Strings that mean something to dse: templates over step fields, URLs good and bad, model and
# backend names owned and not, so generated documents reach past the schema into the checks.
MEANINGFUL = [
    "{{ steps.a.output }}", "{{ steps.a.outptu }}", "{{ steps['a'].status }}", "{{ inputs.target }}", "{{ nope }}",
    "{{ steps.a.output", "http://localhost:11434", "http://[::1/v1", "http://h:99999", "htp:/x", "file:///x", "",
    "gpt-4o", "gpt-99-ultra", "smollm2", "llama3", "local:smollm2", "ollama", "openai", "local", "auto", "${UNSET_VAR}",
    "a", "b", "triage", "reviewer", "summarizer", "generator",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=10), st.sampled_from(MEANINGFUL),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def from_schema(node: Any, defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Instances that follow `node` loosely: every keyword the schemas use, one level of recursion per object."""
    if not isinstance(node, dict):
        return values
    if str(node.get("$ref", "")).startswith("#/$defs/"):
        node = {**defs[node["$ref"].removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    if depth > 5:
        return scalars
    if "enum" in node:
        return st.sampled_from(node["enum"])
    branches = node.get("anyOf") or node.get("oneOf")
    if branches and "type" not in node:
        return st.one_of([from_schema(b, defs, depth) for b in branches])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**node, "type": k}, defs, depth) for k in kind])
    if kind == "object":
        props = {k: from_schema(v, defs, depth + 1) for k, v in node.get("properties", {}).items()}
        required = {k: props.pop(k) for k in node.get("required", []) if k in props}
        fixed = st.fixed_dictionaries(required, optional=props)
        extra: list[st.SearchStrategy[dict[str, Any]]] = [
            st.dictionaries(st.from_regex(pattern, fullmatch=True), from_schema(rule, defs, depth + 1), max_size=2)
            for pattern, rule in node.get("patternProperties", {}).items()
        ]
        if isinstance(node.get("additionalProperties"), dict):
            names = st.sampled_from(["a", "b", "t", "local", "gpu_a", "triage"]) | st.text(min_size=1, max_size=6)
            extra.append(st.dictionaries(names, from_schema(node["additionalProperties"], defs, depth + 1), max_size=2))
        return st.tuples(fixed, *extra).map(lambda parts: {k: v for part in reversed(parts) for k, v in part.items()})
    if kind == "array":
        return st.lists(from_schema(node.get("items"), defs, depth + 1), min_size=node.get("minItems", 0), max_size=3)
    if kind == "string" and "pattern" in node:
        return st.sampled_from(["a", "b"]) | st.from_regex(node["pattern"], fullmatch=True)
    if kind == "string":
        return st.sampled_from(MEANINGFUL) | st.text(min_size=node.get("minLength", 0), max_size=10)
    if kind == "integer":
        return st.integers(-3, 5000)
    if kind == "number":
        return st.floats(-1, 200, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    return values


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, seed: st.SearchStrategy[Any]) -> Any:
    """A document from `seed`, with up to three keys replaced, deleted, renamed or added."""
    data = yaml.safe_load(yaml.safe_dump(draw(seed)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "rename", "insert"]))
        if action == "replace":
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[str(key)[:-1] + draw(st.sampled_from(["", "s", "_", "x"]))] = parent.pop(key)
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return data


# Text appended to a document: each once reached a traceback, a hang or a gigabyte.
BOMB = "bomb_a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"bomb_{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh")
)
HOSTILE = st.one_of(
    st.integers(1, 400).map(lambda n: "deep: " + "[" * n + "]" * n + "\n"),
    st.just(BOMB),
    st.just("loop: &loop [*loop]\n"),
    st.integers(4000, 6000).map(lambda n: f"big: {'9' * n}\n"),
    st.just("when: 2001-13-45\n"),
)
HOSTILE_TAILS = st.booleans().flatmap(lambda hostile: HOSTILE if hostile else st.just(""))

LOCATED = re.compile(r"^dse: error: \S+\.yaml:\d+(:\d+)?: ")


def check(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    """The real command, in process: exit 0, or exit 2 with every error line at a file:line; bounded memory."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = main(["validate", *args])
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    err = capsys.readouterr().err
    assert grown < MEMORY_BOUND_KB, f"peak memory grew by {grown // 1024} MiB"
    assert code in (0, 2), err
    event(f"exit {code}")
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("dse: error:")]
        assert lines and all(LOCATED.match(line) for line in lines), err


def dump(data: Any, tail: str) -> str:
    text = yaml.safe_dump(data, sort_keys=False) if data is not None else ""
    # A tail is top-level YAML; it only fits after a mapping.
    return text + tail if isinstance(data, dict) else text


WORKFLOWS = st.one_of(
    from_schema(SCHEMAS["workflow"], SCHEMAS["workflow"]["$defs"]),
    mutated(st.sampled_from(WORKFLOW_SEEDS)),
    mutated(from_schema(SCHEMAS["workflow"], SCHEMAS["workflow"]["$defs"])),
)
CONFIGS = st.one_of(
    from_schema(SCHEMAS["config"], SCHEMAS["config"]["$defs"]),
    mutated(st.sampled_from(CONFIG_SEEDS)),
    mutated(from_schema(SCHEMAS["config"], SCHEMAS["config"]["$defs"])),
)
PROBE = "name: probe\nsteps:\n  - id: a\n    prompt: hi\n  - id: b\n    prompt: '{{ steps.a.output }}'\n    model: MODEL\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=WORKFLOWS, tail=HOSTILE_TAILS)
def test_any_workflow_validates_or_fails_located(data: Any, tail: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(dump(data, tail))
    check(capsys, "--config", str(CONFIG), str(path))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=CONFIGS, tail=HOSTILE_TAILS, model=st.sampled_from(["gpt-4o", "gpt-99-ultra", "smollm2", "llama3", "local:smollm2", "auto", "a"]))
def test_any_config_validates_a_workflow_or_fails_located(
    data: Any, tail: str, model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(dump(data, tail))
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(PROBE.replace("MODEL", json.dumps(model)))
    check(capsys, "--config", str(config), str(workflow))


# --- as a user runs them ---------------------------------------------------------------------


def one_located_error(result: Any, where: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"dse: error: {where}"), line
    return str(line)


def test_a_bomb_through_the_real_command(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("name: x\nsteps:\n  - id: a\n    run: [echo, hi]\n" + BOMB)
    one_located_error(run_dse("validate", "--config", str(CONFIG), str(path), cwd=tmp_path), f"{path}:10:")


def test_deep_nesting_through_run_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("name: x\nsteps: " + "[" * 500 + "]" * 500 + "\n")
    one_located_error(run_dse("run", str(path), "--config", str(CONFIG), cwd=tmp_path), f"{path}:2:")
    assert not (tmp_path / ".dse").exists()


def test_a_bad_url_through_plan(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  backend: ollama\n  ollama:\n    base_url: http://[::1/v1\n    models: {generator: llama3}\n")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("name: x\nsteps:\n  - id: a\n    prompt: hi\n")
    line = one_located_error(run_dse("plan", str(workflow), "--config", str(config), cwd=tmp_path), f"{config}:4:5: llm.ollama.base_url")
    assert "invalid URL" in line


def test_max_parallel_zero_through_the_real_command(tmp_path: Path) -> None:
    result = run_dse("run", "wf.yaml", "--max-parallel", "0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --max-parallel: must be 1 or more, got 0" in result.stderr
