"""`dse show RUN --html`: a real run against stub servers, its report rendered by headless Chromium, asserted on the DOM.

The run has what a timeline must show: a fan-out of four items over two endpoints of one
server, a call retried after a 500, a call that falls back to a second backend (priced by
nobody: "price unknown") after the first answers 503, a command whose failure is tolerated,
and a step skipped by `when`. Answers and the command's output carry `<script>` and a secret
that the server echoes back. Chromium parses the page as a browser does (`--dump-dom`), so an
answer that became markup would show up here as an element; the page must hold no script at
all, and nothing that loads from anywhere.

Chromium is a Debian package that `make test` installs (`make browser`): when it is missing
the test fails saying so, it is never skipped.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from stubs import Received, Reply, StubServer, openai_chat, openai_error

from dse.cli import main

CHAT = "/v1/chat/completions"
KEY = "sk-stub-spare-key"
WORKFLOW = """name: reported
steps:
  - id: fan
    for_each: [1, 2, 3, 4]
    prompt: 'item {{ item }}'
  - id: flaky
    prompt: flaky
    retry: {attempts: 3, backoff: 0.05}
  - id: moved
    needs: [fan, flaky]
    prompt: moved
    retry: {attempts: 2, backoff: 0.01}
  - id: lint
    run: [sh, -c, 'echo "<script>alert(1)</script> trailing whitespace in calc.py"; exit 2']
    continue_on_error: true
  - id: never
    needs: [moved]
    when: 'false'
    prompt: never
outputs: {moved: '{{ steps.moved.output }}'}
"""
STATES = {"fan": "done", "flaky": "done", "moved": "done", "lint": "tolerated", "never": "skipped"}
SCRIPT = "<script>alert('x')</script>"


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text for child in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[Element]:
        """Elements with this tag, class and attributes (`data_step="fan"` matches `data-step`)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            e for e in self.walk()
            if e.tag == tag and (cls is None or cls in e.classes) and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]


class _Tree(HTMLParser):
    """The DOM Chromium serialized, as a tree: text unescaped, as the page shows it."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def rendered(page: Path, profile: Path) -> Element:
    """The page as headless Chromium built it, offline and with no profile of its own."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make browser` installs it (apt-get install chromium); the HTML report is tested in it")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    tree = _Tree()
    tree.feed(done.stdout)
    return tree.root


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A finished run's state dir and the lanes it used: primary and host (one server, two endpoints), spare."""
    where = tmp_path_factory.mktemp("report")
    with StubServer() as primary, StubServer() as spare:
        flaky = itertools.count()

        def answer(request: Received) -> Reply:
            prompt = request.json["messages"][-1]["content"]
            if prompt == "flaky" and next(flaky) == 0:
                return openai_error(500, "the primary hiccuped", kind="server_error")
            if prompt == "moved":
                return openai_error(503, "down for maintenance", kind="server_error")
            return openai_chat(f"answer to {prompt} {SCRIPT}", usage=(100, 7))

        primary.route("POST", CHAT, answer)
        spare.route("POST", CHAT, openai_chat(f"from the spare ({KEY})", usage=(12, 3)))
        host = primary.url.replace("127.0.0.1", "localhost")
        config = where / "config.yaml"
        config.write_text(
            "llm:\n  backend: main\n  fallback_backends: [spare]\n"
            f"  main: {{type: vllm, endpoints: ['{primary.url}/v1', '{host}/v1'], models: {{generator: big}}}}\n"
            f"  spare: {{type: openai, api_key: {KEY}, base_url: '{spare.url}/v1', models: {{generator: unpriced-small}}}}\n"
        )
        (where / "wf.yaml").write_text(WORKFLOW)
        code = main(["run", str(where / "wf.yaml"), "--config", str(config), "--state-dir", str(where / "state")])
        assert code == 0
    lanes = {"primary": f"{primary.url}/v1", "host": f"{host}/v1", "spare": f"{spare.url}/v1"}
    return where, lanes


