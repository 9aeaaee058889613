"""The jobs behind the CLI commands, callable from Python too: plan a workflow, run it, resume it.

Everything that can be wrong with the input is found before a server starts or a step runs:
load config, load workflow, build the plan (graph, tools, templates, resolution), bind
inputs. Only then is a journal opened and does the engine start what the plan needs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .benchmark import measured_speeds
from .config import Config, load_config
from .engine import Engine
from .local import find_llama_server, find_model
from .errors import DseError, InputError
from .backends import EmbedResponse
from .redact import Redactor
from .routing import Resolver, Target
from .routing.notes import Note, NoteSink
from .spend import Confirm, SpendPlan, SpendSession, accounted
from .spend.control import CURRENT_STEP
from .runners import InProcessRunner, StepRunner, check_cluster
from .workflow import Plan, RunResult, Scheduler, Workflow, bind_inputs, build_plan
from .workflow.results import StepResult
from .workflow.scheduler import EventSink
from .workflow.steps import ChunkSink
from .workflow.from_config import named_workflow
from .workflow.journal import RUNS, RunJournal, file_digest, read_run, run_directory


@dataclass(frozen=True)
class Prepared:
    """A checked plan and the inputs bound to it: ready to run, nothing started yet."""

    config: Config
    workflow: Workflow
    plan: Plan
    inputs: dict[str, Any] = field(default_factory=dict)
    reuse: dict[str, StepResult] = field(default_factory=dict)
    resume_id: str | None = None
    warnings: tuple[str, ...] = ()
    reuse_items: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


def prepare(
    workflow_path: str | Path,
    config_path: str | Path | None = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
    state_dir: Path | None = None,
) -> Prepared:
    """Load and check everything a run needs; raises InputError(s) and starts nothing.

    Planning needs no server binary: whether `llama-server` and the model are installed is
    checked by `run_workflow`, before its journal opens. With `state_dir`, the model selector
    scores speed with what `dse bench` measured there.
    """
    config = load_config(config_path, strict=strict)
    reference = str(workflow_path)
    workflow = named_workflow(reference, config)
    plan = build_plan(workflow, config, Resolver(config, measured=measured_speeds(state_dir) if state_dir else None))
    bound = bind_inputs(workflow, inputs or {})
    return Prepared(config, workflow, plan, bound, warnings=(*config.warnings, *plan.warnings))


def _check_installed(prepared: Prepared, backends: set[str]) -> None:
    """The managed servers a run will start are installed: a missing one is a SetupError before anything is written."""
    for name in sorted(backends):
        managed = prepared.config.backends[name].managed if name in prepared.config.backends else None
        if managed is not None:
            find_llama_server(managed.binary)
            find_model(managed.model)


def prepare_resume(run_id: str, state_dir: Path, config_path: str | Path | None = None) -> Prepared:
    """The same workflow, config and inputs as run `run_id`, with its finished steps to reuse."""
    record = read_run(run_directory(state_dir, run_id))
    meta = record.meta
    prepared = prepare(meta["workflow"], config_path or meta["config"], meta["inputs"], state_dir=state_dir)
    warnings = list(prepared.warnings)
    if file_digest(prepared.workflow.source.file) != meta.get("workflow_digest"):
        warnings.append(f"{meta['workflow']} changed since run {run_id}; finished steps are reused as they were")
    reuse = {
        step_id: StepResult.from_record(event)
        for step_id, event in record.steps.items()
        if event["status"] in ("done", "skipped") and event.get("error") is None
    }
    items = {step_id: done for step_id, done in record.items.items() if step_id not in reuse}
    return Prepared(
        prepared.config, prepared.workflow, prepared.plan, prepared.inputs, reuse, run_id, tuple(warnings), items
    )


async def run_workflow(
    prepared: Prepared,
    *,
    on_event: EventSink | None = None,
    on_chunk: ChunkSink | None = None,
    on_start: Callable[[RunJournal], None] | None = None,
    on_note: NoteSink | None = None,
    max_parallel: int | None = None,
    state_dir: Path = Path(".dse"),
    cluster: str | None = None,
    cache: str | None = None,
    assume_yes: bool = False,
    confirm: Confirm | None = None,
) -> tuple[RunResult, dict[str, dict[str, int]]]:
    """Run a prepared plan with a journal; returns the result and the calls each endpoint received.

    Once the journal exists it says how the run ended, whatever ends it: the scheduler records
    a finish or an interruption, and anything that escapes before it could (a server that would
    not start, Ctrl-C while starting, a bug) is recorded here, so only a process that was killed
    leaves a run without an end (`dse runs` lists it as "killed").

    Every attempt is a row in the usage ledger under `state_dir`; `cache` (a mode) overrides
    every level's response-cache mode; `assume_yes` answers `require_confirmation`, else
    `confirm` asks the user, and without either such a call stops the run.

    `on_note` hears the router's retries, fallbacks, opened breakers, refusals and rate-limit
    waits as they happen, each with its step, for the calls made in this process: with
    `cluster`, step bodies route their calls on the workers, whose notes stay there. The
    journal records each as a `note` event, which the HTML report's timeline marks.
    """
    if max_parallel is not None and max_parallel < 1:
        raise InputError(f"max_parallel must be 1 or more, got {max_parallel}")
    cluster = prepared.config.cluster if cluster is None else cluster
    if cluster is not None:
        check_cluster(cluster)
    pending = {p.resolution.target.backend for sid, p in _all_steps(prepared.plan) if p.resolution and sid not in prepared.reuse}
    _check_installed(prepared, pending)
    _check_state_dir(state_dir)
    redactor = Redactor([secret.reveal() for secret in prepared.config.secrets])
    if prepared.resume_id:
        journal = RunJournal.reopen(state_dir, prepared.resume_id, redactor)
        journal.event("run_resumed", reused=sorted(prepared.reuse))
    else:
        journal = RunJournal.create(
            state_dir,
            workflow=prepared.workflow.path,
            workflow_name=prepared.workflow.name,
            config=prepared.config.path,
            inputs=prepared.inputs,
            redactor=redactor,
            source=prepared.workflow.source.file,
            graph=_step_graph(prepared.plan),
        )
        journal.event("run_started")
    targets = [p.resolution.target for _sid, p in _all_steps(prepared.plan) if p.resolution]
    spend = SpendPlan(str(state_dir.resolve()), journal.run_id, cache, assume_yes, SpendPlan.uses_cache(targets, cache))
    session: SpendSession | None = None
    try:
        if on_start is not None:
            on_start(journal)
        session = SpendSession(spend, prepared.config, confirm=confirm)
        async with Engine(prepared.config, state_dir=state_dir) as engine:
            engine.router.on_note = _with_step(_journaled(journal, on_note))
            await engine.start(sorted(pending))
            async with _runner(cluster, engine, session, spend, on_chunk) as runner:
                scheduler = Scheduler(
                    prepared.plan,
                    runner,
                    journal=journal,
                    reuse=prepared.reuse,
                    reuse_items=prepared.reuse_items,
                    room=engine.router.room,
                    on_event=on_event,
                    max_parallel=max_parallel,
                    redactor=redactor,
                )
                result = await scheduler.run(prepared.inputs)
                calls = await runner.served() or engine.router.calls_per_endpoint()
            journal.event("calls_per_endpoint", calls=calls)
            return result, calls
    except BaseException as exc:
        _record_end(journal, exc)
        raise
    finally:
        if session is not None:
            session.close()
        journal.close()


@contextlib.asynccontextmanager
async def _runner(
    cluster: str | None, engine: Engine, session: SpendSession, spend: SpendPlan, on_chunk: ChunkSink | None
) -> AsyncIterator[StepRunner]:
    """Bodies in this process, or on the cluster; a `local:N` cluster lives as long as the run."""
    if cluster is None:
        yield InProcessRunner(session.caller(engine.router), on_chunk=on_chunk)
        return
    from .runners.cluster import cluster_runner

    async with cluster_runner(cluster, engine.config, engine.endpoints.managed(), spend) as runner:
        yield runner


def _journaled(journal: RunJournal, sink: NoteSink | None) -> NoteSink:
    """Each note journaled as it happens (the report marks it when and where it was), then told to `sink`."""

    def note(what: Note) -> None:
        journal.event("note", **asdict(what))
        if sink is not None:
            sink(what)

    return note


def _step_graph(plan: Plan) -> list[dict[str, Any]]:
    """The plan's steps in order with what each needs: the journal keeps the graph the run had."""
    return [
        {"id": step_id, "kind": plan.steps[step_id].step.kind, "tool": plan.steps[step_id].step.tool, "needs": sorted(plan.graph.predecessors(step_id))}
        for step_id in plan.order
    ]


