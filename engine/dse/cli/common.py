"""What several commands share: the state directory, workflow inputs, warnings."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError


def _print_warnings(warnings: list[str] | tuple[str, ...]) -> None:
    for warning in warnings:
        print(f"dse: warning: {warning}", file=sys.stderr)


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.inputs:
        text = sys.stdin.read() if args.inputs == "-" else _read(args.inputs)
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{args.inputs}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise InputError(f"{args.inputs}:1:1: invalid JSON: nested too deeply to read") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{args.inputs}: inputs must be a JSON object")
        values.update(loaded)
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--input {item!r}: expected KEY=VALUE")
        values[key] = value
    return values


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _state_dir(args: argparse.Namespace) -> Path:
    return args.state_dir or Path(os.environ.get("DSE_STATE_DIR") or ".dse")
