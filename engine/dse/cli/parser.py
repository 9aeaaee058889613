"""The argument parser of every command, and the argument types it checks with. Building it imports nothing heavy."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .. import __version__, completion

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
