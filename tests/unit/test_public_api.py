"""The package root is the public API: instant to import, and fully typed for a caller's type checker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dse

ROOT = Path(__file__).resolve().parents[2]


def test_every_export_resolves_and_errors_are_there_without_loading_the_engine() -> None:
    for name in dse.__all__:
        assert getattr(dse, name) is not None, name
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys, dse; print(dse.BackendUnavailable.__mro__[1].__name__, 'dse.routing' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.split() == ["BackendError", "False"], "errors are eager, the engine is lazy"


def test_a_type_checker_sees_real_types_through_the_lazy_exports(tmp_path: Path) -> None:
    """With `Any` exports, both mistakes below would pass `mypy --strict` unnoticed."""
    api = pytest.importorskip("mypy.api")
    caller = tmp_path / "caller.py"
    caller.write_text(
        "import dse\n"
        "config: int = dse.load_config('config.yaml')\n"
        "def handle(error: dse.RateLimited) -> str:\n"
        "    return error.retry_after\n"
    )
    out, _, status = api.run(["--strict", "--config-file", str(ROOT / "pyproject.toml"), str(caller)])
    assert status == 1, out
    assert 'Incompatible types in assignment (expression has type "Config", variable has type "int")' in out
    assert 'Incompatible return value type (got "float | None", expected "str")' in out