def _with_step(sink: NoteSink) -> NoteSink:
    """Notes that name the step whose call they concern: the router knows calls, the step's body marks its own."""
    return lambda note: sink(replace(note, step_id=CURRENT_STEP.get()))


def _record_end(journal: RunJournal, exc: BaseException) -> None:
    """Journal how `exc` ended the run, unless the scheduler already did (a finish, or an interruption)."""
    try:
        if read_run(journal.directory).ended:
            return
    except InputError:
        pass  # a journal that cannot be read back still gets its ending written
    if isinstance(exc, DseError):
        journal.event("run_failed", error=str(exc))
    elif isinstance(exc, Exception):
        journal.event("run_failed", error=f"internal error: {type(exc).__name__}: {exc}")
    else:
        journal.event("run_interrupted", running=[])


def _check_state_dir(state_dir: Path) -> None:
    """Journals and server logs can be written there; if not, that is bad input, found before anything starts.

    Nothing is created to find out: the nearest part of the path that exists must be a
    writable directory.
    """
    probe = state_dir / RUNS
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    problem = None
    if not probe.is_dir():
        problem = f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"{probe} is not writable"
    if problem:
        raise InputError(
            f"cannot keep run journals and logs in {state_dir}: {problem}",
            hint="pass --state-dir DIR (or set $DSE_STATE_DIR) to a writable directory",
        )


def _all_steps(plan: Plan) -> list[tuple[str, Any]]:
    """Every planned step, sub-workflows included: the engine starts what any of them needs."""
    out = []
    for step_id, planned in plan.steps.items():
        out.append((step_id, planned))
        if planned.subplan is not None:
            out += _all_steps(planned.subplan)
    return out


async def embed(
    texts: list[str], config_path: str | Path | None = None, *, backend: str | None = None, state_dir: Path = Path(".dse")
) -> tuple[Target, EmbedResponse]:
    """Embeddings on the configured embedding backend, starting its managed servers if it has any."""
    config = load_config(config_path)
    target = Resolver(config).embedding_target(backend)
    _check_state_dir(state_dir)
    async with Engine(config, state_dir=state_dir) as engine:
        await engine.start([target.backend])
        with accounted(engine.router, config, state_dir, "embed"):
            return target, await engine.router.embed(target, texts)
