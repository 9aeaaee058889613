"""Workflows and their runs: run, plan, validate, graph, and the journal's runs and show."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path

from ..errors import InputError
from .common import _inputs, _print_warnings, _state_dir


def _run(args: argparse.Namespace) -> int:
    from .. import console, runner

    state_dir = _state_dir(args)
    if args.resume:
        if args.input or args.inputs:
            raise InputError("--resume reuses the inputs of the run it resumes; drop --input/--inputs")
        from ..workflow.journal import resolve_run

        prepared = runner.prepare_resume(resolve_run(state_dir, args.resume), state_dir, args.config)
    elif args.workflow:
        prepared = runner.prepare(args.workflow, args.config, _inputs(args), strict=args.strict, state_dir=state_dir)
    else:
        raise InputError("dse run needs a workflow file or --resume RUN_ID", hint="dse run workflows/review.yaml")
    _print_warnings(prepared.warnings)
    progress = None if args.json or args.quiet else console.Progress(prepared.plan, sys.stderr)
    ask = (progress.asking(_ask) if progress else _ask) if sys.stdin.isatty() else None
    try:
        result, calls = asyncio.run(
            runner.run_workflow(
                prepared,
                on_event=progress.step if progress else None,
                on_chunk=progress.chunk if progress else None,
                on_start=progress.started if progress else None,
                on_note=progress.note if progress else None,
                max_parallel=args.max_parallel,
                state_dir=state_dir,
                cluster=args.cluster,
                cache=args.cache,
                assume_yes=args.yes,
                confirm=ask,
            )
        )
    finally:
        if progress:
            progress.close()  # also when the run stops with an error or Ctrl-C: the terminal gets its cursor back
    if args.json:
        print(console.run_json(result, calls))
    elif args.quiet:
        if result.outputs:
            print(console.outputs_text(result.outputs, terminal=sys.stdout.isatty()))
    else:
        print(console.run_text(result, calls))
    return 0 if result.status == "done" else 1


async def _ask(question: str) -> bool:
    """A yes/no on the terminal. Read in a daemon thread: Ctrl-C at the question ends the run, not waits for Enter."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()
        loop.call_soon_threadsafe(_settle, answer, line)

    print(f"dse: {question}", file=sys.stderr)
    print("dse: send it, and any such call in this run? [y/N] ", end="", file=sys.stderr, flush=True)
    threading.Thread(target=read, daemon=True).start()
    return (await answer).strip().lower() in ("y", "yes")


def _settle(answer: asyncio.Future[str], line: str) -> None:
    if not answer.done():
        answer.set_result(line)


_RUNS_SHOWN = 20  # `dse runs` without --limit


def _runs(args: argparse.Namespace) -> int:
    """`dse runs` lists, `dse runs prune` removes; each refuses the other's options rather than ignore them."""
    from .. import console
    from ..when import moment
    from ..workflow.history import RunQuery, find_runs, prune_runs

    state_dir = _state_dir(args)
    listing = {"--limit": args.limit, "--status": args.status, "--workflow": args.workflow, "--since": args.since}
    pruning = {"--keep": args.keep, "--older-than": args.older_than, "--dry-run": args.dry_run or None}
    if args.action == "prune":
        wrong = [name for name, value in listing.items() if value is not None]
        if wrong:
            raise InputError(f"{wrong[0]} is for listing runs; `dse runs prune` takes --keep, --older-than and --dry-run")
        before = moment(args.older_than, "--older-than") if args.older_than is not None else None
        pruned = prune_runs(state_dir, keep=args.keep, before=before, dry_run=args.dry_run)
        print(json.dumps(pruned.as_dict(), indent=2) if args.json else console.pruning_text(pruned))
        return 0
    wrong = [name for name, value in pruning.items() if value is not None]
    if wrong:
        raise InputError(f"{wrong[0]} is an option of `dse runs prune`", hint=f"dse runs prune {wrong[0]} ...")
    query = RunQuery(
        limit=_RUNS_SHOWN if args.limit is None else args.limit or None,
        status=args.status,
        workflow=args.workflow,
        since=moment(args.since, "--since") if args.since is not None else None,
    )
    found = find_runs(state_dir, query)
    print(json.dumps([r.summary() for r in found.records], indent=2) if args.json else console.runs_text(found.records, more=found.more))
    return 0


def _show(args: argparse.Namespace) -> int:
    from .. import console
    from ..workflow.journal import read_run, resolve_run, run_directory

    state_dir = _state_dir(args)
    record = read_run(run_directory(state_dir, resolve_run(state_dir, args.run_id)))
    if args.html is not None:
        from .. import report

        report.write(record, args.html)
        print(json.dumps({"id": record.id, "html": str(args.html.resolve())}) if args.json else f"wrote {args.html}")
        return 0
    print(json.dumps(record.as_dict(), indent=2, default=str) if args.json else console.show_text(record, full=args.full))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from .. import console
    from ..workflow import build_dag, load_workflow

    workflow = load_workflow(args.workflow)
    if args.json:
        print(json.dumps(console.graph_data(workflow, build_dag(workflow)), indent=2))
    else:
        print(console.graph_text(workflow, build_dag(workflow), args.format))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .. import console, runner

    from ..preflight import checked, preflight

    prepared = runner.prepare(args.workflow, args.config, strict=args.strict, state_dir=_state_dir(args))
    found = preflight(prepared.plan, prepared.config)
    if args.check:
        found = asyncio.run(checked(found, prepared.config, timeout=args.timeout))
    if args.json:
        print(json.dumps({
            "workflow": prepared.workflow.name,
            "profile": prepared.config.profile,
            "steps": console.plan_rows(prepared.plan, found),
            "tools": console.plan_tools(prepared.plan),
            "checked": found.checked,
            "unavailable": found.problems(),
            "stranded": found.stranded(),
        }, indent=2))
    else:
        _print_warnings([*prepared.config.warnings, *prepared.plan.warnings])
        print(console.plan_text(prepared.plan, verbose=args.why, found=found, profile=prepared.config.profile))
    return 1 if args.check and found.stranded() else 0


def _validate(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..routing import Resolver
    from ..workflow import build_plan, load_workflow
    from ..workflow.from_config import config_workflow, is_config_workflow, workflow_file

    config_path = args.config
    workflows = []
    for name in args.files:
        if config_path is None and Path(name).is_file() and _looks_like_config(name):
            config_path = name
        else:
            workflows.append(name)
    config = load_config(config_path, strict=args.strict)
    warnings = list(config.warnings)
    for name in workflows:
        workflow = config_workflow(name, config) if is_config_workflow(name, config) else load_workflow(workflow_file(name, config))
        warnings += build_plan(workflow, config, Resolver(config)).warnings
    for name in config.workflows:
        warnings += build_plan(config_workflow(name, config), config, Resolver(config)).warnings
    if args.json:
        print(json.dumps({"ok": True, "config": config.path, "workflows": workflows, "warnings": warnings}, indent=2))
    else:
        _print_warnings(warnings)
        print(f"ok: {config.path}" + "".join(f", {w}" for w in workflows))
    return 0


def _looks_like_config(path: str) -> bool:
    from ..backends import is_backend_type
    from ..config import read_yaml
    from ..config.dise import other_layout

    data = read_yaml(Path(path)).data
    if not isinstance(data, dict) or "steps" in data:
        return False
    return "llm" in data or "tools" in data or other_layout(data) is not None or any(is_backend_type(str(k)) for k in data)
