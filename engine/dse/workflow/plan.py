"""A workflow bound to a config: every step checked and every model call resolved, nothing run.

`dse plan` prints this; `dse run` executes exactly this, so what the plan says is what happens.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import networkx as nx

from ..config.model import Config, ToolConfig
from ..errors import InputError, InputErrors
from ..routing.resolver import Intent, Resolution, Resolver
from .dag import build_dag
from .model import Step, Workflow


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    tool: ToolConfig | None = None
    resolution: Resolution | None = None

    @property
    def prompt_template(self) -> str | None:
        """The user message template, with any directive phrase already removed."""
        return self.resolution.text if self.resolution else None


@dataclass(frozen=True)
class Plan:
    workflow: Workflow
    graph: nx.DiGraph
    steps: dict[str, PlannedStep]

    @property
    def order(self) -> list[str]:
        """A stable topological order: file order among steps that are ready together."""
        position = {s.id: i for i, s in enumerate(self.workflow.steps)}
        return list(nx.lexicographical_topological_sort(self.graph, key=position.__getitem__))

    @property
    def warnings(self) -> list[str]:
        return [w for p in self.steps.values() if p.resolution for w in p.resolution.warnings]


def build_plan(workflow: Workflow, config: Config, resolver: Resolver) -> Plan:
    """Check the graph and the tools, resolve every model call; all errors at once."""
    graph = build_dag(workflow)
    errors: list[InputError] = []
    planned: dict[str, PlannedStep] = {}
    for step in workflow.steps:
        try:
            planned[step.id] = _plan_step(step, config, resolver)
        except InputErrors as many:
            errors.extend(many.errors)
        except InputError as one:
            errors.append(one)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return Plan(workflow, graph, planned)


def _plan_step(step: Step, config: Config, resolver: Resolver) -> PlannedStep:
    if step.kind != "llm":
        return PlannedStep(step)
    tool = None
    if step.tool is not None:
        tool = config.tools.get(step.tool)
        if tool is None:
            close = difflib.get_close_matches(step.tool, list(config.tools), n=1, cutoff=0.5)
            raise InputError(
                f"step {step.id!r} uses unknown tool {step.tool!r}",
                location=step.location,
                hint=f"did you mean {close[0]!r}?" if close else f"tools in {config.path}: {', '.join(sorted(config.tools)) or 'none'}",
            )
    text = step.prompt if step.prompt is not None else (tool.prompt if tool else None)
    if text is None:
        raise InputError(f"step {step.id!r} has no prompt: set prompt:, or give tool {step.tool!r} one", location=step.location)
    intent = Intent(
        step_id=step.id,
        tool=tool,
        backend=step.backend,
        model=step.model,
        model_key=step.model_key,
        text=text,
        select=step.select,
        location=step.location,
    )
    return PlannedStep(step, tool, resolver.resolve(intent))
