"""What a review reads: the changed files of a git repository, one diff each, nothing cut silently.

`dse changes` prints this as JSON for the review workflow's fan-out. A file's diff that is
longer than `max_chars` is split at hunk boundaries into parts that fit; a hunk that alone does
not fit, a binary file, a lock file or a generated one is listed under `skipped` with the
reason, so the report can say what it did not read. Every revision reaches git after
`--end-of-options`, and only if it looks like a revision: no value can become an option.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InputError

MODES = ("auto", "worktree", "staged", "commit", "range")
MIN_CHARS = 1000
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
"""What HEAD is before the first commit: every file is new."""
REVISION = r"[A-Za-z0-9_][A-Za-z0-9_./^~@{}-]*"
_REVISION = re.compile(REVISION)
_RANGE = re.compile(rf"({REVISION}?)(\.\.\.?)({REVISION}?)")
_LOCK_FILES = {
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "uv.lock", "Pipfile.lock",
    "Cargo.lock", "composer.lock", "Gemfile.lock", "go.sum", "flake.lock",
}
_GENERATED = re.compile(r"\.(min\.js|min\.css|map|pb\.go|pyc)$|(^|/)(_pb2\.py|__generated__/)")
_GENERATED_MARK = re.compile(r"@generated|DO NOT EDIT|auto-generated", re.I)


@dataclass(frozen=True)
class FileDiff:
    path: str
    status: str
    diff: str
    part: int = 1
    parts: int = 1


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Changes:
    mode: str
    label: str
    message: str
    files: list[FileDiff] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    changed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(repo: Path, mode: str = "auto", rev: str = "", max_chars: int = 4000) -> Changes:
    """The changes `mode` names: the working tree (against HEAD, new files included), the staged ones, one commit, or a range.

    Paths are the repository's own, from its top level, whichever directory `repo` names.
    """
    _check(repo, mode, rev, max_chars)
    git = _Git(Path(_Git(repo).text("rev-parse", "--show-toplevel").strip()))
    head = "HEAD" if git.ok("rev-parse", "--verify", "--quiet", "HEAD") else _EMPTY_TREE
    if mode == "auto":
        mode = "worktree" if git.text("status", "--porcelain", "--untracked-files=all", "--", ".", ":(exclude).dse") else "commit"
    if mode == "worktree":
        base, label, message = _Diff(("diff",), (head,)), "uncommitted changes (working tree against HEAD)", ""
    elif mode == "staged":
        base, label, message = _Diff(("diff", "--cached"), (head,)), "staged changes", ""
    elif mode == "commit":
        commit = rev or "HEAD"
        # Against its first parent (a merge: what it brought in); a root commit against nothing.
        parents = git.text("rev-list", "--parents", "-n", "1", "--end-of-options", commit).split()[1:]
        base = _Diff(("diff",), (parents[0], commit)) if parents else _Diff(("diff",), (_EMPTY_TREE, commit))
        label = f"commit {git.text('rev-parse', '--short', '--end-of-options', commit).strip()}"
        message = git.text("log", "-1", "--format=%B", "--end-of-options", commit)
    else:
        base, label = _Diff(("diff",), (rev,)), f"range {rev}"
        message = git.text("log", "--format=- %s", "--end-of-options", rev.replace("...", ".."))
    entries = git.numstat(base)
    if mode == "worktree":
        # New files count, except dse's own journals and logs when a run keeps them here.
        new_files = git.text("ls-files", "--others", "--exclude-standard", "-z", "--", ".", ":(exclude).dse").split("\0")
        entries += [(path, "added", False) for path in new_files if path]
    changes = Changes(mode, label, message.strip(), changed=len(entries))
    for path, status, binary in entries:
        untracked = status == "added" and mode == "worktree" and (git.repo / path).is_file()
        reason = _skip_reason(path, binary or (untracked and _looks_binary(git.repo / path)))
        diff = "" if reason else git.file_diff(base, path, untracked=untracked)
        if not reason and _GENERATED_MARK.search("\n".join(_added(diff)[:5])):
            reason = "generated file"
        if reason:
            changes.skipped.append(Skipped(path, reason))
            continue
        parts, too_big = split(diff, max_chars)
        changes.skipped.extend(Skipped(path, f"a line of {size} characters does not fit in {max_chars}") for size in too_big)
        changes.files.extend(FileDiff(path, status, part, number, len(parts)) for number, part in enumerate(parts, 1))
    return changes


def split(diff: str, max_chars: int) -> tuple[list[str], list[int]]:
    """The diff in parts of at most `max_chars`, each with the file header, cut between hunks where it can.

    A hunk longer than a part is cut between lines, each piece under the hunk's own `@@` line
    marked "continued", so a new 10,000-character file is read in pieces rather than skipped.
    Only a single line too long for any part (minified code) is left out; its size is returned.
    """
    if len(diff) <= max_chars:
        return [diff], []
    header, *hunks = re.split(r"(?m)^(?=@@ )", diff)
    room = max_chars - len(header)
    pieces: list[str] = []
    too_long: list[int] = []
    for hunk in hunks:
        if len(hunk) <= room:
            pieces.append(hunk)
            continue
        head, _, body = hunk.partition("\n")
        piece = ""
        for line in body.splitlines(keepends=True):
            if len(head) + len(" (continued)\n") + len(line) > room:
                too_long.append(len(line))
                continue
            if len(head) + len(" (continued)\n") + len(piece) + len(line) > room:
                pieces.append(f"{head}{' (continued)' if pieces and pieces[-1].startswith(head) else ''}\n{piece}")
                piece = ""
            piece += line
        if piece:
            pieces.append(f"{head}{' (continued)' if pieces and pieces[-1].startswith(head) else ''}\n{piece}")
    parts: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(piece) > room:
            parts.append(header + current)
            current = ""
        current += piece
    if current:
        parts.append(header + current)
    return parts, too_long


def _added(diff: str) -> list[str]:
    return [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def _check(repo: Path, mode: str, rev: str, max_chars: int) -> None:
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if max_chars < MIN_CHARS:
        raise InputError(f"max_chars must be at least {MIN_CHARS} (a file header and a hunk must fit), got {max_chars}")
    if rev and mode in ("auto", "worktree", "staged"):
        raise InputError(f"a revision applies to mode commit or range, not {mode}", hint=f"drop --rev {rev}, or say --mode commit")
    if mode == "range" and not (_RANGE.fullmatch(rev) and rev.strip(".")):
        raise InputError(f"a range is BASE..HEAD or BASE...HEAD of revisions, got {rev!r}", hint="e.g. main...my-branch or HEAD~3..HEAD")
    if mode == "commit" and rev and not _REVISION.fullmatch(rev):
        raise InputError(f"not a revision: {rev!r}", hint="a commit, branch or tag such as HEAD~1, main or v1.2; never an option")
    if not repo.is_dir():
        raise InputError(f"{repo} is not a directory")


def _skip_reason(path: str, binary: bool) -> str | None:
    name = PurePosixPath(path).name
    if "\ufffd" in path:
        return "file name is not UTF-8"
    if path.endswith("/"):
        return "a repository of its own"
    if binary:
        return "binary file"
    if name in _LOCK_FILES:
        return "lock file"
    if _GENERATED.search(path):
        return "generated file"
    return None


@dataclass(frozen=True)
class _Diff:
    """A git diff command: its options, and the revisions that follow `--end-of-options`."""

    command: tuple[str, ...]
    revisions: tuple[str, ...] = ()

    def argv(self, *options: str, paths: tuple[str, ...] = ()) -> list[str]:
        return [*self.command, *options, "--end-of-options", *self.revisions, "--", *paths]


def _looks_binary(path: Path) -> bool:
    """Git's own test: a NUL byte near the start."""
    try:
        with open(path, "rb") as handle:
            return b"\0" in handle.read(8000)
    except OSError:
        return False


