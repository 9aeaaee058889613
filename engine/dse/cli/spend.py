"""What calls cost and what the response cache saved: usage and cache. Both read state, never create it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError
from .common import _state_dir


def _usage(args: argparse.Namespace) -> int:
    """Read the ledger, never create it: asking what was spent writes nothing where nothing was."""
    import time

    from .. import console
    from ..spend import ledger
    from ..when import moment

    by = _groups(args.by)
    since = moment(args.since, "--since") if args.since is not None else None
    path = _state_dir(args) / ledger.FILE
    groups: list[dict[str, Any]] = []
    if path.is_file():
        opened = ledger.UsageLedger(path)
        try:
            groups = opened.report(by=by, since=since, run_id=args.run)
        finally:
            opened.close()
    if args.json:
        document = {"ledger": str(path), "by": by, "since": since, "run": args.run, "groups": groups, "total": console.usage_total(groups)}
        print(json.dumps(document, indent=2))
        return 0
    where = f"in {path}"
    if since is not None:
        where += f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}"
    if args.run is not None:
        where += f" for run {args.run}"
    print(console.usage_text(groups, by, where))
    return 0


def _groups(values: list[str] | None) -> list[str]:
    """`--by backend,model --by day` as a list of ledger groups, each once, in the order given."""
    from ..spend.ledger import GROUPS

    names = [name.strip() for value in values or ["backend"] for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or not names:
        raise InputError(f"--by {unknown[0] if unknown else ''!r}: expected {', '.join(GROUPS)}", hint="dse usage --by backend,model")
    return list(dict.fromkeys(names))


def _cache(args: argparse.Namespace) -> int:
    """`dse cache stats|clear`; a cache that was never written is empty, and is not created by asking.

    A damaged cache file is `StateFileUnusable`, an error that names the file, not a traceback.
    """
    from .. import console
    from ..spend.cache import FILE, ResponseCache

    path = _state_dir(args) / FILE
    clear = args.cache_command == "clear"
    stats, removed = None, 0
    if path.is_file():
        opened = ResponseCache(path)
        try:
            if clear:
                removed = opened.clear()
            else:
                stats = opened.stats()
        finally:
            opened.close()
    if clear:
        print(json.dumps({"path": str(path), "removed": removed}) if args.json else f"removed {removed} cached answers from {path}")
        return 0
    data = console.cache_data(str(path), stats)
    print(json.dumps(data, indent=2) if args.json else console.cache_text(data))
    return 0
