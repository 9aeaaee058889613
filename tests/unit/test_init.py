"""`dse init`: a commented starter config that validates, the packaged workflows on request, never an overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_dse

from dse import defaults
from dse.config.loader import DEFAULT_NOTICE

PACKAGED = {"config.yaml": defaults.config_path(), **{f"workflows/{n}.yaml": defaults.workflow_path(n) for n in defaults.workflow_names()}}


def files_under(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_init_writes_a_commented_config_that_validates(tmp_path: Path) -> None:
    result = run_dse("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote config.yaml" in result.stdout
    assert sorted(files_under(tmp_path)) == [".gitignore", "config.yaml"]
    text = (tmp_path / "config.yaml").read_text()
    assert "written by `dse init`" in text and ".env" in text and ".dse/" in text, "the header explains the file"
    assert yaml.safe_load(text) == yaml.safe_load(defaults.config_path().read_text()), "the packaged default, as it is"
    modeline = text.splitlines()[0]
    assert modeline.startswith("# yaml-language-server: $schema=file://")
    assert Path(modeline.split("file://", 1)[1]).is_file(), "the editor's schema resolves from anywhere"
    checked = run_dse("validate", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"ok: {tmp_path / 'config.yaml'}"
    assert DEFAULT_NOTICE not in checked.stderr, "the written config is the one found, not the packaged one"


def test_init_workflows_copies_the_packaged_workflows(tmp_path: Path) -> None:
    result = run_dse("init", "--workflows", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "directory": str(tmp_path),
        "written": ["config.yaml", "workflows/explain.yaml", "workflows/review.yaml"],
        "gitignore": "created",
    }
    for relative, packaged in PACKAGED.items():
        assert packaged is not None
        assert yaml.safe_load((tmp_path / relative).read_text()) == yaml.safe_load(packaged.read_text())
    checked = run_dse("validate", "workflows/review.yaml", "workflows/explain.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("existing", ["config.yaml", "workflows/review.yaml", "workflows"])
def test_init_refuses_to_overwrite_and_then_writes_nothing(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("mine\n")
    before = files_under(tmp_path)
    result = run_dse("init", "--workflows", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dse: error: {existing}: "), lines
    assert "nothing was written" in lines[0] and "Traceback" not in result.stderr
    assert files_under(tmp_path) == before, "not a file written, not even .gitignore"


def test_init_without_workflows_ignores_an_existing_workflows_directory(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "review.yaml").write_text("mine\n")
    assert run_dse("init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "workflows" / "review.yaml").read_text() == "mine\n"


def test_gitignore_gets_one_dse_line_idempotently(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules")
    first = run_dse("init", "--json", cwd=tmp_path)
    assert json.loads(first.stdout)["gitignore"] == "extended"
    assert (tmp_path / ".gitignore").read_text() == "node_modules\n.dse/\n"
    (tmp_path / "config.yaml").unlink()
    again = run_dse("init", "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["gitignore"] == "unchanged"
    assert (tmp_path / ".gitignore").read_text() == "node_modules\n.dse/\n"
    (tmp_path / "config.yaml").unlink()
    (tmp_path / ".gitignore").write_text("/.dse\n")
    run_dse("init", cwd=tmp_path)
    assert (tmp_path / ".gitignore").read_text() == "/.dse\n", "an equivalent line is enough"


def test_init_help_has_an_example() -> None:
    result = run_dse("init", "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and "dse init --workflows" in result.stdout and "--workflows" in result.stdout
    assert "init" in run_dse("--help").stdout


def test_a_write_that_fails_midway_takes_back_what_was_written(tmp_path: Path, monkeypatch) -> None:
    """A .gitignore that cannot be written (here: made to fail) leaves no config.yaml or workflows behind."""
    from dse import init as init_module
    from dse.errors import InputError

    def refuse(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(init_module, "_ignore_state", refuse)
    with pytest.raises(InputError, match="nothing was written"):
        init_module.init(tmp_path, workflows=True)
    assert list(tmp_path.iterdir()) == [], "the directory is as it was: a retry can succeed"
