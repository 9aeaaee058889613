"""The spend-control keys of config and workflow files: accepted as written, refused with file:line:key.

Keys: `llm.budget`, `llm.require_confirmation`, `llm.cache`; a backend's `budget`,
`rate_limit`, `require_confirmation`, `cache` and `pricing`; the top-level `pricing`; a
tool's `cache`; a workflow step's `cache`. Bad values are drawn by hypothesis per kind of
key, written into an otherwise valid file, and must end in `dse validate` exiting 2 with
one error at that key's line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.cli import main
from dse.config import load_config
from dse.config.model import Budget, CacheSettings, Price, RateLimit
from dse.routing import Target
from dse.runner import prepare

SECRET = "sk-config-secret-31337"

# (indent, key, value): one key per line, so every key has a line of its own to be named by.
CONFIG: list[tuple[int, str, str | None]] = [
    (0, "pricing", None),
    (1, "priced-model", None),
    (2, "input", "1.5"),
    (2, "output", "3"),
    (2, "cached_input", "0.5"),
    (0, "llm", None),
    (1, "backend", "s"),
    (1, "budget", None),
    (2, "per_run", "0.5"),
    (2, "per_day", "5"),
    (1, "require_confirmation", None),
    (2, "above_tokens", "1000"),
    (1, "cache", None),
    (2, "mode", "on"),
    (2, "ttl", "3600"),
    (2, "sampled", "false"),
    (1, "s", None),
    (2, "type", "vllm"),
    (2, "base_url", "http://127.0.0.1:9/v1"),
    (2, "api_key", SECRET),
    (2, "models", "{generator: m}"),
    (2, "budget", None),
    (3, "per_run", "1"),
    (3, "per_day", "2"),
    (2, "rate_limit", None),
    (3, "rpm", "60"),
    (3, "tpm", "10000"),
    (3, "rpd", "1000"),
    (2, "require_confirmation", None),
    (3, "above_tokens", "50"),
    (2, "cache", "read_only"),
    (2, "pricing", None),
    (3, "m", None),
    (4, "input", "0.1"),
    (4, "output", "0.2"),
    (0, "tools", None),
    (1, "t", None),
    (2, "llm", "{model_key: generator}"),
    (2, "prompt", "hi"),
    (2, "cache", "off"),
]

WORKFLOW: list[tuple[int, str, str | None]] = [
    (0, "name", "w"),
    (0, "steps", None),
    (1, "- id", "ask"),
    (2, "tool", "t"),
    (2, "cache", "{mode: on, ttl: 60, sampled: true}"),
]
STEP_CACHE = "steps.- id.cache"


def text(lines: list[tuple[int, str, str | None]], replace: dict[str, str] | None = None) -> str:
    """The file, with the values of the keys in `replace` (dotted paths) written instead (and a mapping's keys dropped)."""
    replace = replace or {}
    out, path = [], []
    replaced_at: int | None = None
    for indent, key, value in lines:
        if replaced_at is not None and indent > replaced_at:
            continue
        path[indent:] = [key]
        dotted = ".".join(path)
        replaced_at = indent if dotted in replace else None
        value = replace.get(dotted, value)
        out.append("  " * indent + (f"{key}: {value}" if value is not None else f"{key}:"))
    return "\n".join(out) + "\n"


def line_of(lines: list[tuple[int, str, str | None]], dotted: str) -> int:
    path: list[str] = []
    for number, (indent, key, _) in enumerate(lines, start=1):
        path[indent:] = [key]
        if ".".join(path) == dotted:
            return number
    raise KeyError(dotted)


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["validate", *args])
    return code, capsys.readouterr().err


# --- every key, as written, is read ------------------------------------------------------------


