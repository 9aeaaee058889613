"""How much one template render may do, and the checks that keep it there.

Jinja's sandbox keeps a template away from Python's internals, but not from asking for a
billion-character string, an integer with a billion digits or ten billion loop iterations;
any of these hangs `dse run` or exhausts memory, and a single such operation cannot be
interrupted once it has started. So every operation a template performs goes through a hook
(see `templating`) that consults the `Budget` of the render in progress: an operation that
can amplify its input (`*`, `**`, padding widths, `replace`, `join`, format widths, ...) is
refused *before* it runs when its result would be too large, and every operation is charged,
so that total work, the deadline and cancellation are checked while the template runs.
"""

from __future__ import annotations

import re
import string
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

from jinja2.exceptions import TemplateRuntimeError

T = TypeVar("T")

#: Characters of text that cost as much as one operation: handling 64 characters is charged
#: like one call, so a loop that copies large strings runs out of budget as fast as one that
#: does many small things.
CHARS_PER_UNIT = 64


@dataclass(frozen=True)
class Limits:
    """What one render (or one step's renders together) may do; the defaults fit any real prompt."""

    max_output: int = 4_000_000
    """Characters of rendered text, and of any single value a template builds (a list counts its items' text)."""
    max_work: int = 2_000_000
    """Work units: one per operation or loop iteration, plus one per `CHARS_PER_UNIT` characters handled."""
    max_int_bits: int = 4096
    """Bits of any integer a template computes (about 1200 decimal digits)."""
    max_nesting: int = 100
    """Levels of the template's syntax tree; deeper trees overflow Jinja's parser or Python's compiler."""
    seconds: float = 30.0
    """Wall-clock time for a render when the step sets no `timeout:`."""


LIMITS = Limits()


class TemplateLimitError(TemplateRuntimeError):
    """A template asked for more than its `Limits` allow, or its render was cancelled; it stopped."""


class Budget:
    """The running account of one render: work done, time left, and a cancel flag another thread may set."""

    def __init__(self, limits: Limits = LIMITS, seconds: float | None = None) -> None:
        self.limits = limits
        self.seconds = limits.seconds if seconds is None else seconds
        self.deadline = time.monotonic() + self.seconds
        self.work = 0
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Make the render stop at its next operation: called when nobody waits for it any more."""
        self._cancelled.set()

    def tick(self, units: int = 1) -> None:
        """Charge `units` of work; raise if the render was cancelled, is out of work or out of time."""
        self.work += units
        if self._cancelled.is_set():
            raise TemplateLimitError("rendering was cancelled")
        if self.work > self.limits.max_work:
            raise TemplateLimitError(f"the template did more than {self.limits.max_work} units of work (loops, calls, text handled)")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering timed out after {self.seconds:g}s")

    def require(self, size: int, what: str) -> None:
        """Refuse a value of `size` characters or items before it is built."""
        if size > self.limits.max_output:
            raise TemplateLimitError(f"{what} would be more than {self.limits.max_output} characters or items")

    def charge(self, value: T, what: str) -> T:
        """Charge for a value that was built (or is about to be printed), then check its size."""
        size = size_of(value, self.limits.max_output)
        self.work += size // CHARS_PER_UNIT  # built already: that work is done whatever the verdict
        self.require(size, what)
        self.tick()
        return value


_END = object()


def size_of(value: object, cap: int, *, indent: int = 0) -> int:
    """About how many characters `str(value)` would print, counting no further than just past `cap`.

    A shared item counts every time it appears, as printing it would; that is why the count
    stops at the cap instead of walking a list of lists that doubles at every level.
    `indent` adds that many characters per item per level, as `tojson(indent=...)` would.
    """
    if isinstance(value, (str, bytes, int, float)) or value is None:
        return _own_size(value)  # the common case, without the walk
    total = 0
    pending: list[Iterator[object]] = [iter((value,))]
    while pending and total <= cap:
        item = next(pending[-1], _END)
        if item is _END:
            pending.pop()
            continue
        depth = len(pending) - 1
        total += _own_size(item) + (2 + indent * depth if depth else 0)  # a separator, and the indent of its level
        children = _children(item)
        if children is not None:
            pending.append(children)
    return total


def _own_size(item: object) -> int:
    if isinstance(item, (str, bytes)):
        return len(item)
    if isinstance(item, int):
        return item.bit_length() // 3 + 1
    return 8


def _children(item: object) -> Iterator[object] | None:
    if isinstance(item, (str, bytes, int, float)):
        return None
    if isinstance(item, (list, tuple, set, frozenset)):
        return iter(item)
    if isinstance(item, Mapping):
        return chain.from_iterable(item.items())
    return None


def _length(value: object) -> int:
    """Items in a concrete container (0 for anything else, which is never asked for its length)."""
    return len(value) if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict, range)) else 0


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    """One argument of a call, given by position or by name."""
    if index < len(args):
        return args[index]
    return kwargs.get(name, default)


def _int(value: Any) -> int:
    """An argument that should be a count or a width; anything else is the callee's error to report."""
    return value if isinstance(value, int) else 0


