"""`dse init`: a starter `config.yaml` (and, if asked, the packaged workflows) in a directory.

Nothing is ever overwritten: every target is checked first, and when any of them exists the
command names it and writes nothing at all. `.gitignore` gets a `.dse/` line (once), so run
journals are not committed by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, defaults
from .config.env import DOTENV
from .config.schema import schema_dir
from .errors import InputError, Location

GITIGNORE = ".gitignore"
STATE_LINE = ".dse/"
_MODELINE = "# yaml-language-server: $schema="

HEADER = """\
# dse config, written by `dse init` (dse {version}). dse reads it when run in this directory
# (or pass --config PATH, or set $DSE_CONFIG); `dse validate` checks it after an edit.
#
# llm:    the model backends: their type, URL, key and the model each role (model_key) uses.
#         Out of the box, `local` runs a small bundled model on llama.cpp servers dse starts.
# tools:  what each tool sends (system and prompt) and which role it asks for.
# ${{VAR}}: read from the environment, or from a `{dotenv}` file beside this one (KEY=VALUE lines;
#         the environment wins). Keys and tokens are never printed.
#
# Run a workflow by name (`dse run review`: ./workflows/review.yaml if there is one, else the
# packaged one) or by file (`dse run path/to/mine.yaml`). Each run is journaled under .dse/ here
# (--state-dir or $DSE_STATE_DIR to move it): `dse runs`, `dse show RUN_ID`, `dse run --resume RUN_ID`.
#
"""


@dataclass(frozen=True)
class InitResult:
    """What `dse init` wrote, relative to the directory, and what it did to `.gitignore`."""

    directory: Path
    written: list[str] = field(default_factory=list)
    gitignore: str = "unchanged"  # created, extended or unchanged

    def as_dict(self) -> dict[str, object]:
        return {"directory": str(self.directory), "written": self.written, "gitignore": self.gitignore}


def init(directory: Path, *, workflows: bool = False) -> InitResult:
    """Write `config.yaml` (and `workflows/*.yaml`) into `directory`; refuse, writing nothing, if any exists."""
    files = {"config.yaml": _starter_config()}
    if workflows:
        for name in defaults.workflow_names():
            files[f"workflows/{name}.yaml"] = _with_schema(_packaged_text(defaults.directory() / "workflows" / f"{name}.yaml"), "workflow")
    def shown(path: Path) -> str:
        return str(path.relative_to(directory)) if directory == Path.cwd() else str(path)

    for relative in files:
        target = directory / relative
        if target.exists() or target.is_symlink():
            raise InputError(
                "already exists; dse init overwrites nothing (nothing was written)",
                location=Location(shown(target)),
                hint="move it away, or edit it instead of starting over",
            )
        parent = target.parent
        if parent != directory and (parent.exists() or parent.is_symlink()) and not parent.is_dir():
            raise InputError(
                "exists and is not a directory (nothing was written)",
                location=Location(shown(parent)),
                hint="move it away, or run dse init without --workflows",
            )
    ignore = directory / GITIGNORE
    if (ignore.exists() or ignore.is_symlink()) and not ignore.is_file():
        raise InputError("exists and is not a file (nothing was written)", location=Location(shown(ignore)), hint="move it away")
    written: list[str] = []
    made = not (directory / "workflows").exists()
    try:
        for relative, text in files.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8") as handle:
                written.append(relative)
                handle.write(text)
        state = _ignore_state(directory / GITIGNORE)
    except OSError as exc:
        _take_back(directory, written, workflows_dir=made)
        raise InputError(f"cannot write: {exc.strerror} (nothing was written)", location=Location(str(exc.filename or directory))) from None
    return InitResult(directory, written, state)


def _take_back(directory: Path, written: list[str], *, workflows_dir: bool) -> None:
    """Remove what a failed init wrote, so that it leaves the directory as it found it and can be run again."""
    for relative in written:
        (directory / relative).unlink(missing_ok=True)
    if workflows_dir:
        try:
            (directory / "workflows").rmdir()
        except OSError:
            pass  # not created by us, or not empty: leave it


def _starter_config() -> str:
    """The packaged default, under a header that explains the file, with a schema line that resolves from anywhere."""
    body = _packaged_text(defaults.config_path())
    lines = [line for line in body.splitlines(keepends=True) if not line.startswith(_MODELINE)]
    while lines and lines[0].strip() == "#":
        lines.pop(0)
    header = HEADER.format(version=__version__, dotenv=DOTENV)
    return _with_schema(header + "".join(lines), "config")


def _packaged_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _with_schema(text: str, kind: str) -> str:
    """`text` with its first line the editor's schema modeline, pointing at the installed schema file."""
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith(_MODELINE)]
    return f"{_MODELINE}{(schema_dir() / f'{kind}.schema.json').resolve().as_uri()}\n" + "".join(lines)


def _ignore_state(path: Path) -> str:
    """`.gitignore` with a `.dse/` line: created, extended, or left as it is when it already ignores `.dse`."""
    if not path.exists():
        path.write_text(f"# dse run journals and server logs\n{STATE_LINE}\n", encoding="utf-8")
        return "created"
    text = path.read_text(encoding="utf-8", errors="replace")
    if any(line.strip() in (".dse", ".dse/", "/.dse", "/.dse/") for line in text.splitlines()):
        return "unchanged"
    separator = "" if not text or text.endswith("\n") else "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{separator}{STATE_LINE}\n")
    return "extended"
