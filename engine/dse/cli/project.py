"""The project around dse: init, changes, save, config show and import, completion."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import completion
from ..errors import InputError
from .common import _print_warnings


def _init(args: argparse.Namespace) -> int:
    from ..init import init

    result = init(Path.cwd(), workflows=args.workflows)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    for relative in result.written:
        print(f"wrote {relative}")
    if result.gitignore != "unchanged":
        print(f"{result.gitignore} .gitignore: .dse/ (run journals) is not committed")
    print("next: edit config.yaml, check it with `dse validate`, then `dse run review`")
    return 0


def _changes(args: argparse.Namespace) -> int:
    from ..changes import collect

    found = collect(Path(args.repo), args.mode, args.rev, args.max_chars)
    if args.json:
        print(json.dumps(found.as_dict(), indent=2))
        return 0
    print(f"{found.label}: {found.changed} files changed, {len({f.path for f in found.files})} to review in {len(found.files)} parts")
    for skipped in found.skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    return 0


def _completion(args: argparse.Namespace) -> int:
    code = completion.shellcode(args.shell)
    print(json.dumps({"shell": args.shell, "code": code}) if args.json else code)
    return 0


def _save(args: argparse.Namespace) -> int:
    """Write first, then print: a failed write prints nothing but the error. Only a regular file is written (a FIFO would block)."""
    text = args.text if args.text.endswith("\n") else args.text + "\n"
    data = text.encode("utf-8", "surrogateescape")  # argv bytes that are not UTF-8 are kept as they came
    if args.path:
        target = Path(args.path)
        if args.path.endswith("/") or (target.exists() and not target.is_file()):
            raise InputError(f"cannot write {args.path}: not a regular file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
        print(f"wrote {target}", file=sys.stderr)
    shown = data.decode("utf-8", "replace")
    if args.json:
        print(json.dumps({"path": args.path or None, "bytes": len(data) if args.path else 0, "text": shown}))
    else:
        sys.stdout.write(shown)
    return 0


def _config(args: argparse.Namespace) -> int:
    return _config_import(args) if args.config_command == "import" else _config_show(args)


def _config_import(args: argparse.Namespace) -> int:
    """A DiSE config as a dse config, on stdout or `-o`; the report of every key, located, on stderr."""
    from ..config.dise_import import import_file

    if args.output == "":
        raise InputError("-o needs a file name", hint="dse config import FILE -o config.yaml")
    result = import_file(Path(args.file))
    if args.output:
        try:
            Path(args.output).write_text(result.to_yaml(), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.output}: cannot write: {exc.strerror}") from None
    if args.json or not args.output:
        print(json.dumps(result.as_dict(), indent=2) if args.json else result.to_yaml().rstrip())
    print("\n".join(result.report()), file=sys.stderr)
    return 0


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from ..config import load_config
    from ..config.export import to_data

    config = load_config(args.config)
    _print_warnings(config.warnings)
    data = to_data(config)
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0
