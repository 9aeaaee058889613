"""The live view of `dse run` on a real terminal, read back through a terminal emulator, at 40, 80 and 200 columns.

`python -m dse run` gets a pty of the given size as its stderr (and stdout), against two stub
servers: a fan-out of four items over two endpoints of one server (the fourth held until the
screen shows `3/4 done` and its elapsed time ticking), a call retried after a 500, a call that
falls back to the second backend after the first keeps answering 503 (which also opens the
breakers), and a command whose failure `continue_on_error` tolerates. Everything the process
writes is fed to pyte twice: at the real width, which is what the user sees (each step once,
the events visible), and 300 columns wider, where a line that would have wrapped shows as
longer than the terminal.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from fcntl import ioctl
from pathlib import Path

import pyte
import pytest
from stubs import Received, Reply, StubServer, openai_chat, openai_error

ROWS = 60
CHAT = "/v1/chat/completions"
WORKFLOW = """name: watched
steps:
  - id: fan
    for_each: [1, 2, 3, 4]
    prompt: 'item {{ item }}'
  - id: flaky
    prompt: flaky
    retry: {attempts: 3, backoff: 0.2}
  - id: moved
    needs: [fan, flaky]
    prompt: moved
    retry: {attempts: 4, backoff: 0.01}
  - id: lint
    run: [sh, -c, 'echo trailing whitespace in calc.py; exit 2']
    continue_on_error: true