def test_every_spend_key_validates_and_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path, workflow_path = tmp_path / "config.yaml", tmp_path / "wf.yaml"
    config_path.write_text(text(CONFIG))
    workflow_path.write_text(text(WORKFLOW))
    code, err = validate(capsys, "--config", str(config_path), str(workflow_path))
    assert (code, err) == (0, "")
    config = load_config(config_path, environ={})
    backend = config.find_backend("s")
    assert backend is not None
    assert (config.budget, config.confirm_above, config.cache) == (Budget(0.5, 5), 1000, {"mode": "on", "ttl": 3600, "sampled": False})
    assert config.pricing == {"priced-model": Price(1.5, 3, 0.5)}
    assert (backend.budget, backend.rate_limit, backend.confirm_above) == (Budget(1, 2), RateLimit(60, 10000, 1000), 50)
    assert (backend.cache, backend.pricing) == ({"mode": "read_only"}, {"m": Price(0.1, 0.2)})
    assert config.tools["t"].cache == {"mode": "off"}
    assert target(tmp_path).cache == CacheSettings("on", 60, True), "the step's cache over the tool's over the backend's over llm.cache"


def target(tmp_path: Path) -> Target:
    resolution = prepare(tmp_path / "wf.yaml", tmp_path / "config.yaml").plan.steps["ask"].resolution
    assert resolution is not None
    return resolution.target


LEVELS = {"llm.cache": CONFIG, "llm.s.cache": CONFIG, "tools.t.cache": CONFIG, STEP_CACHE: WORKFLOW}


@pytest.mark.parametrize("level", sorted(LEVELS))
@pytest.mark.parametrize(("written", "mode"), [("on", "on"), ("off", "off"), ("{mode: on}", "on"), ("{mode: off}", "off"), ("read_only", "read_only")])
def test_a_bare_yaml_on_or_off_is_a_cache_mode_at_every_level(tmp_path: Path, level: str, written: str, mode: str) -> None:
    """YAML 1.1 reads a bare on/off as true/false: each level takes it as the mode it looks like."""
    # Only `level` says anything: the levels above it are off, those below it say nothing.
    quiet = {"llm.cache": "off", "llm.s.cache": "{}", "tools.t.cache": "{}"}
    config = {**quiet, level: written} if LEVELS[level] is CONFIG else quiet
    (tmp_path / "config.yaml").write_text(text(CONFIG, config))
    (tmp_path / "wf.yaml").write_text(text(WORKFLOW, {STEP_CACHE: written if LEVELS[level] is WORKFLOW else "{}"}))
    assert target(tmp_path).cache.mode == mode


def test_levels_lay_over_one_another_key_by_key(tmp_path: Path) -> None:
    """A level says only what it writes, and wins where it does: a step's mode keeps the tool's ttl, which beat the backend's."""
    layers = {"llm.cache.ttl": "10", "llm.s.cache": "{sampled: true, ttl: 15}", "tools.t.cache": "{ttl: 20}"}
    (tmp_path / "config.yaml").write_text(text(CONFIG, layers))
    (tmp_path / "wf.yaml").write_text(text(WORKFLOW, {STEP_CACHE: "write_only"}))
    assert target(tmp_path).cache == CacheSettings("write_only", 20, True)


def test_config_show_prints_the_spend_settings_and_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text(CONFIG))
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    llm, backend = shown["llm"], shown["llm"]["s"]
    assert llm["budget"] == {"per_run": 0.5, "per_day": 5}
    assert llm["cache"] == {"mode": "on", "ttl": 3600, "sampled": False}
    assert llm["require_confirmation"] == {"above_tokens": 1000}
    assert shown["pricing"] == {"priced-model": {"input": 1.5, "output": 3, "cached_input": 0.5}}
    assert backend["budget"] == {"per_run": 1, "per_day": 2} and backend["rate_limit"] == {"rpm": 60, "tpm": 10000, "rpd": 1000}
    assert backend["require_confirmation"] == {"above_tokens": 50} and backend["cache"] == {"mode": "read_only"}
    assert backend["pricing"] == {"m": {"input": 0.1, "output": 0.2}}
    assert shown["tools"]["t"]["cache"] == {"mode": "off"}
    assert SECRET not in out and backend["api_key"] == "***"


def test_config_show_fills_in_the_cache_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llm:\n  backend: s\n  s: {type: vllm, base_url: 'http://127.0.0.1:9/v1', models: {generator: m}}\n")
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    llm = json.loads(capsys.readouterr().out)["llm"]
    assert llm["cache"] == {"mode": "off", "ttl": 604800, "sampled": False} and llm["budget"] == {}


