"""dse anywhere: the default config and the workflows ship in the package and run by name from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, run_dse

from dse import defaults
from dse.config import load_config
from dse.config.loader import DEFAULT_NOTICE
from dse.local.assets import BUNDLED_MODELS

NO_SERVER = {"DSE_LLAMA_SERVER": "/nonexistent/llama-server"}


def test_the_repository_files_are_links_to_the_packaged_ones() -> None:
    links = [ROOT / "configs" / "config.yaml", *(ROOT / "workflows" / f"{name}.yaml" for name in defaults.workflow_names())]
    for link in links:
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{link} is a relative link"
        assert link.resolve().parent in (defaults.directory(), defaults.directory() / "workflows")
    assert (ROOT / "configs" / "config.yaml").resolve() == defaults.config_path().resolve()
    assert defaults.workflow_names() == ["explain", "review"]


def test_the_packaged_config_names_nothing_relative_to_its_directory() -> None:
    config = load_config(defaults.config_path(), environ={})
    assert config.path == str(defaults.config_path())
    managed = [b.managed.model for b in config.backends.values() if b.managed is not None]
    assert managed and all(model in BUNDLED_MODELS for model in managed), "bundled aliases, found wherever the file lies"


def test_no_config_here_uses_the_packaged_default_and_says_so_on_stderr(tmp_path: Path) -> None:
    text = run_dse("plan", "review", cwd=tmp_path, env=NO_SERVER)
    assert text.returncode == 0, text.stderr
    assert text.stderr.splitlines() == [DEFAULT_NOTICE]
    assert "smollm2" in text.stdout
    as_json = run_dse("validate", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["config"] == str(defaults.config_path()), "stdout is the JSON alone"
    assert as_json.stderr.splitlines() == [DEFAULT_NOTICE]


def test_a_config_of_ones_own_is_used_without_a_word(write, tmp_path: Path) -> None:
    write("config.yaml", "llm:\n  backend: local\n  local: {type: llamacpp, managed: {model: smollm2}, models: {generator: smollm2}}\n")
    result = run_dse("validate", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"ok: {tmp_path / 'config.yaml'}"
    assert DEFAULT_NOTICE not in result.stderr


@pytest.mark.parametrize("how", ["--config", "DSE_CONFIG"])
def test_a_named_config_that_does_not_exist_is_still_an_error(tmp_path: Path, how: str) -> None:
    missing = str(tmp_path / "nope.yaml")
    args, env = (["--config", missing], {}) if how == "--config" else ([], {"DSE_CONFIG": missing})
    result = run_dse("plan", "review", *args, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"dse: error: {missing}: file not found"]


def test_packaged_workflows_run_plan_and_validate_by_name(tmp_path: Path) -> None:
    plan = run_dse("plan", "explain", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["workflow"] == "explain"
    assert run_dse("validate", "review", "explain", cwd=tmp_path).returncode == 0
    run = run_dse("run", "review", cwd=tmp_path, env=NO_SERVER)
    assert run.returncode == 2 and "llama-server not found" in run.stderr, "resolved and planned; only the server is missing"
    assert not (tmp_path / ".dse").exists()


def test_an_unknown_name_lists_the_packaged_workflows(tmp_path: Path) -> None:
    for command in ("run", "plan", "validate"):
        result = run_dse(command, "reveiw", cwd=tmp_path, env=NO_SERVER)
        assert result.returncode == 2, result.stderr
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("dse: error: no workflow 'reveiw'"), error
        assert "did you mean 'review'?" in error and "packaged workflows: explain, review" in error
    missing_file = run_dse("plan", "workflows/nope.yaml", cwd=tmp_path)
    assert "workflows/nope.yaml: file not found" in missing_file.stderr, "a path is a path, never looked up by name"


def test_a_name_prefers_the_workflows_directory_here(write, tmp_path: Path) -> None:
    write("workflows/review.yaml", "name: my-review\nsteps:\n  - id: hello\n    run: [echo, mine]\noutputs: {said: '{{ steps.hello.output }}'}\n")
    result = run_dse("run", "review", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"] == {"said": "mine"}
    assert result.stderr.splitlines() == [DEFAULT_NOTICE]


def test_the_wheel_carries_the_defaults_and_runs_them_by_name(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True
    )
    (wheel,) = tmp_path.glob("dse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"dse/defaults/config.yaml", "dse/defaults/workflows/review.yaml", "dse/defaults/workflows/explain.yaml"} <= names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "dse", "validate", "review", "--json"],
        cwd=empty, env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"] == str(unpacked / "dse" / "defaults" / "config.yaml")
