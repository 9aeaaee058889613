"""A `run:` step: its argv rendered by the scheduler, one attempt of the command performed where it runs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import templating
from ..plan import PlannedStep
from .base import Outcome, Services
from .json_answer import OutputNotJson, parse_json


@dataclass(frozen=True)
class Command:
    """An argv run without a shell: a rendered value is one argument, never more.

    `env` holds only the step's own variables; they are laid over the environment of the
    process that runs the command, so a worker's secrets never travel with the request.
    """

    travels: ClassVar[bool] = True
    step_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)
    want_json: bool = False
    schema: Mapping[str, Any] | None = None

    async def perform(self, services: Services) -> Outcome:
        """One attempt, bounded by the step's `timeout:`; a failure is `retryable` and the scheduler's `retry:` decides.

        A failure keeps what the command printed (what a timed-out one had printed so far):
        a check such as `git diff --check` reports its findings on stdout, not stderr.
        """
        printed = _Printed()
        try:
            code = await asyncio.wait_for(self._run({**services.environ, **self.env}, printed), timeout=self.timeout)
        except asyncio.TimeoutError:
            return self._failed(f"timed out after {self.timeout:g}s", printed, retryable=True)
        except OSError as exc:
            return Outcome(error=str(exc), retryable=True, calls=1, attempts=1)
        if code != 0:
            return self._failed(exit_message(self.argv[0], code, printed.stdout(), printed.stderr()), printed, retryable=True)
        output = printed.stdout().rstrip("\n")
        if not self.want_json:
            return Outcome(output=output, calls=1, attempts=1)
        try:
            return Outcome(output=parse_json(output, self.schema), calls=1, attempts=1)
        except OutputNotJson as exc:
            return self._failed(f"{self.argv[0]} printed {exc}", printed, retryable=False)

    def _failed(self, error: str, printed: _Printed, *, retryable: bool) -> Outcome:
        return Outcome(
            error=error, stdout=kept(printed.stdout()), stderr=kept(printed.stderr()), retryable=retryable, calls=1, attempts=1
        )

    async def _run(self, env: dict[str, str], printed: _Printed) -> int:
        """The command's exit code; what it prints is gathered into `printed` as it comes, so a timeout loses none of it."""
        process = await asyncio.create_subprocess_exec(
            *_resolved(self.argv),
            cwd=self.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            await asyncio.gather(_drain(process.stdout, printed.out), _drain(process.stderr, printed.err))
            return await process.wait()
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise


KEPT = 4000
"""Characters kept of a failed command's stdout, and of its stderr: the end, where a failure says why."""

EXCERPT = 300
"""Characters of the failure's last lines quoted in the error message itself."""


@dataclass
class _Printed:
    """What a command has printed so far, as bytes: decoded once it is all there (or the timeout cut it off)."""

    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)

    def stdout(self) -> str:
        return self.out.decode(errors="replace")

    def stderr(self) -> str:
        return self.err.decode(errors="replace")


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk


def kept(text: str, limit: int = KEPT) -> str | None:
    """The last `limit` characters of what a command printed, saying how many were cut before them; None for nothing printed."""
    if not text.strip():
        return None
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} characters cut ...]\n{text[-limit:]}"


def exit_message(program: str, code: int, stdout: str, stderr: str) -> str:
    """`git exited with code 2: <its last lines>`: from stderr, else from stdout (said so), where a check prints its findings."""
    for label, text in (("", stderr), ("stdout: ", stdout)):
        lines = [line.strip() for line in text.strip().splitlines()[-3:] if line.strip()]
        if lines:
            excerpt = " | ".join(lines)
            excerpt = excerpt if len(excerpt) <= EXCERPT else "..." + excerpt[-EXCERPT:]
            return f"{program} exited with code {code}: {label}{excerpt}"
    return f"{program} exited with code {code}, printing nothing"


def _resolved(argv: tuple[str, ...]) -> tuple[str, ...]:
    """`dse` is the dse that runs the workflow (this interpreter), whatever PATH holds: `run: [dse, changes]` always works."""
    return (sys.executable, "-m", "dse", *argv[1:]) if argv[:1] == ("dse",) else argv


def command(planned: PlannedStep, context: Mapping[str, Any], deadline: float | None) -> Command:
    """The request for a `run:` step; each attempt gets the whole `timeout:` (the deadline bounds rendering alone)."""
    step = planned.step
    return Command(
        step_id=step.id,
        argv=tuple(templating.render(arg, context, where=step.where("run")) for arg in step.run or ()),
        env=templating.render_value(dict(step.env), context, where=step.where("env")),
        cwd=templating.render(step.cwd, context, where=step.where("cwd")) if step.cwd else None,
        timeout=step.timeout,
        retry=dict(step.retry),
        want_json=step.output == "json",
        schema=step.output_schema,
    )
