"""Shared fixtures: files in a temporary directory, a small git repository to review."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from stubs import StubServer

_STATUS = pytest.StashKey[int]()


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


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def review_repo(tmp_path: Path) -> Path:
    """A base commit and a two-commit branch; then four uncommitted changes (one binary, one new file) and one staged change."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "T")
    for name in ("app.py", "util.py", "notes.md", "staged.py", "logo.png", "package-lock.json"):
        (root / name).write_bytes(b"\x89PNG\x00\x01" if name.endswith(".png") else f"# {name}\nvalue = 1\n".encode())
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "base")
    _git(root, "checkout", "-q", "-b", "feature")
    (root / "feature.py").write_text("def feature():\n    return 1\n")
    _git(root, "add", "feature.py")
    _git(root, "commit", "-q", "-m", "add feature")
    (root / "util.py").write_text("# util.py\nvalue = 2\n")
    _git(root, "commit", "-q", "-am", "change util")
    (root / "app.py").write_text("# app.py\nvalue = 3\n")
    (root / "notes.md").write_text("# notes\nmore\n")
    (root / "logo.png").write_bytes(b"\x89PNG\x00\x02\x03")
    (root / "new.py").write_text("print('new')\n")
    (root / "staged.py").write_text("# staged.py\nvalue = 4\n")
    _git(root, "add", "staged.py")
    return root


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_STATUS] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test left running must not hold the whole suite at exit: name it, with its stack, and end there.

    Python joins every non-daemon thread before it exits, so one stuck thread would keep CI
    waiting until its limit with nothing said. The results are already printed; the exit
    status is the session's.
    """
    frames = sys._current_frames()
    stacks = {
        t: traceback.extract_stack(frames[t.ident]) if t.ident in frames else traceback.StackSummary()
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    }
    left = {t: stack for t, stack in stacks.items() if not _idle_pool_worker(stack)}
    if not left:
        return
    for thread, stack in left.items():
        sys.stderr.write(f"\nconftest: a test left thread {thread.name!r} running:\n{''.join(stack.format())}")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(config.stash.get(_STATUS, 1))


def _idle_pool_worker(stack: traceback.StackSummary) -> bool:
    """A thread pool's worker waiting for work: the pool's exit hook wakes and ends it, so it holds nothing up."""
    return any(f.name == "_worker" and f.filename.endswith("concurrent/futures/thread.py") and "work_queue.get" in (f.line or "") for f in stack)