def test_the_report_shows_every_step_the_graph_and_who_ran_what_when(reported, tmp_path: Path, capsys) -> None:
    where, lanes = reported
    page = tmp_path / "report.html"
    assert main(["show", "last", "--html", str(page), "--state-dir", str(where / "state")]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    html = page.read_text()
    assert KEY not in html and "from the spare (***)" in html, "secrets stay scrubbed, as in the journal"
    dom = rendered(page, tmp_path / "profile")

    assert dom.find("script") == [], "no script: an answer's <script> is text, and the page runs none of its own"
    assert all(e.attrs["href"].startswith("#") for e in dom.find("a")), "links stay in the page"
    assert not [e for e in dom.walk() if "src" in e.attrs or e.tag in ("link", "img", "iframe")], "nothing loads from anywhere"

    sections = {e.attrs["data-step"]: e for e in dom.find("section", "step")}
    assert {step: e.attrs["data-status"] for step, e in sections.items()} == STATES
    nodes = {e.attrs["data-step"]: e.attrs["data-status"] for e in dom.find("g", "node")}
    assert nodes == STATES, "every step is a node of the graph, in its state"
    edges = {(e.attrs["data-from"], e.attrs["data-to"]) for e in dom.find("path", "edge")}
    assert edges == {("fan", "moved"), ("flaky", "moved"), ("moved", "never")}

    fan = sections["fan"]
    (output,) = fan.find("pre", "output")
    assert output.text.count(SCRIPT) == 4, output.text
    assert "100 in + 7 out" in sections["flaky"].text and "$0" in sections["flaky"].text
    assert "12 in + 3 out" in sections["moved"].text and "price unknown" in sections["moved"].text
    assert "fell back to spare" in sections["moved"].text, "the failed attempt says what came next"
    (stdout,) = sections["lint"].find("pre", "stdout")
    assert "<script>alert(1)</script> trailing whitespace in calc.py" in stdout.text
    assert "sh exited with code 2" in sections["lint"].find("pre", "error-text")[0].text

    timeline = dom.find("svg", id="timeline")[0]
    lane_keys = {e.attrs["data-lane"] for e in timeline.find("g", "lane")}
    assert lane_keys == {lanes["primary"], lanes["host"], lanes["spare"], "this machine"}, lane_keys
    bars = timeline.find("g", "bar")
    items = {int(b.attrs["data-item"]): b.attrs["data-lane"] for b in bars if b.attrs["data-step"] == "fan"}
    assert sorted(items) == [0, 1, 2, 3], "each item of the fan-out is a bar"
    assert set(items.values()) == {lanes["primary"], lanes["host"]}, f"the items ran on both replicas: {items}"
    where_ran = {b.attrs["data-step"]: (b.attrs["data-lane"], b.attrs["data-status"]) for b in bars if b.attrs["data-step"] != "fan"}
    assert where_ran["moved"] == (lanes["spare"], "done"), "the fallback's answer came from the spare"
    assert where_ran["lint"] == ("this machine", "tolerated")
    assert where_ran["flaky"][0] in (lanes["primary"], lanes["host"]) and "never" not in where_ran
    marks = [(m.attrs["data-kind"], m.attrs["data-step"]) for m in timeline.find("g", "mark")]
    assert ("retry", "flaky") in marks and ("fallback", "moved") in marks, marks
    retry = next(m for m in timeline.find("g", "mark") if m.attrs["data-step"] == "flaky")
    assert "the primary hiccuped" in retry.find("title")[0].text, "a mark says what happened"


@pytest.mark.parametrize("target", [lambda tmp: tmp, lambda tmp: tmp / "missing" / "report.html"], ids=["a directory", "no such directory"])
def test_a_report_path_that_cannot_be_written_is_bad_input(reported, target: Callable[[Path], Path], tmp_path: Path, capsys) -> None:
    where, _ = reported
    assert main(["show", "last", "--html", str(target(tmp_path)), "--state-dir", str(where / "state")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report to" in err and "Traceback" not in err, err


def test_a_run_killed_midway_shows_the_steps_it_never_reached(tmp_path: Path, capsys) -> None:
    """A journal with no end (the process was killed): the planned graph is whole, the unreached step says so, nothing is invented."""
    from dse.workflow.journal import RunJournal

    workflow = tmp_path / "wf.yaml"
    workflow.write_text("name: cut\n")
    graph = [{"id": "first", "kind": "run", "tool": None, "needs": []}, {"id": "second", "kind": "llm", "tool": None, "needs": ["first"]}]
    journal = RunJournal.create(tmp_path / "state", workflow=str(workflow), workflow_name="cut", config=str(workflow), inputs={}, graph=graph)
    journal.event("run_started")
    journal.event("step_finished", id="first", kind="run", status="done", output="</pre><b>bold?</b>", seconds=0.5)
    journal.close()
    page = tmp_path / "report.html"
    assert main(["show", "last", "--html", str(page), "--state-dir", str(tmp_path / "state")]) == 0
    tree = _Tree()
    tree.feed(page.read_text())
    sections = {e.attrs["data-step"]: e.attrs["data-status"] for e in tree.root.find("section", "step")}
    assert sections == {"first": "done", "second": "not run"}
    assert {(e.attrs["data-from"], e.attrs["data-to"]) for e in tree.root.find("path", "edge")} == {("first", "second")}
    assert tree.root.find("pre", "output")[0].text == "</pre><b>bold?</b>" and tree.root.find("b") == []
    assert [b.attrs["data-step"] for b in tree.root.find("g", "bar")] == ["first"], "only what ran is on the timeline"
    assert tree.root.find("header", id="run")[0].attrs["data-status"] == "killed"
