"""Jinja2 templating for workflows, sandboxed and strict.

Sandboxed because workflow files are shared and run on other people's machines; strict
because a misspelt variable that renders as an empty string sends a model a broken prompt
without anyone noticing. Values produced by models or commands are passed in as data and
are never compiled, so an output containing `{{ 7*7 }}` stays exactly that text.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import InputError, Location


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render(template: str, context: Mapping[str, Any], *, where: Location | None = None) -> str:
    """Render one template string; any template error names the step's file and line."""
    if "{" not in template:
        return template
    try:
        return environment().from_string(template).render(**context)
    except TemplateError as exc:
        raise InputError(f"template error: {exc}", location=where) from None


def render_value(value: Any, context: Mapping[str, Any], *, where: Location | None = None) -> Any:
    """Render strings anywhere inside lists and mappings, leaving other values alone."""
    if isinstance(value, str):
        return render(value, context, where=where)
    if isinstance(value, list):
        return [render_value(v, context, where=where) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context, where=where) for k, v in value.items()}
    return value


def evaluate(expression: str, context: Mapping[str, Any], *, where: Location | None = None) -> Any:
    """Evaluate a bare expression such as a `when:` condition."""
    try:
        return environment().compile_expression(expression, undefined_to_none=False)(**context)
    except TemplateError as exc:
        raise InputError(f"expression error in {expression!r}: {exc}", location=where) from None


def step_references(*sources: Any) -> set[str]:
    """Step ids mentioned as `steps.<id>` or `steps['<id>']` in any template or expression.

    These become graph edges, so a user never has to repeat in `needs:` what a template already says.
    """
    found: set[str] = set()
    for text in strings_in(sources):
        if "steps" not in text:
            continue
        for candidate in (text, "{{ " + text + " }}"):
            try:
                tree = environment().parse(candidate)
            except TemplateError:
                continue
            for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
                if not (isinstance(node, (nodes.Getattr, nodes.Getitem)) and _is_steps(node.node)):
                    continue
                if isinstance(node, nodes.Getattr):
                    found.add(node.attr)
                elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                    found.add(node.arg.value)
    return found


def _is_steps(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "steps"


def strings_in(value: Any) -> list[str]:
    """Every string inside nested lists, tuples and mappings, in order: where templates can hide."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings_in(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    return []
