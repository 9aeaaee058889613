"""The live view of `dse run` on a terminal: one line per step, fitted to the width, with routing events above it.

Drawn with rich's Live display. `console.Progress` imports this module only when stderr is
a terminal, so piped runs never load it and `dse --help` loads no rich. rich redraws the step lines in
place (it counts the lines it drew; nothing here moves the cursor), and every line is laid
out here for the width the terminal has at that refresh, so none ever wraps: a wrapped line
is what made finished steps repeat and numbers run into each other at 80 columns.

Laying out a line: the step's mark, id and state always come first, then its parts, which
get room in the order that matters when it is short: time, `n/m done`, what went wrong,
where it ran, what it spent, streamed text. A number is shown whole or not at all; an
error, where it ran and streamed text are shortened with an ellipsis.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

from rich.cells import cell_len, get_character_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from .console import state, step_parts
from .workflow.results import RUNNING, StepResult

ELLIPSIS = "…"
MIN_CUT = 8
"""The fewest cells a shortened part keeps (ellipsis included): less says nothing."""
GAP = "  "
REFRESH_PER_SECOND = 4
"""How often running steps' elapsed time ticks."""
_STYLES = {"ok": "green", "XX": "bold red", "!!": "yellow", "..": "cyan", "--": "dim", "  ": "dim"}


@dataclass(frozen=True)
class Part:
    """One thing a step line says; `rank` orders who gets room first (lower first), whatever its place on the line.

    `cuttable` text may be shortened (keeping its end when `keep_end`); a number may not.
    `shorter` says less of the same, longest first: the first that fits is used where `text` does
    not, and the last is shortened where none does.
    """

    text: str
    rank: int
    cuttable: bool = False
    keep_end: bool = False
    shorter: tuple[str, ...] = ()


def cut(text: str, cells: int, *, keep_end: bool = False) -> str:
    """`text` in at most `cells` terminal cells, an ellipsis marking what was left out (at the start when `keep_end`)."""
    if cell_len(text) <= cells:
        return text
    if cells <= 0:
        return ""
    kept: list[str] = []
    room = cells - 1
    for char in reversed(text) if keep_end else text:
        size = get_character_cell_size(char)
        if size > room:
            break
        kept.append(char)
        room -= size
    body = "".join(reversed(kept)) if keep_end else "".join(kept)
    return ELLIPSIS + body if keep_end else body + ELLIPSIS


def fit(head: str, parts: Sequence[Part], width: int) -> str:
    """The head and what fits of `parts` in `width` cells, two spaces apart, in their order.

    Room goes by rank. A number that does not fit is left out (a smaller one of a later rank
    may still come in). A cuttable part takes what it needs of the room, less the least each
    later cuttable part needs (`MIN_CUT` cells, or its length if shorter), so that an error
    still shows beside a long list of endpoints.
    """
    head = cut(head, width)
    room = width - cell_len(head)
    order = sorted(range(len(parts)), key=lambda i: parts[i].rank)
    least = [min(cell_len(part.text), MIN_CUT) if part.cuttable else cell_len(part.text) for part in parts]
    shown: dict[int, str] = {}
    for n, i in enumerate(order):
        part = parts[i]
        text, size = part.text, cell_len(part.text)
        if part.cuttable:
            later = sum(len(GAP) + least[j] for j in order[n + 1 :] if parts[j].cuttable)
            available = room - len(GAP) - later
            texts = (part.text, *part.shorter)
            text = next((said for said in texts if cell_len(said) <= available), texts[-1])
            size = min(cell_len(text), available)
        if size >= least[i] > 0 and len(GAP) + size <= room:
            shown[i] = cut(text, size, keep_end=part.keep_end)
            room -= len(GAP) + size
    return GAP.join([head, *(shown[i] for i in sorted(shown))])


def head(result: StepResult, id_width: int, state_width: int) -> str:
    """`[..] id  state`: the mark, the id padded (or shortened) to its column, the state padded to its column."""
    mark, word = state(result)
    name = cut(result.id, id_width)
    return f"[{mark}] {name}{' ' * (id_width - cell_len(name))} {word:<{state_width}}"


def short_url(url: str) -> str:
    """An endpoint as a narrow line names it: `host:port` (what tells replicas apart), or the text as it is."""
    return urlsplit(url).netloc or url


