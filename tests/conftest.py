"""Shared fixtures: files in a temporary directory, a small git repository to review."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from stubs import StubServer


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """A scriptable HTTP server on a real loopback socket; see tests/stubs.py."""
    with StubServer() as server:
        yield server


@pytest.fixture
def write(tmp_path: Path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A small repository whose last commit is a real change worth reviewing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def divide(a, b):\n    return a / b\n")
    git("add", ".")
    git("commit", "-q", "-m", "Add divide")
    (repo / "calc.py").write_text(
        "def divide(a, b):\n    return a / b\n\n\ndef average(values):\n    return divide(sum(values), len(values))\n"
    )
    git("commit", "-qam", "Add average")
    return repo