def check_binop(operator: str, left: Any, right: Any, limits: Limits) -> None:
    """Refuse `left <operator> right` before Python computes it, when the result would be too large."""
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _require_bits(left.bit_length() * right, f"{left} ** {right}", limits)
    elif operator == "*" and isinstance(left, int) and isinstance(right, int):
        _require_bits(left.bit_length() + right.bit_length(), "the product", limits)
    elif operator == "*" and (isinstance(left, int) or isinstance(right, int)):
        sequence, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(sequence, (str, bytes, list, tuple)):
            _require(size_of(sequence, limits.max_output) * max(times, 0), f"repeating a value {times} times", limits)
    elif operator in ("+", "-") and isinstance(left, int) and isinstance(right, int):
        _require_bits(max(left.bit_length(), right.bit_length()) + 1, "the sum", limits)
    elif operator == "+" and isinstance(left, (str, bytes, list, tuple)):
        _require(size_of(left, limits.max_output) + size_of(right, limits.max_output), "the concatenation", limits)
    elif operator == "%" and isinstance(left, str):
        check_percent_format(left, right, limits)


def check_integer(value: Any, limits: Limits) -> None:
    """An integer written out in a template is held to the same limit as one computed."""
    if isinstance(value, int):
        _require_bits(value.bit_length(), "an integer literal", limits)


def _require_bits(bits: int, what: str, limits: Limits) -> None:
    if bits > limits.max_int_bits:
        raise TemplateLimitError(f"{what} would have about {bits} bits; integers in templates are limited to {limits.max_int_bits}")


def _require(size: int, what: str, limits: Limits) -> None:
    if size > limits.max_output:
        raise TemplateLimitError(f"{what} would be more than {limits.max_output} characters or items")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(fmt: str, args: Any, limits: Limits) -> None:
    """`'%999999999d' % 1`: a field width is a size the result will have, so it is checked first."""
    widths = [m for spec in _PERCENT_SPEC.finditer(fmt) for m in spec.groups() if m]
    values = list(args.values()) if isinstance(args, Mapping) else list(args) if isinstance(args, tuple) else [args]
    _check_widths(fmt, widths, values, limits)


def check_str_format(fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any], limits: Limits) -> None:
    """`'{:>999999999}'.format(1)`: the same for `str.format`, whose widths may also come from arguments."""
    try:
        specs = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
    except ValueError:
        return  # malformed: str.format reports it
    widths = [m for spec in specs for m in re.findall(r"\d+|\{", spec)]
    _check_widths(fmt, widths, [*args, *kwargs.values()], limits)


def _check_widths(fmt: str, widths: list[str], values: list[Any], limits: Limits) -> None:
    """Widths written in the format, or taken from the arguments (`*`, `{}`), plus the arguments' own text."""
    values = [v for value in values for v in (value.values() if isinstance(value, Mapping) else (value,))]
    from_arguments = any(w in ("*", "{") for w in widths)
    numbers = [int(w) for w in widths if w.isdigit()] + [_int(v) for v in values if from_arguments]
    text = sum(size_of(v, limits.max_output) for v in values)
    _require(len(fmt) + sum(numbers) + text, "the formatted string", limits)


