"""The live view's line layout at any width, its plain-line twin when piped, and that only a terminal loads rich."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import pyte
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from dse.console import Progress, note_line, step_line
from dse.live import ELLIPSIS, GAP, LiveView, Part, cut, fit, id_column, step_row
from dse.routing.notes import BREAKER, FALLBACK, RATE_WAIT, REFUSED, RETRY, Note
from dse.workflow.results import StepResult

# Text as models and servers send it: wide (CJK, emoji) and combining characters included, no control characters.
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=120)
WIDTHS = st.integers(20, 300)


@settings(max_examples=300, deadline=None)
@given(text=TEXT, cells=st.integers(0, 150), keep_end=st.booleans())
def test_cut_fits_the_cells_and_marks_what_it_left_out(text: str, cells: int, keep_end: bool) -> None:
    shown = cut(text, cells, keep_end=keep_end)
    assert cell_len(shown) <= cells
    if cell_len(text) <= cells:
        assert shown == text
    elif cells:
        assert (shown.startswith(ELLIPSIS) if keep_end else shown.endswith(ELLIPSIS)), shown


@st.composite
def parts(draw: st.DrawFn) -> list[Part]:
    """Numbers as `<i:digits>` (so a partly shown one would be seen) and free text, in any ranks."""
    out = []
    for i in range(draw(st.integers(0, 8))):
        rank = draw(st.integers(0, 5))
        if draw(st.booleans()):
            out.append(Part(f"<{i}:{draw(st.integers(0, 10**9))}>", rank))
        else:
            text = draw(TEXT.filter(lambda t: "<" not in t and t.strip()))
            out.append(Part(text, rank, cuttable=True, keep_end=draw(st.booleans()), shorter=tuple(draw(st.lists(TEXT, max_size=2)))))
    return out


@settings(max_examples=400, deadline=None)
@given(head=TEXT, given_parts=parts(), width=WIDTHS)
def test_a_line_never_exceeds_its_width_and_shows_numbers_whole_in_order(head: str, given_parts: list[Part], width: int) -> None:
    line = fit(head, given_parts, width)
    assert cell_len(line) <= width
    assert line.startswith(cut(head, width))
    numbers = [(i, part.text) for i, part in enumerate(given_parts) if not part.cuttable]
    shown = [(i, text) for i, text in numbers if text in line]
    for i, text in numbers:
        assert text in line or f"<{i}:" not in line, f"{text} is shown whole or not at all: {line!r}"
    positions = [line.index(text) for _, text in shown]
    assert positions == sorted(positions), "parts keep their order on the line"
    if cell_len(head) + sum(len(GAP) + cell_len(part.text) for part in given_parts) <= width:
        visible = [part.text for part in given_parts if cell_len(part.text)]  # text of no width shows nothing anyway
        assert line == GAP.join([head, *visible]), "nothing is cut when everything fits"


STATUSES = ["waiting", "running", "done", "skipped", "failed"]


@st.composite
def steps(draw: st.DrawFn) -> StepResult:
    status = draw(st.sampled_from(STATUSES))
    llm = draw(st.booleans())
    fan = draw(st.booleans())
    total = draw(st.integers(1, 5000))
    return StepResult(
        id=draw(st.from_regex(r"[a-z][a-z0-9_]{0,40}", fullmatch=True)),
        kind="llm" if llm else "run",
        status=status,
        tolerated=status == "failed" and draw(st.booleans()),
        error=draw(st.one_of(st.none(), TEXT)) if status in ("failed", "skipped") else None,
        backend="main" if llm else None,
        model=draw(st.sampled_from(["big", "qwen2.5-coder-32b-instruct-q4_k_m"])) if llm else None,
        endpoints=[f"http://gpu-{n}.cluster.internal:{8000 + n}/v1" for n in range(draw(st.integers(0, 4)))] if llm else [],
        prompt_tokens=draw(st.integers(0, 10**7)),
        completion_tokens=draw(st.integers(0, 10**6)),
        seconds=draw(st.floats(0, 10**5)),
        items_done=draw(st.integers(0, total)) if fan else 0,
        items_total=total if fan else None,
        calls=draw(st.integers(0, 5000)),
        attempts=draw(st.integers(0, 9000)),
        cost=draw(st.one_of(st.none(), st.floats(0, 1000))),
        started_at=100.0 if status == "running" else None,
    )


@settings(max_examples=400, deadline=None)
@given(step=steps(), width=WIDTHS, tail=TEXT, elapsed=st.floats(0, 10**5))
def test_a_step_line_fits_every_width_and_leads_with_what_matters(step: StepResult, width: int, tail: str, elapsed: float) -> None:
    id_width = id_column([step.id, "other"], width)
    line = step_row(step, width, now=100.0 + elapsed, id_width=id_width, state_width=9, tail=tail)
    assert cell_len(line) <= width, line
    assert line.startswith("[") and "\n" not in line
    room = width - (5 + id_width + 1 + 9)
    shown = f"{(100.0 + elapsed) - 100.0:.1f}s"  # what the view computes, rounding included
    if step.status == "running" and room >= 2 + len(shown):
        assert f"  {shown}" in line, "a running step's time comes first"
    if step.items_total is not None and step.status == "running" and room >= 2 + len(shown) + 2 + len(f"{step.items_done}/{step.items_total} done"):
        assert f"  {step.items_done}/{step.items_total} done" in line, "then how many of the fan-out's items are done"


def summarize() -> StepResult:
    return StepResult(
        "summarize", "llm", status="done", backend="main", model="big", endpoints=["http://gpu-a:8000/v1", "http://gpu-b:8000/v1"],
        prompt_tokens=188, completion_tokens=8, seconds=1.22, calls=2, cost=0.0123,
    )


def test_a_narrow_line_drops_what_matters_least_and_names_every_endpoint_where_it_can() -> None:
    rows = {width: step_row(summarize(), width, now=0.0, id_width=9) for width in (40, 60, 80, 120)}
    assert rows[40] == "[ok] summarize done      1.22s  main/big"
    assert rows[60] == "[ok] summarize done      1.22s  main/big @ gpu-a:8000 +1"
    assert rows[80] == "[ok] summarize done      1.22s  main/big @ gpu-a:8000, gpu-b:8000  tokens 188+8"
    assert rows[120] == "[ok] summarize done      1.22s  main/big @ gpu-a:8000, gpu-b:8000  tokens 188+8  $0.0123  calls 2"
    failed = StepResult("lint", "run", status="failed", error="sh exited with code 2: trailing whitespace in calc.py", seconds=0.5)
    assert step_row(failed, 50, now=0.0, id_width=6) == "[XX] lint   failed    0.50s  - sh exited with cod…", "the error gets the room"


def test_the_plain_line_names_every_endpoint_a_step_used() -> None:
    assert "main/big @ http://gpu-a:8000/v1, http://gpu-b:8000/v1  tokens 188+8" in step_line(summarize())


NOTES = [
    (Note(RETRY, "main", "big", "http://gpu-a:8000/v1", "server error (HTTP 500): boom", 0.25, step_id="ask"),
     "  ask: retry in 0.25s - server error (HTTP 500): boom - main @ http://gpu-a:8000/v1"),
    (Note(FALLBACK, "main", "big", reason="cannot reach http://gpu-a:8000/v1", to="spare/small", step_id="ask"),
     "  ask: fallback main/big -> spare/small - cannot reach http://gpu-a:8000/v1"),
    (Note(BREAKER, "main", endpoint="http://gpu-a:8000/v1", reason="3 failures in a row", seconds=30, step_id="ask"),
     "  ask: breaker open on http://gpu-a:8000/v1 (main) for 30s - 3 failures in a row"),
    (Note(REFUSED, "main", "big", reason="budget: llm.budget.per_run is $0.08\nand $0.07 is spent", step_id="ask"),
     "  ask: refused a call to main/big - budget: llm.budget.per_run is $0.08 and $0.07 is spent"),
    (Note(RATE_WAIT, "main", "big", seconds=1.5, step_id="ask"), "  ask: waiting 1.5s for the rate limit of main"),
]


def test_each_note_is_one_line_that_says_what_happened_then_where_and_why() -> None:
    for note, line in NOTES:
        assert note_line(note) == line


def plan():
    from dse.runner import prepare

    root = Path(__file__).resolve().parents[2]
    return prepare(root / "workflows" / "review.yaml", root / "configs" / "config.yaml").plan


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


JOURNAL = types.SimpleNamespace(run_id="r1", directory=Path(".dse/runs/r1"))


def test_piped_progress_writes_one_plain_line_per_note_between_its_step_lines() -> None:
    piped = io.StringIO()
    progress = Progress(plan(), piped)
    progress.started(JOURNAL)
    progress.step(StepResult("changes", "run", status="running"))
    progress.chunk("changes", "partial")
    progress.note(NOTES[0][0])
    progress.step(StepResult("changes", "run", status="done", seconds=0.1))
    progress.close()
    assert piped.getvalue().splitlines() == [
        "run r1  (journal: .dse/runs/r1)",
        "[..] changes        running   run",
        "partial",
        NOTES[0][1],
        "[ok] changes        done      run  0.10s",
    ]


def test_on_a_terminal_each_step_is_drawn_once_and_notes_scroll_above_them(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    live = Terminal()
    progress = Progress(plan(), live)
    assert isinstance(progress.view, LiveView)
    progress.started(JOURNAL)
    for result in (StepResult("changes", "run", status="running"), StepResult("changes", "run", status="done", seconds=0.1)):
        progress.step(result)
    progress.note(NOTES[1][0])
    progress.chunk("triage", "trivial")
    progress.close()
    screen = pyte.Screen(60, 20)
    screen.set_mode(pyte.modes.LNM)  # a newline returns the carriage too, as a pty's output processing makes it
    pyte.Stream(screen).feed(live.getvalue())
    lines = [line.rstrip() for line in screen.display if line.strip()]
    assert lines[0] == "run r1  (journal: .dse/runs/r1)"
    assert lines[1] == cut(NOTES[1][1], 60)
    assert [line[5:].split()[0] for line in lines[2:]] == list(plan().order), "every step once, below the notes, in plan order"
    assert lines[2] == "[ok] changes done     0.10s  run"
    assert all(len(line) <= 60 for line in lines) and not any("trivial" in line for line in lines), "streamed text shows beside a running step only"
    assert "local/smollm2" in lines[3], "a waiting row already says where it will run"


def test_only_a_terminal_loads_the_live_view(write) -> None:
    """`dse --help` loads neither the view nor rich; a piped run does not load the view.

    (A run may still find rich in memory: httpx imports it for its own command line when it is installed.)
    """
    workflow = write("wf.yaml", "name: tiny\nsteps:\n  - id: a\n    run: [echo, hi]\n")
    probe = (
        "import contextlib, io, sys\nfrom dse.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n        main(sys.argv[1:])\n    except SystemExit:\n        pass\n"
        "print(sorted(name for name in ('rich', 'dse.live') if name in sys.modules))"
    )

    def loaded(*args: str) -> str:
        shown = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert shown.returncode == 0 and shown.stdout.strip(), (args, shown.stdout, shown.stderr)
        return shown.stdout.strip()

    assert loaded("--help") == "[]"
    assert "dse.live" not in loaded("run", str(workflow), "--state-dir", str(workflow.parent / ".dse"))
