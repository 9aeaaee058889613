"""The `dse` command: parse arguments, call into the package, print. Nothing else lives here.

Modules are imported inside each command so that `dse --help` and `dse --version` stay instant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__, completion
from .errors import DseError, InputError, InputErrors

EPILOG = """\
examples:
  dse run workflows/review.yaml                       run the code review on this repository
  dse run review                                      the same packaged workflow, from any git repository
  dse init                                            write a starter config.yaml here to edit
  dse run workflows/review.yaml --input target=../app  review another git repository
  dse run workflows/review.yaml --json | jq .outputs  one JSON document for scripts
  dse run --resume last                               redo only what did not finish in the newest run
  dse runs --status failed --since 7d                 recorded runs; `dse show last` (or an id prefix) for one in full
  dse runs prune --keep 50                            remove all but the newest 50 runs (never one still running)
  dse usage --since 7d --by backend,model             tokens and USD per backend and model, from the usage ledger
  dse cache stats                                     the response cache: hits, misses, hit rate, size
  dse plan workflows/review.yaml                      which backend and model each step gets, and why
  dse graph workflows/review.yaml                     the step graph as Mermaid (or --format dot)
  dse validate configs/config.yaml workflows/*.yaml   check files, exit 2 with file:line on errors
  dse select "refactor a large Python module"         rank configured models for a task
  dse bench local --runs 5                            measure tokens/s and time to first token; select uses them
  dse status                                          what is reachable, ready, and why not
  dse config show                                     the effective config, secrets as ${VAR}
  dse config show --profile prod                      the same with profiles.prod merged over it
  dse serve --port 8080                               the config as an OpenAI/Anthropic-compatible gateway

config is found at --config, $DSE_CONFIG, ./config.yaml or ./configs/config.yaml, else the
packaged default is used; a .env beside the config supplies ${VAR} values the environment lacks;
--profile NAME (or $DSE_PROFILE) merges the config's profiles.NAME over the rest of it.
exit codes: 0 success, 1 a run failed, 2 invalid input or config.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dse",
        description="Declarative orchestration for LLM work: one config for every backend, YAML workflows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dse {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, help_text: str, example: str, under: argparse._SubParsersAction[argparse.ArgumentParser] = commands
    ) -> argparse.ArgumentParser:
        sub = under.add_parser(
            name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--config", metavar="PATH", help="config file (default: $DSE_CONFIG, ./config.yaml, ./configs/config.yaml, else the packaged default)")
        _profile_option(sub)
        sub.add_argument("--json", action="store_true", help="print one JSON document instead of text")
        sub.add_argument("--state-dir", type=Path, default=None, metavar="DIR", help="run journals and server logs (default: $DSE_STATE_DIR or .dse)")
        return sub

    run = command(
        "run",
        "run a workflow",
        "dse run workflows/review.yaml --input target=.\n  dse run blog_workflow -i task='async Python'   (a workflow in the config's workflows:)\n"
        "  dse run --resume last   (or a run id, or a prefix only one run id starts with)\n"
        "  dse run big_batch.yaml --cluster local:4   (step bodies on 4 Dask worker processes)",
    )
    run.add_argument(
        "workflow", nargs="?", help="a workflow YAML file, or a name: in the config's `workflows:`, ./workflows/NAME.yaml, or packaged (review, explain)"
    ).completer = completion.workflows  # type: ignore[attr-defined]
    run.add_argument(
        "--resume", metavar="RUN", help="re-run only what did not finish in that run: its id, a unique prefix of it, or `last`"
    ).completer = completion.runs  # type: ignore[attr-defined]
    run.add_argument(
        "--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="a workflow input (repeatable)"
    ).completer = completion.inputs  # type: ignore[attr-defined]
    run.add_argument("--inputs", metavar="FILE", help="workflow inputs from a JSON file ('-' for stdin)")
    run.add_argument("--max-parallel", type=_at_least_one, metavar="N", help="at most N steps at once")
    run.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress lines, only the outputs: one output as it is; several each after a line `== NAME ==` "
        "(text as it is, other values as JSON; --json to parse them safely)",
    )
    run.add_argument(
        "--cache",
        choices=["on", "off", "read_only", "write_only"],
        help="the response cache for every call of this run, over the config's cache settings (and for sampled calls too)",
    )
    run.add_argument("--yes", "-y", action="store_true", help="accept calls above require_confirmation.above_tokens without asking")
    run.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run step bodies on Dask: local:N starts N worker processes, or a scheduler address such as "
        "tcp://10.0.0.5:8786 (default: the config's executor.cluster; needs pip install 'dse[cluster]')",
    )

    plan = command("plan", "show which backend and model every step resolves to, and why", "dse plan workflows/review.yaml")
    plan.add_argument(
        "workflow", help="a workflow YAML file, or a name: in the config's `workflows:`, ./workflows/NAME.yaml, or packaged (review, explain)"
    ).completer = completion.workflows  # type: ignore[attr-defined]
    plan.add_argument("--why", action="store_true", help="print every reason in the resolution chain")
    plan.add_argument(
        "--check", action="store_true",
        help="also probe every endpoint the fallback chains name and flag the ones down; exit 1 when a step has no backend left",
    )
    plan.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per probe with --check (default 3)")

    validate = command("validate", "check a config and workflows without running anything", "dse validate workflows/review.yaml")
    validate.add_argument("files", nargs="*", help="workflow files or names (a file with an `llm:` or `tools:` key is checked as a config)")
    for strict in (run, plan, validate):
        strict.add_argument("--strict", action="store_true", help="sections of other DiSE subsystems in the config are errors, not a warning")

    select = command("select", "rank the configured models for a task with the weighted model selector", 'dse select "Generate complex Python code with type hints" --max-cost medium')
    select.add_argument("task", help="what the model is for, in plain words")
    select.add_argument("--top-k", type=_at_least_one, metavar="N", help="how many to list (default: model_selector.top_k)")
    select.add_argument("--max-cost", metavar="TIER|N", help="free, low, medium, high, or 0 (free) .. 10")
    select.add_argument("--min-speed", type=float, metavar="N", help="0 .. 10")
    select.add_argument("--min-context", type=int, metavar="TOKENS")
    select.add_argument("--specialization", metavar="NAME", help="code, reasoning, writing, summarization, long_context, chat")
    select.add_argument("--backend", action="append", default=[], metavar="NAME", help="only these backends (repeatable)")
    select.add_argument("--exclude-backend", action="append", default=[], metavar="NAME", help="never these backends (repeatable)")
    select.add_argument("--tool", metavar="NAME", help="rank for this tool: its DiSE tiers and tags are the selector's prior")

    status = command("status", "every backend and endpoint: reachable, ready, models, and why not", "dse status --json")
    status.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per probe (default 3)")
    models = command(
        "models",
        "models across every backend: configured roles and what servers offer; pull, load, unload and ps manage what is in memory",
        "dse models\n  dse models pull llama3\n  dse models load smollm2   (a managed llama.cpp backend: starts its servers, which keep running)\n"
        "  dse models ps\n  dse models unload smollm2",
    )
    models.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per probe (default 3)")
    model_commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    model_pull = command(
        "pull", "download a model onto its Ollama servers, with progress", "dse models pull llama3\n  dse models pull qwen2.5-coder:14b --backend gpu_a", under=model_commands
    )
    model_load = command(
        "load",
        "put a model in memory after checking GPU headroom: Ollama keep_alive, or start a managed llama.cpp backend's servers (they keep running)",
        "dse models load llama3 --keep-alive 2h\n  dse models load smollm2 --backend local",
        under=model_commands,
    )
    model_unload = command(
        "unload", "take a model out of memory: Ollama keep_alive 0, or stop the servers `dse models load` started", "dse models unload llama3", under=model_commands
    )
    model_ps = command("ps", "what is loaded where, and its memory: Ollama's /api/ps and the recorded managed servers", "dse models ps --json", under=model_commands)
    for lifecycle_command in (model_pull, model_load, model_unload):
        lifecycle_command.add_argument("name", metavar="NAME", help="a model name, or BACKEND:MODEL")
    for lifecycle_command in (model_pull, model_load, model_unload, model_ps):
        lifecycle_command.add_argument(
            "--backend", metavar="NAME", help="the backend to act on (default: the one that lists NAME under models: or managed.model, else the default)"
        )
    model_load.add_argument("--keep-alive", metavar="DURATION", help="Ollama: how long it stays loaded: 10m, 2h, 300 (seconds), -1 (until unloaded); default 30m")
    model_load.add_argument("--force", action="store_true", help="load even when the GPU check says it will not fit")
    model_ps.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per server (default 3)")

    embed = command("embed", "embedding vectors from the configured embedding backend", 'dse embed "first text" "second text" --json')
    embed.add_argument("texts", nargs="+", help="texts to embed")
    embed.add_argument("--backend", metavar="NAME", help="instead of llm.global_defaults.default_embedding_backend")

    runs = command(
        "runs",
        "list recorded runs, newest first, or prune old ones",
        "dse runs                                    the newest 20 runs\n"
        "  dse runs --status failed --workflow review --since 7d --limit 0\n"
        "  dse runs --json | jq '.[0]'\n"
        "  dse runs prune --keep 50 --dry-run          what removing all but the newest 50 would remove\n"
        "  dse runs prune --older-than 30d             runs last written more than 30 days ago\n"
        "  dse runs prune --keep 50 --older-than 30d   only runs both select: the newest 50 and the last 30 days stay",
    )
    runs.add_argument("action", nargs="?", choices=["prune"], help="prune: remove old runs (a run still running is never removed)")
    listing = runs.add_argument_group("listing")
    listing.add_argument("--limit", type=_whole_number(0), metavar="N", help="the newest N runs that match (default 20; 0 lists all)")
    listing.add_argument("--status", metavar="STATE", help="only runs that are done, failed, interrupted, running, killed (its process died before the run ended) or unreadable")
    listing.add_argument("--workflow", metavar="NAME", help="only runs of this workflow (its name: or its file name)")
    listing.add_argument("--since", metavar="WHEN", help="only runs started since a date (2026-11-28), a date and time, or a span back from now (7d, 24h)")
    pruning = runs.add_argument_group("dse runs prune (--keep, --older-than or both: a run goes only when both select it)")
    pruning.add_argument("--keep", type=_whole_number(0), metavar="N", help="remove all but the newest N runs")
    pruning.add_argument("--older-than", metavar="SPAN|DATE", help="remove runs whose journal was last written before then (30d, 2026-11-01)")
    pruning.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    show_run = command(
        "show",
        "everything a run did: each step's target, prompt, output, tokens, timing, attempts",
        "dse show                          the newest run\n  dse show 20261122-04 --full       a unique prefix of a run id; prompts and outputs in full\n"
        "  dse show last --html report.html  the run as one HTML file: step graph, timeline per endpoint, every step",
    )
    show_run.add_argument(
        "run_id", nargs="?", default="last", metavar="RUN", help="a run id, a prefix only one run id starts with, or `last` (the default)"
    ).completer = completion.runs  # type: ignore[attr-defined]
    show_run.add_argument("--full", action="store_true", help="prompts and outputs in full (by default each is cut to a few lines)")
    show_run.add_argument("--html", metavar="PATH", type=Path, help="write the run as one self-contained HTML file (step graph, timeline per endpoint, every step in full) instead")
    usage = command(
        "usage",
        "tokens, calls and USD from the usage ledger (<state dir>/usage.db), per backend, model, day, run or step",
        "dse usage                                   per backend, every call recorded\n"
        "  dse usage --since 7d --by backend,model     the last 7 days, per backend and model\n"
        "  dse usage --since 2026-11-28 --by day       per day since that date (local time)\n"
        "  dse usage --run 20261122-043012-3f9a --by step --json | jq .total.cost",
    )
    usage.add_argument("--since", metavar="WHEN", help="only calls since a date (2026-11-28), a date and time (2026-11-28T09:30), or a span back from now (7d, 24h, 30m)")
    usage.add_argument("--run", metavar="RUN_ID", help="only the calls of this run (and its resumptions)")
    usage.add_argument(
        "--by", action="append", metavar="GROUP", help="group by backend, model, day, run or step; comma-separated or repeated (default: backend)"
    )

    cache = commands.add_parser(
        "cache",
        help="the response cache (<state dir>/cache.db): its hit rate and size, or empty it",
        description="The response cache keeps answers under a hash of the whole request; a hit sends nothing and costs nothing.",
        epilog="examples:\n  dse cache stats\n  dse cache clear",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="SUBCOMMAND", required=True)
    command("stats", "hits, misses, hit rate, entries and size of the response cache", "dse cache stats --json", under=cache_commands)
    command("clear", "remove every cached answer and the hit and miss counts", "dse cache clear", under=cache_commands)

    graph = command(
        "graph", "print a workflow's dependency graph as Mermaid or Graphviz dot (--json: nodes and edges)", "dse graph workflows/review.yaml --format dot | dot -Tsvg > review.svg"
    )
    graph.add_argument("workflow").completer = completion.workflows  # type: ignore[attr-defined]
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")

    init = commands.add_parser(
        "init",
        help="write a starter config.yaml (and the packaged workflows) into this directory",
        description="Write a commented config.yaml into the current directory: the packaged default, to edit. "
        "Nothing is overwritten: if any file it would write exists, it names it and writes nothing. "
        "It also adds .dse/ (run journals) to .gitignore.",
        epilog="example:\n  cd ~/src/app && dse init --workflows && dse validate && dse run review",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--workflows", action="store_true", help="also copy the packaged workflows into ./workflows/")
    init.add_argument("--json", action="store_true", help="print what was written as JSON")

    changes = commands.add_parser(
        "changes",
        help="the changed files of a git repository, one diff each, as the review workflow reads them",
        description="List what a review reads: the working tree (against HEAD), the staged changes, one commit or a "
        "range, one diff per file, split at hunks to fit --max-chars; binary, lock and generated files are listed as skipped.",
        epilog="examples:\n  dse changes --json\n  dse changes --mode range --rev main...my-branch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    changes.add_argument("--repo", default=".", metavar="DIR", help="the git repository (default: here)")
    changes.add_argument("--mode", default="auto", help="auto (the working tree when it has changes, else HEAD), worktree, staged, commit, range")
    changes.add_argument("--rev", default="", metavar="REV", help="the commit (commit mode, default HEAD), or BASE..HEAD / BASE...HEAD (range mode)")
    changes.add_argument("--max-chars", type=_at_least_one, default=4000, metavar="N", help="longest diff one part may be, at least 1000 (default 4000)")
    changes.add_argument("--json", action="store_true", help="print the changes as JSON")
    save = commands.add_parser(
        "save",
        help="print text and write it to a file (a workflow's last step saves its report this way)",
        description="Print TEXT, and write it to PATH, creating its directory; PATH '' writes no file.",
        epilog="example (a workflow step):\n  run: [dse, save, \"{{ inputs.output }}\", \"{{ steps.report.output }}\"]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    save.add_argument("path")
    save.add_argument("text")
    save.add_argument("--json", action="store_true", help='print {"path", "bytes", "text"} instead of the text')
    serve = command(
        "serve",
        "serve the config as an OpenAI- and Anthropic-compatible HTTP gateway (needs pip install 'dse[serve]')",
        "dse serve --port 8080\n"
        "  curl localhost:8080/v1/chat/completions -d '{\"model\": \"generator\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'\n"
        "  OPENAI_BASE_URL=http://localhost:8080/v1 your-openai-client   (model: a role, backend:model, a tool, or auto)",
    )
    serve.add_argument("--host", metavar="ADDRESS", help="address to listen on (default: serve.host, else 127.0.0.1; any other needs serve.api_keys)")
    serve.add_argument("--port", type=_whole_number(0), metavar="PORT", help="port (default: serve.port, else 8080; 0 picks a free one)")

    bench = command(
        "bench",
        "measure time to first token and tokens/s of each backend and model; saved, and the selector's speed score uses them",
        "dse bench                 every usable backend and its models (paid APIs too: about 10 short calls each)\n"
        "  dse bench local ollama:llama3 --runs 5\n"
        '  dse select "summarize a text"   then says "speed: measured DATE, N tok/s" for what was measured',
    )
    bench.add_argument("targets", nargs="*", metavar="BACKEND[:MODEL]", help="what to measure (default: every usable backend and its models)")
    bench.add_argument("--runs", type=_at_least_one, default=3, metavar="N", help="times each prompt is sent; figures are medians (default 3)")

    shell = commands.add_parser(
        "completion",
        help="print the shell code that completes dse commands, workflows, run ids and --input names",
        description="Print the code your shell evaluates to complete dse: commands and options, workflow files and names, run ids, and the --input names of the workflow on the line.",
        epilog='install (bash; zsh alike, into ~/.zshrc):\n  echo \'eval "$(dse completion bash)"\' >> ~/.bashrc',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shell.add_argument("shell", nargs="?", default="bash", choices=completion.SHELLS, help="the shell (default: bash)")
    shell.add_argument("--json", action="store_true", help='print {"shell", "code"} instead of the code')

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_commands.add_parser("show", help="the effective config with defaults filled in, secrets as their ${VAR}: dse validate accepts it")
    show.add_argument("--config", metavar="PATH")
    _profile_option(show)
    show.add_argument("--json", action="store_true")
    dise = config_commands.add_parser("import", help="write a dse config equivalent to a DiSE config file, and report what was mapped and dropped")
    dise.add_argument("file", help="a DiSE config file (model registry, model_roles, model_tiers or ollama: layout)")
    dise.add_argument("-o", "--output", metavar="OUT", help="write the dse config here (default: stdout)")
    dise.add_argument("--json", action="store_true", help='print {"config", "mapped", "dropped"} as JSON')
    return parser


def _profile_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--profile", metavar="NAME", help="merge the config's profiles.NAME over it (default: $DSE_PROFILE)")


def _profile(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """`--profile` for every config the command loads; the config package is imported only when it is given."""
    if not getattr(args, "profile", None):
        return contextlib.nullcontext()
    from .config.profiles import choosing

    return choosing(args.profile)


def _whole_number(minimum: int) -> Callable[[str], int]:
    """A count argument that argparse refuses below `minimum` with exit 2 (0 steps at once would run nothing)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


_at_least_one = _whole_number(1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if completion.active():
        completion.complete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    from .redact import RedactingStream, Redactor, collecting

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


def _run(args: argparse.Namespace) -> int:
    from . import console, runner

    state_dir = _state_dir(args)
    if args.resume:
        if args.input or args.inputs:
            raise InputError("--resume reuses the inputs of the run it resumes; drop --input/--inputs")
        from .workflow.journal import resolve_run

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


def _status(args: argparse.Namespace) -> int:
    from . import console
    from .config import load_config
    from .status import collect_status

    reports = asyncio.run(collect_status(load_config(args.config), timeout=args.timeout, with_models=True))
    print(json.dumps(console.status_data(reports), indent=2) if args.json else console.status_text(reports))
    return 0 if all(r.ok for r in reports if "default" in r.usage) else 1


def _models(args: argparse.Namespace) -> int:
    if args.models_command is not None:
        return _model_lifecycle(args)
    from . import console
    from .config import load_config
    from .status import collect_status

    rows = console.model_rows(asyncio.run(collect_status(load_config(args.config), timeout=args.timeout)))
    print(json.dumps(rows, indent=2) if args.json else console.table(rows, ["backend", "model", "roles", "offered_by", "loaded"]))
    return 0


def _model_lifecycle(args: argparse.Namespace) -> int:
    """`dse models pull|load|unload|ps`: the result on stdout; pull progress on stderr, none with --json."""
    from . import lifecycle
    from .config import load_config

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
    from . import runner

    target, response = asyncio.run(runner.embed(args.texts, args.config, backend=args.backend, state_dir=_state_dir(args)))
    if args.json:
        print(json.dumps({"backend": target.backend, "model": target.model, "endpoint": response.endpoint, "vectors": response.vectors}))
    else:
        print(f"{target.backend}/{target.model} @ {response.endpoint}: {len(response.vectors)} vectors of {len(response.vectors[0])} dimensions")
        for text, vector in zip(args.texts, response.vectors):
            print(f"  {text[:40]!r}: [{', '.join(f'{x:.4f}' for x in vector[:4])}, ...]")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .config import load_config
    from .serve import Listening, run

    config = load_config(args.config)
    host = args.host or config.serve.host
    port = config.serve.port if args.port is None else args.port

    def announce(listening: Listening) -> None:
        if args.json:
            print(json.dumps({"url": listening.url, "backends": list(listening.backends), "api_keys": listening.keys}), flush=True)
        access = "loopback only: no serve.api_keys" if listening.loopback_only else f"{listening.keys} API key(s) required"
        print(f"dse serve: listening on {listening.url} ({access}); backends: {', '.join(listening.backends)}", file=sys.stderr, flush=True)
        print(f"  OpenAI: {listening.url}/v1   Anthropic: {listening.url}   health: {listening.url}/health   Ctrl-C or SIGTERM drains and stops", file=sys.stderr, flush=True)

    run(config, host, port, _state_dir(args), announce)
    print("dse serve: stopped", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Progress on stderr as each run ends; the table (or the JSON document) once all are measured and saved."""
    from . import console
    from .benchmark import bench_targets, run_bench, save
    from .config import load_config

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


_RUNS_SHOWN = 20  # `dse runs` without --limit


def _runs(args: argparse.Namespace) -> int:
    """`dse runs` lists, `dse runs prune` removes; each refuses the other's options rather than ignore them."""
    from . import console
    from .when import moment
    from .workflow.history import RunQuery, find_runs, prune_runs

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


def _usage(args: argparse.Namespace) -> int:
    """Read the ledger, never create it: asking what was spent writes nothing where nothing was."""
    import time

    from . import console
    from .spend import ledger
    from .when import moment

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
    from .spend.ledger import GROUPS

    names = [name.strip() for value in values or ["backend"] for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or not names:
        raise InputError(f"--by {unknown[0] if unknown else ''!r}: expected {', '.join(GROUPS)}", hint="dse usage --by backend,model")
    return list(dict.fromkeys(names))


def _cache(args: argparse.Namespace) -> int:
    """`dse cache stats|clear`; a cache that was never written is empty, and is not created by asking.

    A damaged cache file is `StateFileUnusable`, an error that names the file, not a traceback.
    """
    from . import console
    from .spend.cache import FILE, ResponseCache

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


def _changes(args: argparse.Namespace) -> int:
    from .changes import collect

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


def _show(args: argparse.Namespace) -> int:
    from . import console
    from .workflow.journal import read_run, resolve_run, run_directory

    state_dir = _state_dir(args)
    record = read_run(run_directory(state_dir, resolve_run(state_dir, args.run_id)))
    if args.html is not None:
        from . import report

        report.write(record, args.html)
        print(json.dumps({"id": record.id, "html": str(args.html.resolve())}) if args.json else f"wrote {args.html}")
        return 0
    print(json.dumps(record.as_dict(), indent=2, default=str) if args.json else console.show_text(record, full=args.full))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from . import console
    from .workflow import build_dag, load_workflow

    workflow = load_workflow(args.workflow)
    if args.json:
        print(json.dumps(console.graph_data(workflow, build_dag(workflow)), indent=2))
    else:
        print(console.graph_text(workflow, build_dag(workflow), args.format))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from . import console, runner

    from .preflight import checked, preflight

    prepared = runner.prepare(args.workflow, args.config, strict=args.strict, state_dir=_state_dir(args))
    found = preflight(prepared.plan, prepared.config)
    if args.check:
        found = asyncio.run(checked(found, prepared.config, timeout=args.timeout))
    if args.json:
        print(json.dumps({
            "workflow": prepared.workflow.name,
            "steps": console.plan_rows(prepared.plan, found),
            "tools": console.plan_tools(prepared.plan),
            "checked": found.checked,
            "unavailable": found.problems(),
            "stranded": found.stranded(),
        }, indent=2))
    else:
        _print_warnings([*prepared.config.warnings, *prepared.plan.warnings])
        print(console.plan_text(prepared.plan, verbose=args.why, found=found))
    return 1 if args.check and found.stranded() else 0


def _validate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .routing import Resolver
    from .workflow import build_plan, load_workflow
    from .workflow.from_config import config_workflow, is_config_workflow, workflow_file

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
    from .backends import is_backend_type
    from .config import read_yaml
    from .config.dise import other_layout

    data = read_yaml(Path(path)).data
    if not isinstance(data, dict) or "steps" in data:
        return False
    return "llm" in data or "tools" in data or other_layout(data) is not None or any(is_backend_type(str(k)) for k in data)


def _select(args: argparse.Namespace) -> int:
    from . import console
    from .benchmark import measured_speeds
    from .config import load_config
    from .routing import Resolver

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


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from .config import load_config
    from .config.export import to_data

    config = load_config(args.config)
    _print_warnings(config.warnings)
    data = to_data(config)
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _init(args: argparse.Namespace) -> int:
    from .init import init

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


def _config(args: argparse.Namespace) -> int:
    return _config_import(args) if args.config_command == "import" else _config_show(args)


def _config_import(args: argparse.Namespace) -> int:
    """A DiSE config as a dse config, on stdout or `-o`; the report of every key, located, on stderr."""
    from .config.dise_import import import_file

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


if __name__ == "__main__":
    sys.exit(main())
