"""The jobs behind the CLI commands, callable from Python too: plan a workflow, run it.

Everything that can be wrong with the input is found before a server starts or a step runs:
load config, load workflow, build the plan (graph, tools, resolution), bind inputs. Only then
does the engine start what the plan needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .engine import Engine
from .routing import Resolver
from .workflow import Executor, Plan, RunResult, Workflow, bind_inputs, build_plan, load_workflow
from .workflow.executor import EventSink


@dataclass(frozen=True)
class Prepared:
    config: Config
    workflow: Workflow
    plan: Plan


def prepare(workflow_path: str | Path, config_path: str | Path | None = None) -> Prepared:
    """Load and check everything a run needs; raises InputError(s) and starts nothing."""
    config = load_config(config_path)
    workflow = load_workflow(workflow_path)
    return Prepared(config, workflow, build_plan(workflow, config, Resolver(config)))


async def run_workflow(
    prepared: Prepared,
    inputs: Mapping[str, Any],
    *,
    on_event: EventSink | None = None,
    max_parallel: int | None = None,
    state_dir: Path = Path(".dse"),
) -> tuple[RunResult, dict[str, dict[str, int]]]:
    """Run a prepared plan; returns the result and the calls each endpoint served."""
    bound = bind_inputs(prepared.workflow, inputs)
    backends = {p.resolution.target.backend for p in prepared.plan.steps.values() if p.resolution}
    async with Engine(prepared.config, state_dir=state_dir) as engine:
        await engine.start(sorted(backends))
        executor = Executor(prepared.plan, engine.router, on_event=on_event, max_parallel=max_parallel)
        result = await executor.run(bound)
        return result, engine.router.calls_per_endpoint()