outputs: {moved: '{{ steps.moved.output }}'}
"""
STEPS = ("fan", "flaky", "moved", "lint")


class Terminal:
    """A process on a pty of `columns` x ROWS, its output fed to an emulator of that size and to one 300 columns wider."""

    def __init__(self, command: list[str], cwd: Path, columns: int) -> None:
        self.columns = columns
        self.screen, self.wide = pyte.Screen(columns, ROWS), pyte.Screen(columns + 300, ROWS)
        self.streams = [pyte.ByteStream(self.screen), pyte.ByteStream(self.wide)]
        master, slave = os.openpty()
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))
        env = {**os.environ, "COLUMNS": str(columns), "LINES": str(ROWS), "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.master = master
        self.open = True

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def read_until(self, done: Callable[[], bool], timeout: float = 60) -> bool:
        """Feed the emulators until `done()` holds or the process closes the terminal."""
        deadline = time.monotonic() + timeout
        while self.open and not done() and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: every holder of the terminal has closed it
                    chunk = b""
                if not chunk:
                    self.open = False
                for stream in self.streams:
                    stream.feed(chunk)
        return done()

    def close(self) -> int:
        self.read_until(lambda: False)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.master)


def row_of(lines: list[str], step_id: str) -> list[str]:
    """The step lines of `step_id` on a screen: `[xx] id ` at the start of a line."""
    return [line for line in lines if re.match(rf"\[..\] {step_id} ", line)]


def elapsed(lines: list[str], step_id: str) -> str | None:
    """The ticking time of a running step: `[..] fan  running  1.3s`."""
    rows = row_of(lines, step_id)
    found = re.match(rf"\[\.\.\] {step_id} +running +(\d+\.\ds)", rows[0]) if rows else None
    return found.group(1) if found else None


@pytest.fixture
def servers():
    with StubServer() as primary, StubServer() as spare:
        yield primary, spare


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_the_live_view_holds_at_any_width(columns: int, servers, write, tmp_path: Path) -> None:
    primary, spare = servers
    held = threading.Event()
    flaky = itertools.count()

    def answer(request: Received) -> Reply:
        prompt = request.json["messages"][-1]["content"]
        if prompt == "item 4":
            held.wait(60)
        if prompt == "flaky" and next(flaky) == 0:
            return openai_error(500, "the primary hiccuped", kind="server_error")
        if prompt == "moved":
            return openai_error(503, "down for maintenance", kind="server_error")
        return openai_chat(f"answer to {prompt}", usage=(188, 8))

    primary.route("POST", CHAT, answer)
    spare.route("POST", CHAT, openai_chat("from the spare", usage=(12, 3)))
    # Two endpoints on one server (by address and by name): the fan-out's items go to both.
    host = primary.url.replace("127.0.0.1", "localhost")
    config = write(
        "config.yaml",
        "llm:\n  backend: main\n  fallback_backends: [spare]\n  circuit_breaker: {failures: 2, cooldown: 60}\n"
        f"  main: {{type: vllm, endpoints: ['{primary.url}/v1', '{host}/v1'], models: {{generator: big}}}}\n"
        f"  spare: {{type: vllm, base_url: '{spare.url}/v1', models: {{generator: small}}}}\n",
    )
    command = [sys.executable, "-m", "dse", "run", str(write("wf.yaml", WORKFLOW)), "--config", str(config)]
    terminal = Terminal(command, tmp_path, columns)
    try:
        assert terminal.read_until(lambda: any("3/4 done" in line for line in row_of(terminal.lines(), "fan"))), terminal.lines()
        first = elapsed(terminal.lines(), "fan")
        assert first, terminal.lines()
        ticked = terminal.read_until(lambda: elapsed(terminal.lines(), "fan") not in (None, first))
        assert ticked, f"a running step's time ticks: {first} then {terminal.lines()}"
    finally:
        held.set()
    code = terminal.close()
    lines = terminal.lines()
    assert code == 0, "\n".join(lines)

    view = lines[: next(i for i, line in enumerate(lines) if line.startswith("workflow watched:"))]
    wide = [line.rstrip() for line in terminal.wide.display][: len(view)]
    assert max(map(len, wide)) <= columns, "no line is wider than the terminal:\n" + "\n".join(wide)
    strays = [line for line in view if line and not re.match(r"run |  \w+: |\[..\] \w+ ", line)]
    assert not strays, "every line is the run's, an event's or a step's: none is the wrapped end of another"
    for step_id in STEPS:
        assert len(row_of(view, step_id)) == 1, f"{step_id} appears once:\n" + "\n".join(view)
    fan, flaky_row, moved, lint = (row_of(view, step_id)[0] for step_id in STEPS)
    assert re.match(r"\[ok\] fan +done +\d+\.\d\ds  4/4 done", fan), fan
    assert flaky_row.startswith("[ok] flaky") and moved.startswith("[ok] moved") and lint.startswith("[!!] lint"), view
    events = "\n".join(view)
    assert re.search(r"flaky: retry in 0\.\d+s - ", events), "the retry, with its wait"
    assert "moved: fallback main/big -> spare" in events, events
    assert "moved: breaker open on" in events, events
    if columns >= 80:
        ends = re.escape(primary.url.removeprefix("http://")), re.escape(host.removeprefix("http://"))
        both = rf"({ends[0]}, {ends[1]}|{ends[1]}, {ends[0]})" if columns >= 200 else rf"({ends[0]}|{ends[1]}) \+1"
        assert re.search(rf"main/\S+ @ {both}", fan), f"both endpoints, or one and how many more: {fan}"
        assert re.search(r"done +\d+\.\d\ds  spare/\S+ @ \S+  tokens 12\+3", moved), f"numbers stand apart: {moved}"
        assert "moved: fallback main/big -> spare/small - " in events, events
    if columns >= 200:
        assert re.search(r"flaky: retry in 0\.\d+s - server error \(HTTP 500\): the primary hiccuped - main @ http", events), events


PRICES = "pricing:\n  cheap: {input: 1000.0, output: 2000.0}\n"
FAN_OUT = "name: fan\nmax_parallel: 1\nsteps:\n  - id: each\n    max_tokens: 10\n    for_each: '{{ range(6) | list }}'\n    prompt: 'item {{ item }}'\n"
"""Six calls one at a time, each $0.015 as answered and $0.026 at worst: a budget of $0.08 holds four."""


def test_a_piped_run_prints_each_note_as_a_plain_line_with_its_step(write, tmp_path: Path, capsys, monkeypatch) -> None:
    """`s` has a rate limit (calls wait their turn) and a budget that runs out after four calls (refused, then the fallback `t`)."""
    from dse.cli import main

    monkeypatch.chdir(tmp_path)
    with StubServer() as dear, StubServer() as spare:
        dear.route("POST", CHAT, openai_chat("ok", usage=(5, 5)))
        spare.route("POST", CHAT, openai_chat("spare", usage=(5, 5)))
        config = write(
            "config.yaml",
            "llm:\n  backend: s\n  fallback_backends: [t]\n"
            f"  s: {{type: openai, api_key: k, base_url: '{dear.url}/v1', models: {{generator: cheap}}, budget: {{per_run: 0.08}}, rate_limit: {{rpm: 1200}}}}\n"
            f"  t: {{type: openai, api_key: k, base_url: '{spare.url}/v1', models: {{generator: big}}}}\n" + PRICES,
        )
        code = main(["run", str(write("wf.yaml", FAN_OUT)), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()
    assert (len(dear.requests), len(spare.requests)) == (4, 2)
    waits = [line for line in lines if re.fullmatch(r"  each: waiting 0\.\d+s for the rate limit of s", line)]
    refused = [line for line in lines if line.startswith("  each: refused a call to s/cheap - budget: ") and "llm.s.budget.per_run" in line]
    fallbacks = [line for line in lines if line.startswith("  each: fallback s/cheap -> t/big - budget: ")]
    assert waits and len(refused) == 2 and len(fallbacks) == 2, err
    assert lines[0].startswith("run ") and lines[1] == "[..] each           running   s/cheap"
    assert lines[-1].startswith(f"[ok] each           done      t/stub-model @ {dear.url}/v1, {spare.url}/v1  6/6 items  "), (
        "the step line as before, naming every endpoint its calls went to"
    )
