"""Property: no mutation of a valid config produces a traceback; only success or a located exit 2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [ROOT / "configs" / "config.yaml", *sorted((ROOT / "tests" / "fixtures" / "dise").glob("*.yaml"))]
SEED_DATA = [yaml.safe_load(p.read_text()) for p in SEEDS]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
    st.sampled_from(["${UNSET_VAR}", "${HOME:-x}", "ollama", "anthropic", "llamacpp", "generator", "http://x:1"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    data = draw(st.sampled_from(SEED_DATA))
    data = yaml.safe_load(yaml.safe_dump(data))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
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


LOCATED = re.compile(r"^dse: error: \S*config\.yaml(:\d+(:\d+)?)?: ")


def _check(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code = main(["validate", "--config", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("dse: error:")]
        assert lines and all(LOCATED.match(line) for line in lines), err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_mutated_configs_fail_cleanly(data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _check(capsys, path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 2000), junk=st.text(max_size=6))
def test_mangled_yaml_text_fails_cleanly(seed: Path, cut: int, junk: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = seed.read_text()
    cut %= max(len(text), 1)
    path = tmp_path / "config.yaml"
    path.write_text(text[:cut] + junk + text[cut + 1 :])
    _check(capsys, path)
