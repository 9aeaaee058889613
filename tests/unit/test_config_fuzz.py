"""Property: YAML text mangled anywhere ends in success or a located exit 2, never a traceback.

Mutations of the parsed documents (keys replaced, deleted, renamed, added) are in test_input_fuzz.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [ROOT / "configs" / "config.yaml", *sorted((ROOT / "tests" / "fixtures" / "dise").glob("*.yaml"))]

LOCATED = re.compile(r"^dse: error: \S*config\.yaml(:\d+(:\d+)?)?: ")


def _check(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code = main(["validate", "--config", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("dse: error:")]
        assert lines and all(LOCATED.match(line) for line in lines), err


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 2000), junk=st.text(max_size=6))
def test_mangled_yaml_text_fails_cleanly(seed: Path, cut: int, junk: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = seed.read_text()
    cut %= max(len(text), 1)
    path = tmp_path / "config.yaml"
    path.write_text(text[:cut] + junk + text[cut + 1 :])
    _check(capsys, path)
