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
        """One attempt, bounded by the step's `timeout:`; a failure is `retryable` and the scheduler's `retry:` decides."""
        try:
            output = await asyncio.wait_for(self._run({**services.environ, **self.env}), timeout=self.timeout)
        except asyncio.TimeoutError:
            return Outcome(error=f"timed out after {self.timeout:g}s", retryable=True, calls=1, attempts=1)
        except (_Failed, OSError) as exc:
            return Outcome(error=str(exc), retryable=True, calls=1, attempts=1)
        if not self.want_json:
            return Outcome(output=output, calls=1, attempts=1)
        try:
            return Outcome(output=parse_json(output, self.schema), calls=1, attempts=1)
        except OutputNotJson as exc:
            return Outcome(error=f"{self.argv[0]} printed {exc}", calls=1, attempts=1)

    async def _run(self, env: dict[str, str]) -> str:
        process = await asyncio.create_subprocess_exec(
            *_resolved(self.argv),
            cwd=self.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await process.communicate()
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise _Failed(f"{self.argv[0]} exited with code {process.returncode}: {' | '.join(tail)}")
        return stdout.decode(errors="replace").rstrip("\n")


def _resolved(argv: tuple[str, ...]) -> tuple[str, ...]:
    """`dse` is the dse that runs the workflow (this interpreter), whatever PATH holds: `run: [dse, changes]` always works."""
    return (sys.executable, "-m", "dse", *argv[1:]) if argv[:1] == ("dse",) else argv


class _Failed(Exception):
    """The command exited non-zero; becomes the outcome's error."""


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
