"""The Jinja environment behind workflow templates: the sandbox, with every operation paid for.

`SandboxedEnvironment` already routes attribute and item access, calls and (when asked)
arithmetic through overridable hooks; this subclass makes each hook charge the `Budget` of the
render in progress (see `template_limits`) and refuse operations whose result would be too
large. Two things the sandbox has no hook for are added by rewriting the syntax tree before it
is compiled: every `{% for %}` loop pays per iteration, and every operand of `~` is checked
before it is turned into text.

Jinja also evaluates constant expressions while compiling (`{{ 9**(9**9) }}` would never finish
compiling). Nothing here can be folded that way: the arithmetic operators are intercepted, and
filters, tests and `finalize` take the render context, both of which make Jinja leave the
expression for run time, where the budget applies. `vet` then does the folding itself, bounded,
so `dse validate` reports such a constant instead of hanging on it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.runtime import Context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from .template_limits import (
    CHARS_PER_UNIT,
    LIMITS,
    Budget,
    TemplateLimitError,
    check_binop,
    check_filter,
    check_integer,
    check_method,
    check_str_format,
)

T = TypeVar("T")

_CURRENT: ContextVar[Budget | None] = ContextVar("dse_template_budget", default=None)
_CUTS: ContextVar[list[int] | None] = ContextVar("dse_template_cuts", default=None)

#: Filters that may shorten a value; when one does, the render in progress is told (`noting_cuts`).
_CUTTING = frozenset({"truncate"})

#: Names of the two filters the tree rewriting inserts; a template cannot spell them.
_LOOP, _PIECE = "dse:loop", "dse:piece"

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "**": operator.pow,
    "*": operator.mul,
    "+": operator.add,
    "-": operator.sub,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
}
_UNOPS: dict[str, Callable[[Any], Any]] = {"+": operator.pos, "-": operator.neg}


def installed_budget() -> Budget | None:
    """The budget of the render in progress in this thread or task, if any."""
    return _CURRENT.get()


def current_budget() -> Budget:
    """The budget of the render in progress; a fresh one for the few lookups Jinja makes while compiling."""
    return _CURRENT.get() or Budget()


@contextmanager
def bounded(budget: Budget) -> Iterator[Budget]:
    """Charge every template operation in this block (in this thread or task) to `budget`."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


@contextmanager
def noting_cuts() -> Iterator[list[int]]:
    """Collect, for renders in this block (in this thread or task), the length of each value a
    `truncate` filter actually shortened: a step's record says which of its inputs lost text."""
    cuts: list[int] = []
    token = _CUTS.set(cuts)
    try:
        yield cuts
    finally:
        _CUTS.reset(token)


