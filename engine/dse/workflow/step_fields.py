"""The static check that a template reads only fields a step record has: `steps.<id>.output`, not `.outptu`.

Jinja renders an unknown attribute as an empty string, so a typo would quietly send an empty
prompt to a model; `dse validate` finds it instead. The fields are whatever `StepResult.context`
exposes, read from there so the check and the scheduler cannot disagree.
"""

from __future__ import annotations

import difflib
from functools import cache

from jinja2 import nodes

from ..errors import InputError, Location
from .results import StepResult


@cache
def step_fields() -> tuple[str, ...]:
    """The names a template may read from `steps.<id>`."""
    return tuple(StepResult(id="", kind="").context())


def check_step_fields(tree: nodes.Template, where: Location) -> None:
    """Raise a located InputError for the first `steps.<id>.<field>` (or `steps[...][...]`) that is no field."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))
        step = _step_id(node.node)
        name = _key(node)
        if step is None or name is None or name in step_fields():
            continue
        close = difflib.get_close_matches(name, step_fields(), n=1, cutoff=0.5)
        raise InputError(
            f"template reads steps.{step}.{name}, which a step does not have",
            location=where,
            hint=f"did you mean {close[0]!r}?" if close else f"a step has: {', '.join(step_fields())}",
        )


def _step_id(node: nodes.Node) -> str | None:
    """The id when `node` is `steps.<id>` or `steps['<id>']`."""
    if isinstance(node, (nodes.Getattr, nodes.Getitem)) and isinstance(node.node, nodes.Name) and node.node.name == "steps":
        return _key(node)
    return None


def _key(node: nodes.Node) -> str | None:
    """The attribute or constant string subscript that `node` reads, if it is one."""
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None
