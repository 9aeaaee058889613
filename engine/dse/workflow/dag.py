"""The dependency graph of a workflow, checked before anything runs.

Edges come from `needs:` and from every `steps.<id>` a step's templates mention, so the graph
is what the workflow actually uses rather than what its author remembered to declare.
"""

from __future__ import annotations

import difflib

import networkx as nx

from ..errors import InputError, InputErrors
from .model import Step, Workflow
from .templating import step_references


def dependencies(step: Step) -> set[str]:
    """Everything a step waits for: declared `needs` plus template references."""
    texts = [step.prompt, step.system, step.when, step.for_each, list(step.run or ()), dict(step.with_), dict(step.env)]
    return set(step.needs) | step_references(*[t for t in texts if t])


def build_dag(workflow: Workflow) -> nx.DiGraph[str]:
    """A DAG with an edge dependency -> dependant; unknown ids and cycles are located InputErrors."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    ids = [s.id for s in workflow.steps]
    errors: list[InputError] = []
    for step in workflow.steps:
        graph.add_node(step.id)
    for step in workflow.steps:
        for dep in sorted(dependencies(step)):
            if dep not in graph:
                close = difflib.get_close_matches(dep, ids, n=1, cutoff=0.5)
                errors.append(
                    InputError(
                        f"step {step.id!r} refers to unknown step {dep!r}",
                        location=step.location,
                        hint=f"did you mean {close[0]!r}?" if close else f"steps are: {', '.join(ids)}",
                    )
                )
            elif dep == step.id:
                errors.append(InputError(f"step {step.id!r} depends on itself", location=step.location))
            else:
                graph.add_edge(dep, step.id)
    for name, template in workflow.outputs.items():
        for dep in step_references(template):
            if dep not in graph:
                errors.append(
                    InputError(f"output {name!r} refers to unknown step {dep!r}", location=workflow.source.locate(("outputs", name)))
                )
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
    raise InputError(f"dependency cycle: {path}", location=workflow.step(cycle[0][0]).location)