class _Git:
    """git with the user's presentation settings off: no colour, no external diff, no textconv, exact bytes."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", str(self.repo), "-c", "color.ui=never", "-c", "core.quotepath=off", *args], capture_output=True)

    def ok(self, *args: str) -> bool:
        return self._run(*args).returncode == 0

    def text(self, *args: str) -> str:
        done = self._run(*args)
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace").strip().splitlines()
            why = next((line for line in stderr if line.startswith(("fatal:", "error:"))), stderr[-1] if stderr else f"exit {done.returncode}")
            raise InputError(f"git {args[0]} failed in {self.repo}: {why}")
        return done.stdout.decode(errors="replace")

    def numstat(self, base: _Diff) -> list[tuple[str, str, bool]]:
        """(path, status, binary) per changed file; a rename is a deletion and an addition."""
        statuses = dict(_pairs(self.text(*base.argv("--name-status", "-z", "--no-renames"))))
        entries = []
        for line in self.text(*base.argv("--numstat", "-z", "--no-renames")).split("\0"):
            fields = line.split("\t")
            if len(fields) == 3:
                added, _removed, path = fields
                status = {"A": "added", "D": "deleted", "M": "modified"}.get(statuses.get(path, "M")[:1], "modified")
                entries.append((path, status, added == "-"))
        return entries

    def file_diff(self, base: _Diff, path: str, *, untracked: bool) -> str:
        if untracked:
            return self._run("diff", "--no-index", "--no-ext-diff", "--no-textconv", "--", "/dev/null", path).stdout.decode(errors="replace")
        return self.text(*base.argv("-p", "--unified=5", "--no-renames", "--no-ext-diff", "--no-textconv", paths=(path,)))


def _pairs(text: str) -> list[tuple[str, str]]:
    """`--name-status -z` output: status and path alternate."""
    fields = [f for f in text.split("\0") if f]
    return [(fields[i + 1], fields[i]) for i in range(0, len(fields) - 1, 2)]
