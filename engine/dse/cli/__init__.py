"""The `dse` command: parse arguments, call into the package, print. Nothing else lives here.

Modules are imported inside each command so that `dse --help` and `dse --version` stay instant.
The parser is in parser.py; the commands, grouped by what they work on, in runs, models, spend,
project and serve; what they share in common.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import Any

from .. import completion
from ..errors import DseError, InputErrors
from .models import _bench, _embed, _models, _select, _status
from .parser import build_parser
from .project import _changes, _completion, _config, _init, _save
from .runs import _graph, _plan, _run, _runs, _show, _validate
from .serve import _serve
from .spend import _cache, _usage

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if completion.active():
        completion.complete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    from ..redact import RedactingStream, Redactor, collecting

    streams = (sys.stdout, sys.stderr)
    with collecting() as secrets:
        sys.stdout, sys.stderr = (RedactingStream(stream, Redactor(secrets)) for stream in streams)
        try:
            return _dispatch(args)
        finally:
            for wrapped in (sys.stdout, sys.stderr):
                if isinstance(wrapped, RedactingStream):
                    wrapped.release()
            sys.stdout, sys.stderr = streams


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; every secret a loaded config names is scrubbed from what it prints."""
    handler = {
        "run": _run,
        "plan": _plan,
        "validate": _validate,
        "select": _select,
        "status": _status,
        "embed": _embed,
        "models": _models,
        "runs": _runs,
        "show": _show,
        "graph": _graph,
        "config": _config,
        "init": _init,
        "changes": _changes,
        "save": _save,
        "usage": _usage,
        "cache": _cache,
        "completion": _completion,
        "serve": _serve,
        "bench": _bench,
    }[args.command]
    try:
        with _profile(args):
            return handler(args)
    except DseError as exc:
        _print_error(exc)
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "exit_code": exc.exit_code, "errors": _error_data(exc)}, indent=2))
        return exc.exit_code
    except KeyboardInterrupt:
        print("dse: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error, and Python must not complain at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM takes the same clean path as Ctrl-C: cancel, stop servers, exit."""
    raise KeyboardInterrupt


def _print_error(exc: DseError) -> None:
    for line in str(exc).splitlines():
        print(f"dse: error: {line}", file=sys.stderr)


def _error_data(exc: DseError) -> list[dict[str, Any]]:
    """Errors as records, so a script or an editor can jump to file:line."""
    errors = exc.errors if isinstance(exc, InputErrors) else [exc]
    out = []
    for error in errors:
        location = getattr(error, "location", None)
        record: dict[str, Any] = {"message": error.message, "hint": error.hint}
        if location is not None:
            record.update(file=location.file, line=location.line, column=location.column, key=location.key)
        out.append(record)
    return out


def _profile(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """`--profile` for every config the command loads; the config package is imported only when it is given."""
    if not getattr(args, "profile", None):
        return contextlib.nullcontext()
    from ..config.profiles import choosing

    return choosing(args.profile)