# --- bad values, drawn per kind of key ------------------------------------------------------------

MODES = {"on", "off", "read_only", "write_only"}
negative = st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False) | st.integers(max_value=-1)
strings = st.text(max_size=12)
fractions = st.floats(0.01, 1e6, allow_nan=False).filter(lambda f: not f.is_integer())
not_numbers = strings | st.booleans() | st.lists(st.integers(), max_size=2)
usd = negative | not_numbers
count = st.integers(max_value=0) | fractions | not_numbers
tokens = st.integers(max_value=-1) | fractions | not_numbers
mode = strings.filter(lambda s: s not in MODES) | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.lists(strings, max_size=2)

BAD: dict[str, st.SearchStrategy[Any]] = {
    "pricing.priced-model.input": usd,
    "pricing.priced-model.output": usd,
    "pricing.priced-model.cached_input": usd,
    "llm.budget.per_run": usd,
    "llm.budget.per_day": usd,
    "llm.require_confirmation.above_tokens": tokens,
    "llm.cache.mode": mode,
    "llm.cache.ttl": st.floats(max_value=0, allow_nan=False, allow_infinity=False) | not_numbers,
    "llm.cache.sampled": strings | st.integers() | st.lists(st.booleans(), max_size=2),
    "llm.s.budget.per_run": usd,
    "llm.s.budget.per_day": usd,
    "llm.s.rate_limit.rpm": count,
    "llm.s.rate_limit.tpm": count,
    "llm.s.rate_limit.rpd": count,
    "llm.s.require_confirmation.above_tokens": tokens,
    "llm.s.cache": mode,
    "llm.s.pricing.m.input": usd,
    "llm.s.pricing.m.output": usd,
    "tools.t.cache": mode,
}


def refused_at(err: str, file: str, line: int, key: str) -> bool:
    """Errors, every one at `file:line` and naming `key`: what a user needs to find and fix it (0.5 for a count breaks two rules)."""
    errors = [e for e in err.splitlines() if e.startswith("dse: error:")]
    at = re.compile(rf"dse: error: \S*{re.escape(file)}:{line}:\d+: {re.escape(key)}: ")
    return bool(errors) and all(at.match(e) for e in errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_bad_value_for_any_spend_key_is_refused_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(BAD)), label="key")
    value = data.draw(BAD[key], label="value")
    path = tmp_path / "config.yaml"
    path.write_text(text(CONFIG, {key: json.dumps(value)}))
    code, err = validate(capsys, "--config", str(path))
    assert code == 2 and refused_at(err, "config.yaml", line_of(CONFIG, key), key), err
    assert SECRET not in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=mode | st.fixed_dictionaries({"ttl": st.floats(max_value=0, allow_nan=False, allow_infinity=False) | not_numbers}))
def test_a_bad_step_cache_is_refused_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: Any) -> None:
    """A mapping with one bad key inside is refused at that key, not as "expected string or boolean"."""
    config, workflow = tmp_path / "config.yaml", tmp_path / "wf.yaml"
    config.write_text(text(CONFIG))
    workflow.write_text(text(WORKFLOW, {STEP_CACHE: json.dumps(value)}))
    code, err = validate(capsys, "--config", str(config), str(workflow))
    key = "steps[0].cache.ttl" if isinstance(value, dict) else "steps[0].cache"
    assert code == 2 and refused_at(err, "wf.yaml", line_of(WORKFLOW, STEP_CACHE), key), err


@pytest.mark.parametrize(("key", "missing"), [("pricing.priced-model", "output"), ("llm.s.pricing.m", "output"), ("pricing.priced-model", "input")])
def test_a_price_without_input_or_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, missing: str) -> None:
    lines = [entry for n, entry in enumerate(CONFIG, start=1) if n != line_of(CONFIG, f"{key}.{missing}")]
    path = tmp_path / "config.yaml"
    path.write_text(text(lines))
    code, err = validate(capsys, "--config", str(path))
    assert code == 2 and refused_at(err, "config.yaml", line_of(lines, key), key), err
    assert f"missing required key '{missing}'" in err