class BoundedEnvironment(SandboxedEnvironment):
    """Sandboxed, strict, and bounded: see the module docstring."""

    intercepted_binops = frozenset(_BINOPS)

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, optimized=False, finalize=_finalize
        )
        del self.globals["lipsum"]  # placeholder Latin, with a paragraph count nothing bounds
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters.update({_LOOP: _count_iterations, _PIECE: _checked_piece})
        self.tests = {name: _bounded_test(func) for name, func in self.tests.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.tick()
        check_binop(operator, left, right, budget.limits)
        return budget.charge(super().call_binop(context, operator, left, right), f"the result of {operator}")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.tick()
        if isinstance(getattr(__obj, "__self__", None), str) and __obj.__name__ == "join" and args and isinstance(args[0], Iterator):
            args = (budget.charge(list(args[0]), "the joined items"), *args[1:])  # measured before it is joined
        check_method(__obj, args, kwargs, budget.limits)
        return budget.charge(super().call(__context, __obj, *args, **kwargs), "the result of a call")

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current_budget().tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` through the sandbox's formatter, with its widths checked first."""
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        template: str = value.__self__

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            check_str_format(template, args, kwargs, current_budget().limits)
            return formatter(*args, **kwargs)

        return bounded_format

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parse, and refuse trees so deep that Jinja's recursive passes or Python's compiler would overflow.

        Brackets are counted on the tokens first: the lexer does not recurse, the parser does,
        and how deep it gets before `RecursionError` depends on the limit in force.
        """
        if _bracket_depth(self.lex(source, name, filename)) > LIMITS.max_nesting:
            raise TemplateLimitError(f"the template nests brackets more than {LIMITS.max_nesting} levels deep")
        try:
            tree = super()._parse(source, name, filename)
        except RecursionError:
            raise TemplateLimitError("the template nests too deeply to parse") from None
        except ValueError:
            raise TemplateLimitError("a number in the template has too many digits to read") from None
        _check_nesting(tree, LIMITS.max_nesting)
        return tree

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False) -> str:
        """Every compilation passes here, expressions included: the place to make loops and `~` pay."""
        _instrument(source)
        return super()._generate(source, name, filename, defer_init)


def _bracket_depth(tokens: Iterable[tuple[int, str, str]]) -> int:
    depth = deepest = 0
    for _, kind, value in tokens:
        if kind == "operator" and value in ("(", "[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif kind == "operator" and value in (")", "]", "}"):
            depth -= 1
    return deepest


def _passes(func: Callable[..., Any]) -> str | None:
    """Which Jinja object a filter or test takes first: 'context', 'eval_context', 'environment' or None."""
    passed = getattr(func, "jinja_pass_arg", None)
    return getattr(passed, "name", None)


def _leading(passes: str | None, context: Context) -> tuple[Any, ...]:
    if passes == "context":
        return (context,)
    if passes == "eval_context":
        return (context.eval_ctx,)
    if passes == "environment":
        return (context.environment,)
    return ()


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that pays for its input and output, and is refused when its result would be too large.

    Taking the context also stops Jinja from folding it at compile time (`Filter.as_const`
    gives up on context filters): `'x'|center(999999999)` is never computed while compiling.
    """
    passes = _passes(func)

    @pass_context
    def bounded_filter(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if name == "join" and isinstance(value, Iterator):
            value = budget.charge(list(value), "the joined items")
        budget.tick(1 + check_filter(name, value, args, kwargs, budget.limits) // CHARS_PER_UNIT)
        result = func(*_leading(passes, context), value, *args, **kwargs)
        if name in _CUTTING and result != value:
            cuts = _CUTS.get()
            if cuts is not None:
                cuts.append(len(value))
        return budget.charge(result, f"the result of |{name}")

    return bounded_filter


def _bounded_test(func: Any) -> Callable[..., Any]:
    """A test that counts as one operation; taking the context keeps it out of compile-time folding."""
    passes = _passes(func)

    @pass_context
    def bounded_test(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        current_budget().tick()
        return func(*_leading(passes, context), value, *args, **kwargs)

    return bounded_test


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every `{{ }}` is checked and paid for before it becomes text; taking the context keeps output out of folding."""
    return current_budget().charge(value, "a printed value")


@pass_context
def _count_iterations(context: Context, iterable: Any, weight: int) -> Iterator[Any]:
    """Wraps every loop's iterable: `weight` covers one iteration and the literal text its body writes."""
    budget = current_budget()
    for item in iterable:
        budget.tick(weight)
        yield item


@pass_context
def _checked_piece(context: Context, value: Any) -> Any:
    """Wraps each operand of `~`, which Jinja turns into text with no hook of its own."""
    return current_budget().charge(value, "a part of a ~ concatenation")


def _instrument(tree: nodes.Node) -> None:
    """Make loops pay per iteration and `~` operands pass a size check; idempotent, as trees may be compiled twice."""
    for loop in list(tree.find_all(nodes.For)):
        if not _inserted(loop.iter):
            text = sum(len(data.data) for part in loop.body for data in part.find_all(nodes.TemplateData))
            weight = nodes.Const(1 + text // CHARS_PER_UNIT, lineno=loop.lineno)
            loop.iter = nodes.Filter(loop.iter, _LOOP, [weight], [], None, None, lineno=loop.lineno)
    for concat in list(tree.find_all(nodes.Concat)):
        concat.nodes = [
            part if _inserted(part) else nodes.Filter(part, _PIECE, [], [], None, None, lineno=part.lineno)
            for part in concat.nodes
        ]


def _inserted(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Filter) and node.name in (_LOOP, _PIECE)


def _check_nesting(tree: nodes.Node, limit: int) -> None:
    """Iterative on purpose: Jinja's own passes recurse once per level and would overflow first."""
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            raise TemplateLimitError(f"the template nests more than {limit} levels deep (line {node.lineno})")
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())


def vet(tree: nodes.Template, environment: BoundedEnvironment) -> None:
    """What can be proven about a parsed template before it runs, so `dse validate` reports it.

    Names that start with `__` (the sandbox refuses them at run time), constant arithmetic
    whose result would exceed the limits, and compiling it: Python's own limits on nesting
    show up only there. Compiling rewrites the tree, so this comes last.
    """
    for node in tree.find_all(_READS):
        name = _internal_name(node)
        if name is not None and not any(_internal_name(inner) for inner in node.find_all(_READS)):
            raise SecurityError(f"the template reads {name!r} (line {node.lineno}); names that start with '__' are Python internals")
    folded: set[int] = set()
    for node in tree.find_all((nodes.BinExpr, nodes.UnaryExpr, nodes.Const)):
        if id(node) not in folded:
            try:
                _fold(node, environment, folded)
            except nodes.Impossible:
                continue
    compiled(lambda: environment.compile(tree))


def compiled(build: Callable[[], T]) -> T:
    """Python's compiler has limits of its own (nested blocks, parentheses); they are template errors too."""
    try:
        return build()
    except (SyntaxError, RecursionError, MemoryError):
        raise TemplateLimitError("the template nests too deeply for Python to compile") from None


_READS = (nodes.Getattr, nodes.Getitem, nodes.Filter)


def _internal_name(node: nodes.Node) -> str | None:
    """The `__name` that `x.__name`, `x['__name']` or `x|attr('__name')` reads, if it reads one.

    The check looks for the innermost such read, so `''.__class__.__mro__` is reported at `__class__`.
    """
    if isinstance(node, nodes.Getattr):
        name: object = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value
    elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const):
        name = node.args[0].value
    else:
        return None
    return name if isinstance(name, str) and name.startswith("__") else None


def _fold(node: nodes.Node, environment: BoundedEnvironment, folded: set[int]) -> Any:
    """The value of a constant expression, computed under the same checks as at run time; Impossible otherwise.

    Nodes it reaches go into `folded`, so `vet` folds each subtree once, not once per enclosing operator.
    """
    folded.add(id(node))
    if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
        left, right = _fold(node.left, environment, folded), _fold(node.right, environment, folded)
        check_binop(node.operator, left, right, LIMITS)
        return _apply(_BINOPS[node.operator], left, right)
    if isinstance(node, nodes.UnaryExpr) and node.operator in _UNOPS:
        return _apply(_UNOPS[node.operator], _fold(node.node, environment, folded))
    if isinstance(node, nodes.Const):
        check_integer(node.value, LIMITS)
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return node.as_const(nodes.EvalContext(environment))
    raise nodes.Impossible()


def _apply(function: Callable[..., Any], *operands: Any) -> Any:
    """An operation that fails (`1/0`) is not constant here; it fails at run time, with its step."""
    try:
        return function(*operands)
    except Exception:
        raise nodes.Impossible() from None
