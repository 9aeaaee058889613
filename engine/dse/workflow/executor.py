"""Running a plan: each step starts as soon as its dependencies finish, bounded by `max_parallel`.

Every step is an asyncio task that waits on its dependencies' completion; nothing polls. A
failed step stops its dependants (they are recorded as skipped, with the reason) unless it
has `continue_on_error`. A skipped step's dependants still run and see it as skipped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..backends import ChatResponse, Message
from ..backends.types import StreamChunk
from ..errors import DseError, InputError
from ..routing import Target
from . import templating
from .plan import Plan, PlannedStep

DONE, SKIPPED, FAILED, RUNNING = "done", "skipped", "failed", "running"


class StepCommandFailed(DseError):
    """A `run:` command exited non-zero."""


class ChatCaller(Protocol):
    """What the executor needs from the router: a call, or a stream, with a retry override."""

    async def chat(self, target: Target, messages: list[Message], *, retry: Mapping[str, Any] | None = None) -> ChatResponse: ...

    def stream(
        self, target: Target, messages: list[Message], *, retry: Mapping[str, Any] | None = None
    ) -> AsyncIterator[StreamChunk]: ...


@dataclass
class StepResult:
    """What happened to one step: the journal and the progress view are built from these."""

    id: str
    kind: str
    status: str = "waiting"
    output: Any = None
    error: str | None = None
    backend: str | None = None
    model: str | None = None
    endpoint: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 0

    def context(self) -> dict[str, Any]:
        """How later templates see this step: `steps.<id>.output`, `.status`, `.error`."""
        return {"output": self.output, "status": self.status, "error": self.error}


@dataclass
class RunResult:
    workflow: str
    status: str
    steps: dict[str, StepResult]
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


EventSink = Callable[[StepResult], None]
ChunkSink = Callable[[str, str], None]


class Executor:
    def __init__(
        self,
        plan: Plan,
        caller: ChatCaller,
        *,
        on_event: EventSink | None = None,
        on_chunk: ChunkSink | None = None,
        max_parallel: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.caller = caller
        self.on_event = on_event or (lambda result: None)
        self.on_chunk = on_chunk or (lambda step_id, text: None)
        limit = max_parallel or plan.workflow.max_parallel or 8
        self._slots = asyncio.Semaphore(limit)
        source_env = os.environ if environ is None else environ
        self._env = {name: source_env.get(name, "") for name in plan.workflow.env}
        self.results = {s.id: StepResult(s.id, s.kind) for s in plan.workflow.steps}

    async def run(self, inputs: Mapping[str, Any]) -> RunResult:
        started = time.perf_counter()
        self._inputs = dict(inputs)
        finished = {step_id: asyncio.Event() for step_id in self.results}
        tasks = [asyncio.create_task(self._run_step(step_id, finished)) for step_id in self.plan.order]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        failed = any(r.status == FAILED for r in self.results.values())
        outputs = {} if failed else self._outputs()
        return RunResult(
            workflow=self.plan.workflow.name,
            status=FAILED if failed else DONE,
            steps=self.results,
            outputs=outputs,
            seconds=time.perf_counter() - started,
        )

    def _context(self, **extra: Any) -> dict[str, Any]:
        steps = {sid: r.context() for sid, r in self.results.items() if r.status in (DONE, SKIPPED, FAILED)}
        return {"inputs": self._inputs, "steps": steps, "env": self._env, **extra}

    def _outputs(self) -> dict[str, Any]:
        context = self._context()
        where = self.plan.workflow.source.locate
        return {
            name: templating.render(template, context, where=where(("outputs", name)))
            for name, template in self.plan.workflow.outputs.items()
        }

    async def _run_step(self, step_id: str, finished: dict[str, asyncio.Event]) -> None:
        result = self.results[step_id]
        try:
            for dep in self.plan.graph.predecessors(step_id):
                await finished[dep].wait()
            blocked = [
                d
                for d in self.plan.graph.predecessors(step_id)
                if (self.results[d].status == FAILED and not self.plan.steps[d].step.continue_on_error)
                or self.results[d].error == "dependency failed"
            ]
            if blocked:
                result.status, result.error = SKIPPED, "dependency failed"
                self.on_event(result)
                return
            async with self._slots:
                await self._execute(self.plan.steps[step_id], result)
        finally:
            finished[step_id].set()

    async def _execute(self, planned: PlannedStep, result: StepResult) -> None:
        step = planned.step
        context = self._context()
        if step.when is not None and not templating.evaluate(step.when, context, where=step.location):
            result.status = SKIPPED
            self.on_event(result)
            return
        if planned.resolution is not None:
            result.backend, result.model = planned.resolution.target.backend, planned.resolution.target.model
        result.status = RUNNING
        self.on_event(result)
        started = time.perf_counter()
        try:
            if step.kind == "llm":
                result.output = await self._call(planned, result, context)
            else:

                async def attempt() -> str:
                    return await asyncio.wait_for(self._command(planned, context), timeout=step.timeout)

                result.output = await self._retrying(result, attempt, step.retry)
            result.status, result.error = DONE, None
        except asyncio.TimeoutError:
            result.status, result.error = FAILED, f"timed out after {step.timeout:g}s"
        except (DseError, OSError) as exc:
            result.status, result.error = FAILED, str(exc)
            result.attempts = max(result.attempts, len(getattr(exc, "attempts", ())))
        result.seconds = time.perf_counter() - started
        self.on_event(result)

    async def _retrying(self, result: StepResult, work: Callable[[], Awaitable[str]], retry: Mapping[str, Any]) -> str:
        """`retry:` for commands; model calls hand it to the router so there is one retry layer."""
        attempts = int(retry.get("attempts", 1))
        backoff = float(retry.get("backoff", 2.0))
        for attempt in range(1, attempts + 1):
            result.attempts = attempt
            try:
                return await work()
            except (StepCommandFailed, OSError, asyncio.TimeoutError):
                if attempt == attempts:
                    raise
                await asyncio.sleep(backoff ** (attempt - 1))
        raise AssertionError("unreachable: the loop returns or raises")

    async def _call(self, planned: PlannedStep, result: StepResult, context: dict[str, Any]) -> str:
        step, tool, resolution = planned.step, planned.tool, planned.resolution
        assert resolution is not None
        target = resolution.target if step.timeout is None else replace(resolution.target, timeout=step.timeout)
        where = step.location
        local = {**context, **templating.render_value(dict(step.with_), context, where=where)}
        messages = []
        system = step.system if step.system is not None else (tool.system if tool else None)
        if system:
            messages.append(Message("system", templating.render(system, local, where=where)))
        messages.append(Message("user", templating.render(planned.prompt_template or "", local, where=where)))
        retry = dict(step.retry) or None
        if step.stream:
            return await self._streamed(target, messages, retry, result)
        response = await self.caller.chat(target, messages, retry=retry)
        result.endpoint = response.endpoint
        result.model = response.model
        result.backend = response.backend
        result.attempts = len(response.attempts)
        result.prompt_tokens += response.usage.prompt_tokens
        result.completion_tokens += response.usage.completion_tokens
        return response.text.strip()

    async def _streamed(self, target: Target, messages: list[Message], retry: Mapping[str, Any] | None, result: StepResult) -> str:
        parts: list[str] = []
        async for chunk in self.caller.stream(target, messages, retry=retry):
            parts.append(chunk.text)
            if chunk.text:
                self.on_chunk(result.id, chunk.text)
            if chunk.usage is not None:
                result.prompt_tokens += chunk.usage.prompt_tokens
                result.completion_tokens += chunk.usage.completion_tokens
        return "".join(parts).strip()

    async def _command(self, planned: PlannedStep, context: dict[str, Any]) -> str:
        """An argv list run without a shell: a rendered value is one argument, never more."""
        step = planned.step
        if step.kind == "workflow":
            raise InputError(f"step {step.id!r}: sub-workflows are not supported yet", location=step.location)
        argv = [templating.render(arg, context, where=step.location) for arg in step.run or ()]
        env = {**os.environ, **templating.render_value(dict(step.env), context, where=step.location)}
        cwd = templating.render(step.cwd, context, where=step.location) if step.cwd else None
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
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
            raise StepCommandFailed(f"{argv[0]} exited with code {process.returncode}: {' | '.join(tail)}")
        return stdout.decode(errors="replace").rstrip("\n")
