"""A user's JSON Schema never makes dse fetch anything: `$ref` stays inside the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_dse

from referencing.exceptions import Unresolvable

from dse import user_schema

OUTSIDE = ["file:///etc/passwd", "http://127.0.0.1:9/x", "other.json#/a"]


@pytest.mark.parametrize("ref", OUTSIDE)
def test_a_workflow_output_schema_that_refers_outside_is_a_located_error(write, tmp_path: Path, ref: str) -> None:
    config = write("config.yaml", "llm:\n  backend: o\n  o: {type: ollama, models: {generator: llama3}}\n")
    workflow = write("wf.yaml", f"name: w\nsteps:\n  - id: a\n    prompt: hi\n    output: json\n    output_schema: {{$ref: '{ref}'}}\n")
    result = run_dse("validate", str(workflow), "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and f"{workflow}:6:" in result.stderr and "points outside the schema" in result.stderr


@pytest.mark.parametrize("ref", [*OUTSIDE, "#/nope"])
def test_a_tool_schema_that_refers_outside_or_nowhere_is_a_located_error(write, tmp_path: Path, ref: str) -> None:
    config = write(
        "config.yaml",
        "llm:\n  backend: o\n  o: {type: ollama, models: {generator: llama3}}\n"
        f"tools:\n  t:\n    prompt: hi\n    input_schema: {{$ref: '{ref}'}}\n",
    )
    result = run_dse("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and f"{config}:7:" in result.stderr and "tools.t.input_schema" in result.stderr


def test_references_inside_the_schema_work_and_nothing_is_fetched(tmp_path: Path) -> None:
    schema = {"$defs": {"verdict": {"enum": ["pass", "fail"]}}, "properties": {"v": {"$ref": "#/$defs/verdict"}}}
    assert user_schema.problem(schema) is None
    assert [e.message for e in user_schema.validator(schema).iter_errors({"v": "maybe"})] == ["'maybe' is not one of ['pass', 'fail']"]
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"enum": [1]}')
    with pytest.raises(Unresolvable):
        list(user_schema.validator({"$ref": elsewhere.as_uri()}).iter_errors(2))