def check_method(method: Any, args: Sequence[Any], kwargs: Mapping[str, Any], limits: Limits) -> None:
    """Refuse a call to a string or container method whose result would dwarf its input."""
    receiver, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if isinstance(receiver, (str, bytes)):
        _require(_text_method_size(receiver, name, args, kwargs, limits), f"the result of .{name}()", limits)
    elif isinstance(receiver, (list, set, dict)) and name in ("extend", "update") and args:
        _require(len(receiver) + _length(args[0]), f"the result of .{name}()", limits)


def _text_method_size(text: str | bytes, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], limits: Limits) -> int:
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(text), _int(_arg(args, kwargs, 0, "width")))
    if name == "expandtabs":
        tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
        return len(text) + tabs * _int(_arg(args, kwargs, 0, "tabsize", 8))
    if name == "replace":
        return _replace_size(text, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count"))
    if name == "join" and args:
        return _join_size(args[0], len(text), limits.max_output)
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        return len(text) * max(longest, 1)
    return len(text)


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """Text replacement counted exactly; bytes (rare in a template) as if every position matched."""
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return _length(text) + (_length(text) + 1) * _length(new)
    found = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _join_size(items: Any, separator: int, cap: int) -> int:
    """The joined text of a concrete sequence (an iterator is made into a list before it gets here)."""
    count = _length(items)
    return sum(size_of(item, cap) for item in items) + count * separator if count else 0


#: Filters that turn their whole input into text: their result is about as large as `str(value)`.
_TEXT_FILTERS = frozenset(
    "capitalize e escape forceescape lower upper title trim striptags string safe urlencode wordcount xmlattr".split()
)


def check_filter(name: str, value: Any, args: Sequence[Any], kwargs: Mapping[str, Any], limits: Limits) -> int:
    """Refuse a filter call whose result would be too large; return the size of the input it will handle.

    Only filters that turn their input into text, or that can amplify it, measure it in full:
    `|length` or `|first` on a large list costs one operation, not a walk over the list.
    """
    if name == "format" and isinstance(value, str):
        check_percent_format(value, kwargs or tuple(args), limits)
        return len(value)
    if name not in _TEXT_FILTERS and name not in _AMPLIFYING_FILTERS:
        return _length(value)
    size = size_of(value, limits.max_output)
    estimate = size if name in _TEXT_FILTERS else _filter_size(name, value, size, args, kwargs, limits.max_output)
    _require(estimate, f"the result of |{name}", limits)
    return size


_AMPLIFYING_FILTERS = frozenset("center indent wordwrap replace join batch slice tojson pprint urlize".split())


def _filter_size(name: str, value: Any, size: int, args: Sequence[Any], kwargs: Mapping[str, Any], cap: int) -> int:
    """How large the result of one of the `_AMPLIFYING_FILTERS` will be."""
    if name == "center":
        return max(size, _int(_arg(args, kwargs, 0, "width", 80)))
    if name == "indent":
        width = _arg(args, kwargs, 0, "width", 4)
        return size + (_lines(value, size) + 1) * (len(width) if isinstance(width, str) else _int(width))
    if name == "wordwrap":
        wrap = _arg(args, kwargs, 2, "wrapstring") or "\n"
        return size + (size + 1) * (len(wrap) if isinstance(wrap, str) else 1)
    if name == "replace":
        return _replace_size(value, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count"))
    if name == "join":
        separator = _arg(args, kwargs, 0, "d", "")
        return _join_size(value, len(separator) if isinstance(separator, str) else 8, cap)
    if name in ("batch", "slice"):
        return _length(value) + _int(_arg(args, kwargs, 0, "linecount" if name == "batch" else "slices"))
    if name in ("tojson", "pprint"):
        return size_of(value, cap, indent=_int(_arg(args, kwargs, 0, "indent")) if name == "tojson" else 1)
    extra = sum(len(_arg(args, kwargs, i, key) or "") for i, key in ((2, "target"), (3, "rel")))
    return 3 * size + (size // 4 + 1) * (extra + 40)  # urlize: each link repeats its text in a tag


def _lines(value: Any, size: int) -> int:
    return value.count("\n") + 1 if isinstance(value, str) else size + 1