def parts_of(result: StepResult, *, now: float, tail: str = "") -> list[Part]:
    """A step's parts in line order, ranked: its time, `n/m done`, what went wrong, where it ran, the rest, streamed text.

    `now` (epoch seconds, as `started_at`) ticks a running step's time.
    """
    named = dict(step_parts(result))
    seconds = named.pop("seconds", None)
    out: list[Part] = []
    if result.status == RUNNING and result.started_at is not None:
        out.append(Part(f"{max(now - result.started_at, 0.0):.1f}s", 0))
    elif seconds is not None:
        out.append(Part(seconds, 0))
    if named.pop("items", None) is not None:
        out.append(Part(f"{result.items_done}/{result.items_total} done", 1))
    if named.pop("where", None) is not None:
        model = f"{result.backend}/{result.model}"
        urls = [short_url(url) for url in result.endpoints or ([result.endpoint] if result.endpoint else [])]
        shorter = ((f"{model} @ {urls[0]} +{len(urls) - 1}",) if len(urls) > 1 else ()) + ((model,) if urls else ())
        out.append(Part(f"{model} @ {', '.join(urls)}" if urls else model, 3, cuttable=True, shorter=shorter))
    for name, text in named.items():
        out.append(Part(text, 2 if name == "error" else 4, cuttable=name in ("error", "cut", "reused")))
    if tail and result.status == RUNNING:
        out.append(Part(f"| {tail}", 5, cuttable=True, keep_end=True))
    return out


def step_row(result: StepResult, width: int, *, now: float, id_width: int, state_width: int = 8, tail: str = "") -> str:
    """The one line a step gets at `width` cells: never wider, whatever the step holds."""
    return fit(head(result, id_width, state_width), parts_of(result, now=now, tail=tail), width)


def id_column(ids: Sequence[str], width: int) -> int:
    """The id column: as wide as the longest id, but never more than a quarter of the line (and at least 6 cells)."""
    return max(1, min(max(map(cell_len, ids), default=1), max(6, width // 4)))


class LiveView:
    """The step lines, redrawn in place by rich; run and event lines printed above them, each cut to one line."""

    def __init__(self, rows: Sequence[StepResult], stream: IO[str], *, clock: Callable[[], float] = time.time) -> None:
        self.rows = {row.id: row for row in rows}
        self.tails: dict[str, str] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self.console = Console(file=stream, highlight=False, markup=False, emoji=False, soft_wrap=False)
        # Stray writes to this process's stderr (a library's warning) go above the step lines instead of through them.
        self.live = Live(
            self, console=self.console, refresh_per_second=REFRESH_PER_SECOND, redirect_stdout=False, redirect_stderr=stream is sys.stderr
        )

    def start(self, line: str) -> None:
        """Print the run's first line and start drawing the steps under it."""
        self.print(line)
        self.live.start(refresh=True)

    def print(self, line: str, style: str = "") -> None:
        """A line above the step lines, shortened to the width: it scrolls up as the run goes on."""
        self.console.print(Text(cut(line, self.console.width), style=style, no_wrap=True, overflow="ellipsis"))

    def step(self, result: StepResult) -> None:
        with self._lock:
            self.rows[result.id] = result
            if result.status != RUNNING:
                self.tails.pop(result.id, None)
        if self.live.is_started:
            self.live.refresh()

    def chunk(self, step_id: str, text: str) -> None:
        """Streamed text beside its running step; shown at the next tick, not redrawn per chunk."""
        with self._lock:
            self.tails[step_id] = (self.tails.get(step_id, "") + text).replace("\n", " ")[-200:]

    def asking(self, ask: Callable[[str], Awaitable[bool]]) -> Callable[[str], Awaitable[bool]]:
        """`ask` with the step lines taken down while the user reads the question and answers, and drawn again after."""

        async def asked(question: str) -> bool:
            with self._lock:
                hidden = self.rows
                self.rows = {}
            self.live.refresh()
            self.live.stop()
            try:
                return await ask(question)
            finally:
                with self._lock:
                    self.rows = hidden
                self.live.vertical_overflow = "ellipsis"
                self.live.start(refresh=True)

        return asked

    def close(self) -> None:
        """The last drawing of every step stays on the screen, once."""
        self.live.stop()

    def lines(self, width: int) -> Iterator[Text]:
        with self._lock:
            rows, tails = list(self.rows.values()), dict(self.tails)
        if not rows:
            return
        now = self._clock()
        id_width = id_column([row.id for row in rows], width)
        state_width = max(len(RUNNING), *(len(state(row)[1]) for row in rows))  # steady as steps finish
        for row in rows:
            line = step_row(row, width, now=now, id_width=id_width, state_width=state_width, tail=tails.get(row.id, ""))
            text = Text(line, no_wrap=True, overflow="ellipsis", end="\n")
            mark = state(row)[0]
            text.stylize(_STYLES.get(mark, ""), 0, len(mark) + 2)
            yield text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width)
