"""A workflow bound to a config: every step checked and every model call resolved, nothing run.

`dse plan` prints this; `dse run` executes exactly this, so what the plan says is what happens.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError

import networkx as nx

from ..config.model import Config, ToolConfig
from ..errors import InputError, InputErrors, Location
from ..routing.resolver import Intent, Resolution, Resolver
from .dag import build_dag
from . import templating
from .model import Step, Workflow, load_workflow
from .step_fields import check_step_fields


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    tool: ToolConfig | None = None
    resolution: Resolution | None = None
    subplan: Plan | None = None

    @property
    def prompt_template(self) -> str | None:
        """The user message template, with any directive phrase already removed."""
        return self.resolution.text if self.resolution else None


@dataclass(frozen=True)
class Plan:
    workflow: Workflow
    graph: nx.DiGraph[str]
    steps: dict[str, PlannedStep]

    @property
    def order(self) -> list[str]:
        """A stable topological order: file order among steps that are ready together."""
        position = {s.id: i for i, s in enumerate(self.workflow.steps)}
        return list(nx.lexicographical_topological_sort(self.graph, key=position.__getitem__))

    @property
    def warnings(self) -> list[str]:
        return [w for p in self.steps.values() if p.resolution for w in p.resolution.warnings]


def build_plan(workflow: Workflow, config: Config, resolver: Resolver, *, parents: tuple[str, ...] = ()) -> Plan:
    """Check the graph, the tools, the templates and sub-workflows, resolve every model call; all errors at once."""
    graph = build_dag(workflow)
    errors: list[InputError] = []
    planned: dict[str, PlannedStep] = {}
    for step in workflow.steps:
        try:
            _check_templates(step, workflow, config)
            planned[step.id] = _plan_step(step, workflow, config, resolver, parents)
        except InputErrors as many:
            errors.extend(many.errors)
        except InputError as one:
            errors.append(one)
    for name, template in workflow.outputs.items():
        try:
            _check(template, workflow, {"inputs", "steps", "env"}, workflow.source.locate(("outputs", name)))
        except InputError as one:
            errors.append(one)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return Plan(workflow, graph, planned)


def _plan_step(step: Step, workflow: Workflow, config: Config, resolver: Resolver, parents: tuple[str, ...]) -> PlannedStep:
    if step.kind == "workflow":
        path = (Path(workflow.path).parent / (step.workflow or "")).resolve()
        if str(path) in parents or str(Path(workflow.path).resolve()) == str(path):
            raise InputError(f"step {step.id!r}: sub-workflow {step.workflow} includes itself", location=step.location)
        if not path.is_file():  # pointed at from the step's line: the missing file has no line of its own
            raise InputError(f"step {step.id!r}: sub-workflow file not found: {path}", location=step.where("workflow"))
        child = load_workflow(path)
        unknown = sorted(set(step.with_) - set(child.inputs))
        if unknown:
            raise InputError(
                f"step {step.id!r} passes unknown input {unknown[0]!r} to {step.workflow}",
                location=step.location,
                hint=f"its inputs: {', '.join(child.inputs) or 'none'}",
            )
        return PlannedStep(step, subplan=build_plan(child, config, resolver, parents=(*parents, str(Path(workflow.path).resolve()))))
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
        task=step.task,
        location=step.location,
        temperature=step.temperature,
        max_tokens=step.max_tokens,
        cache=step.cache,
    )
    return PlannedStep(step, tool, resolver.resolve(intent))


_ROOTS = {"inputs", "steps", "env"}


def _check_templates(step: Step, workflow: Workflow, config: Config) -> None:
    """Template typos are found before anything runs: syntax, unknown names, undeclared inputs."""
    roots = set(_ROOTS) | ({"item", "index"} if step.for_each is not None else set())
    prompt_roots = roots | set(step.with_)
    tool = config.tools.get(step.tool) if step.tool else None
    prompt_where = step.where("prompt") if step.prompt is not None else (tool.location if tool else None)
    system_where = step.where("system") if step.system is not None else (tool.location if tool else None)
    texts: list[tuple[object, set[str], Location | None]] = [
        (step.when, roots, step.where("when")),
        (step.for_each, _ROOTS, step.where("for_each")),
        (list(step.run or ()), roots, step.where("run")),
        (dict(step.with_), roots, step.where("with")),
        (dict(step.env), roots, step.where("env")),
        (step.cwd, roots, step.where("cwd")),
        (step.prompt if step.prompt is not None else (tool.prompt if tool else None), prompt_roots, prompt_where),
        (step.system if step.system is not None else (tool.system if tool else None), prompt_roots, system_where),
    ]
    for value, allowed, where in texts:
        for text in templating.strings_in(value):
            _check(text, workflow, allowed, where or step.location, expression=value is step.when)


def _check(text: str, workflow: Workflow, allowed: set[str], where: Location, *, expression: bool = False) -> None:
    source = "{{ " + text + " }}" if expression else text
    try:
        tree = templating.environment().parse(source)
    except TemplateSyntaxError as exc:
        raise InputError(f"template syntax error: {exc.message}", location=where) from None
    except TemplateError as exc:  # too deeply nested, or a number too long to read
        raise InputError(f"template error: {exc}", location=where) from None
    unknown = sorted(meta.find_undeclared_variables(tree) - allowed)
    if unknown:
        raise InputError(
            f"template uses unknown name {unknown[0]!r}",
            location=where,
            hint=f"available here: {', '.join(sorted(allowed))}",
        )
    check_step_fields(tree, where)
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "inputs" and node.attr not in workflow.inputs:
            close = difflib.get_close_matches(node.attr, list(workflow.inputs), n=1, cutoff=0.5)
            raise InputError(
                f"template uses undeclared input {node.attr!r}",
                location=where,
                hint=f"did you mean {close[0]!r}?" if close else "declare it under inputs:",
            )
        if isinstance(node.node, nodes.Name) and node.node.name == "env" and node.attr not in workflow.env:
            raise InputError(
                f"template reads env.{node.attr}, which the workflow does not declare",
                location=where,
                hint=f"add {node.attr} to the workflow's env: list (only declared variables are visible)",
            )
    _vet(tree, where)


def _vet(tree: nodes.Template, where: Location) -> None:
    """What would fail at run time whatever the inputs: `__` names, constants over the limits, Python's nesting limits."""
    try:
        templating.check(tree)
    except TemplateSyntaxError as exc:
        raise InputError(f"template syntax error: {exc.message}", location=where) from None
    except SecurityError as exc:
        raise InputError(f"template error: {exc}", location=where, hint="a template reads data, not Python internals") from None
    except TemplateError as exc:
        raise InputError(f"template error: {exc}", location=where) from None

