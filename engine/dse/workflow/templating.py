"""Jinja2 templating for workflows, sandboxed, strict and bounded.

Sandboxed because workflow files are shared and run on other people's machines; strict
because a misspelt variable that renders as an empty string sends a model a broken prompt
without anyone noticing. Values produced by models or commands are passed in as data and
are never compiled, so an output containing `{{ 7*7 }}` stays exactly that text.

Bounded because a template is a program: every render runs under a `Budget` of work, size and
time (see `template_limits` and `template_env`), and `run_bounded` runs rendering in a worker
thread so that a step's `timeout:` and Ctrl-C act on a runaway template instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from typing import Any, TypeVar

from jinja2 import Template, TemplateError, nodes
from jinja2.environment import TemplateExpression
from jinja2.runtime import Undefined

from ..errors import InputError, Location
from .template_env import BoundedEnvironment, bounded, compiled, installed_budget, vet
from .template_limits import LIMITS, Budget, Limits

T = TypeVar("T")
A = TypeVar("A")


@lru_cache(maxsize=1)
def environment() -> BoundedEnvironment:
    return BoundedEnvironment()


def check(tree: nodes.Template) -> None:
    """Static checks for `dse validate` on a tree from `environment().parse`; raises TemplateError."""
    vet(tree, environment())


def render(template: str, context: Mapping[str, Any], *, where: Location | None = None) -> str:
    """Render one template string; any template error names the step's file and line."""
    if "{" not in template:
        return template
    with _located(where, "template error"), _budget() as budget:
        parts, total = [], 0
        for part in _template(template).generate(**context):
            total += len(part)
            budget.require(total, "the rendered text")
            parts.append(part)
        return "".join(parts)


@lru_cache(maxsize=512)
def _template(source: str) -> Template:
    """Compiled once per text: a `for_each` step renders the same prompt for every item."""
    return compiled(lambda: environment().from_string(source))


@lru_cache(maxsize=512)
def _expression(source: str) -> TemplateExpression:
    """Compiled once per text, like `_template`."""
    environment().parse("{{ " + source + " }}")  # the nesting and number checks, which compile_expression skips
    return compiled(lambda: environment().compile_expression(source, undefined_to_none=False))


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
    """Evaluate a bare expression such as a `when:` condition; a lazy result is made into a list here, under the budget."""
    with _located(where, f"expression error in {expression!r}"), _budget() as budget:
        value = _expression(expression)(**context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        if isinstance(value, Iterator):
            value = list(value)
        return budget.charge(value, "the value")


async def run_bounded(
    work: Callable[[], T], *, seconds: float | None = None, where: Location | None = None, limits: Limits = LIMITS
) -> T:
    """Run template work in a worker thread under one budget, so a step's timeout and Ctrl-C act on it.

    On the event loop a runaway template would block every other step, the step's timeout and
    the SIGINT handler alike. Whatever ends the wait (the deadline, a cancellation) trips the
    budget, so the worker stops at its next operation instead of burning CPU for nobody.
    """
    budget = Budget(limits, seconds)

    def in_worker() -> T:
        with bounded(budget):
            return work()

    try:
        return await asyncio.wait_for(asyncio.to_thread(in_worker), budget.seconds)
    except asyncio.TimeoutError:
        raise InputError(f"template error: rendering timed out after {budget.seconds:g}s", location=where) from None
    finally:
        budget.cancel()


async def run_bounded_each(
    work: Callable[[A], T], items: Sequence[A], *, seconds: float | None = None, limits: Limits = LIMITS
) -> list[T]:
    """`work` for each item in one worker thread, each under a budget of its own.

    A fan-out pays one thread hop instead of one per item, and a long list cannot exhaust a
    budget meant for one render. Whatever ends the wait trips the budget of the render under way.
    """
    current: list[Budget] = []
    stopped = threading.Event()

    def in_worker() -> list[T]:
        done = []
        for item in items:
            budget = Budget(limits, seconds)
            current[:] = [budget]
            if stopped.is_set():
                budget.cancel()
            with bounded(budget):
                done.append(work(item))
        return done

    try:
        return await asyncio.to_thread(in_worker)
    finally:
        stopped.set()
        for budget in current:
            budget.cancel()


def _budget() -> AbstractContextManager[Budget]:
    """The budget installed by `run_bounded` or a caller, else a fresh one for this render alone."""
    installed = installed_budget()
    return nullcontext(installed) if installed is not None else bounded(Budget())


@contextmanager
def _located(where: Location | None, what: str) -> Iterator[None]:
    """Whatever a template does wrong becomes one located input error, never a traceback.

    Besides Jinja's own errors, a template's operations raise ordinary Python exceptions
    (`1/0`, `'a'.index('b')`, a recursion too deep): they are the template's fault and are
    reported like any other template error.
    """
    try:
        yield
    except TemplateError as exc:
        raise InputError(f"{what}: {exc}", location=where) from None
    except RecursionError:
        raise InputError(f"{what}: it recurses or nests too deeply", location=where) from None
    except Exception as exc:
        raise InputError(f"{what}: {type(exc).__name__}: {exc}", location=where) from None


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
