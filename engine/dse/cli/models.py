"""Backends and their models: status, models and their lifecycle, select, embed, bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ..errors import InputError
from .common import _state_dir


def _status(args: argparse.Namespace) -> int:
    from .. import console
    from ..config import load_config
    from ..status import collect_status

    reports = asyncio.run(collect_status(load_config(args.config), timeout=args.timeout, with_models=True))
    print(json.dumps(console.status_data(reports), indent=2) if args.json else console.status_text(reports))
    return 0 if all(r.ok for r in reports if "default" in r.usage) else 1


def _models(args: argparse.Namespace) -> int:
    if args.models_command is not None:
        return _model_lifecycle(args)
    from .. import console
    from ..config import load_config
    from ..status import collect_status

    rows = console.model_rows(asyncio.run(collect_status(load_config(args.config), timeout=args.timeout)))
    print(json.dumps(rows, indent=2) if args.json else console.table(rows, ["backend", "model", "roles", "offered_by", "loaded"]))
    return 0


def _model_lifecycle(args: argparse.Namespace) -> int:
    """`dse models pull|load|unload|ps`: the result on stdout; pull progress on stderr, none with --json."""
    from .. import lifecycle
    from ..config import load_config

    config, state_dir = load_config(args.config), _state_dir(args)
    result: lifecycle.Change | lifecycle.Pulled | lifecycle.Listing
    if args.models_command == "ps":
        result = asyncio.run(lifecycle.ps(config, state_dir=state_dir, backend=args.backend, timeout=args.timeout))
    elif args.models_command == "pull":
        progress = None if args.json else lifecycle.PullProgress(args.name, sys.stderr)
        try:
            result = asyncio.run(lifecycle.pull(config, args.name, backend=args.backend, on_progress=progress))
        finally:
            if progress is not None:
                progress.close()
    elif args.models_command == "load":
        keep_alive = args.keep_alive or lifecycle.KEEP_ALIVE
        result = asyncio.run(lifecycle.load(config, args.name, state_dir=state_dir, backend=args.backend, keep_alive=keep_alive, force=args.force))
    else:
        result = asyncio.run(lifecycle.unload(config, args.name, state_dir=state_dir, backend=args.backend))
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.text())
    return 0


def _embed(args: argparse.Namespace) -> int:
    from .. import runner

    target, response = asyncio.run(runner.embed(args.texts, args.config, backend=args.backend, state_dir=_state_dir(args)))
    if args.json:
        print(json.dumps({"backend": target.backend, "model": target.model, "endpoint": response.endpoint, "vectors": response.vectors}))
    else:
        print(f"{target.backend}/{target.model} @ {response.endpoint}: {len(response.vectors)} vectors of {len(response.vectors[0])} dimensions")
        for text, vector in zip(args.texts, response.vectors):
            print(f"  {text[:40]!r}: [{', '.join(f'{x:.4f}' for x in vector[:4])}, ...]")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Progress on stderr as each run ends; the table (or the JSON document) once all are measured and saved."""
    from .. import console
    from ..benchmark import bench_targets, run_bench, save
    from ..config import load_config

    config = load_config(args.config)
    targets = bench_targets(config, args.targets)
    if not targets:
        raise InputError(f"nothing to bench: {config.path} has no usable backend with a chat model", hint="dse status says why")
    state_dir = _state_dir(args)

    def progress(line: str) -> None:
        print(f"dse bench: {line}", file=sys.stderr, flush=True)

    measured = asyncio.run(run_bench(config, targets, runs=args.runs, state_dir=state_dir, progress=progress))
    saved = save(state_dir, measured)
    if args.json:
        print(json.dumps(console.bench_data(measured, args.runs, saved), indent=2))
    else:
        print(console.bench_text(measured))
        print(f"saved in {saved}: `dse select` and `model: auto` now score speed with the measured tok/s")
    return 0 if all(m.error is None for m in measured) else 1


def _select(args: argparse.Namespace) -> int:
    from .. import console
    from ..benchmark import measured_speeds
    from ..config import load_config
    from ..routing import Resolver

    config = load_config(args.config)
    raw_cost: str | None = args.max_cost
    max_cost: str | float | None = raw_cost
    if raw_cost is not None and raw_cost.replace(".", "", 1).isdigit():
        max_cost = float(raw_cost)
    spec = {
        "max_cost": max_cost,
        "min_speed": args.min_speed,
        "min_context": args.min_context,
        "specialization": args.specialization,
        "backends": args.backend,
        "exclude_backends": args.exclude_backend,
    }
    tool = None
    if args.tool is not None:
        tool = config.tools.get(args.tool)
        if tool is None:
            raise InputError(f"no tool {args.tool!r} in {config.path}", hint=f"tools: {', '.join(sorted(config.tools)) or 'none'}")
    resolver = Resolver(config, measured=measured_speeds(_state_dir(args)))
    ranked, rejected = resolver.rank(args.task, spec, top_k=args.top_k or config.selector.top_k, tool=tool)
    if args.json:
        print(json.dumps(console.selection_data(ranked, rejected), indent=2))
    else:
        print(console.selection_text(ranked, rejected))
    return 0 if ranked else 1
