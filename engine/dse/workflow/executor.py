"""Running a plan: each step starts as soon as its dependencies finish, bounded by `max_parallel`.

Every step is an asyncio task that waits on its dependencies' completion events; nothing
polls. A failed step stops its dependants (recorded as skipped, with the reason) unless it has
`continue_on_error`. A skipped step's dependants still run and see it as skipped. Every
finished step is journaled before anything downstream starts, which is what makes `--resume`
exact: steps that finished are reused, everything else runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol


from ..backends import ChatResponse, Message
from ..backends.types import StreamChunk
from .. import user_schema
from ..errors import DseError, InputError, Location
from ..redact import Redactor
from ..config.model import RetrySettings
from ..routing import Target, backoff
from . import templating
from .journal import RunJournal
from .plan import Plan, PlannedStep

WAITING, RUNNING, DONE, SKIPPED, FAILED = "waiting", "running", "done", "skipped", "failed"
DEPENDENCY_FAILED = "dependency failed"


class StepCommandFailed(DseError):
    """A `run:` command exited non-zero."""


class OutputNotJson(DseError):
    """A step with `output: json` got an answer that is not the JSON it asked for."""


class ItemFailed(DseError):
    """One item of a `for_each` fan-out failed; the message says which, the attempts are kept."""

    def __init__(self, index: int, cause: DseError) -> None:
        super().__init__(f"item {index}: {cause}")
        self.attempts = getattr(cause, "attempts", ())


class ChatCaller(Protocol):
    """What the executor needs from the router: a call, or a stream, with a retry override."""

    async def chat(
        self, target: Target, messages: list[Message], *, retry: Mapping[str, Any] | None = None
    ) -> ChatResponse: ...

    def stream(
        self, target: Target, messages: list[Message], *, retry: Mapping[str, Any] | None = None
    ) -> AsyncIterator[StreamChunk]: ...


@dataclass
class StepResult:
    """What happened to one step: the journal, `dse show` and the progress view read these."""

    id: str
    kind: str
    status: str = WAITING
    output: Any = None
    error: str | None = None
    backend: str | None = None
    model: str | None = None
    endpoint: str | None = None
    prompt: str | list[str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token: float | None = None
    items_done: int = 0
    items_total: int | None = None
    calls: int = 0
    attempts: int = 0
    tries: list[dict[str, Any]] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    reused: bool = False

    def context(self) -> dict[str, Any]:
        """How later templates see this step: `steps.<id>.output`, `.status`, `.error`."""
        return {"output": self.output, "status": self.status, "error": self.error}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StepResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class RunResult:
    workflow: str
    status: str
    steps: dict[str, StepResult]
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    run_id: str | None = None


EventSink = Callable[[StepResult], None]
ChunkSink = Callable[[str, str], None]


class Executor:
    def __init__(
        self,
        plan: Plan,
        caller: ChatCaller,
        *,
        journal: RunJournal | None = None,
        reuse: Mapping[str, StepResult] | None = None,
        reuse_items: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
        on_event: EventSink | None = None,
        on_chunk: ChunkSink | None = None,
        max_parallel: int | None = None,
        environ: Mapping[str, str] | None = None,
        redactor: Redactor = Redactor(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        room: Callable[[Target], int | None] | None = None,
    ) -> None:
        self.plan = plan
        self.redactor = redactor
        self.caller = caller
        self.journal = journal
        self.on_event = on_event or (lambda result: None)
        self.on_chunk = on_chunk or (lambda step_id, text: None)
        self._max_parallel = max_parallel or plan.workflow.max_parallel or 8
        self._slots = asyncio.Semaphore(self._max_parallel)
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._env = {name: self._environ.get(name, "") for name in plan.workflow.env}
        self.results = {s.id: StepResult(s.id, s.kind) for s in plan.workflow.steps}
        for step_id, previous in (reuse or {}).items():
            if step_id in self.results and previous.status in (DONE, SKIPPED):
                self.results[step_id] = replace(previous, reused=True)
        self._finished_context: dict[str, dict[str, Any]] = {}
        self._reuse_items = reuse_items or {}
        self._room = room

    async def run(self, inputs: Mapping[str, Any]) -> RunResult:
        started = time.perf_counter()
        self._inputs = dict(inputs)
        finished = {step_id: asyncio.Event() for step_id in self.results}
        tasks = [asyncio.create_task(self._run_step(step_id, finished)) for step_id in self.plan.order]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            running = [r.id for r in self.results.values() if r.status == RUNNING]
            self._journal("run_interrupted", running=running)
            raise
        finally:
            for task in tasks:
                task.cancel()
        failed = any(self._blocks(step_id) for step_id in self.results)
        outputs = {} if failed else await self._outputs()
        status = FAILED if failed else DONE
        self._journal("run_finished", status=status, outputs=outputs)
        return RunResult(
            workflow=self.plan.workflow.name,
            status=status,
            steps=self.results,
            outputs=outputs,
            seconds=time.perf_counter() - started,
            run_id=self.journal.run_id if self.journal else None,
        )

    def _journal(self, name: str, /, **data: Any) -> None:
        if self.journal is not None:
            self.journal.event(name, **data)

    def _context(self, **extra: Any) -> dict[str, Any]:
        """What templates see. `steps` is a snapshot: templates render in worker threads while steps finish."""
        return {"inputs": self._inputs, "steps": dict(self._finished_context), "env": self._env, **extra}

    async def _outputs(self) -> dict[str, Any]:
        context = self._context()
        where = self.plan.workflow.source.locate

        def render_all() -> dict[str, Any]:
            return {
                name: templating.render(template, context, where=where(("outputs", name)))
                for name, template in self.plan.workflow.outputs.items()
            }

        return await templating.run_bounded(render_all, where=where(("outputs",)))

    async def _run_step(self, step_id: str, finished: dict[str, asyncio.Event]) -> None:
        result = self.results[step_id]
        try:
            for dep in self.plan.graph.predecessors(step_id):
                await finished[dep].wait()
            if result.reused:
                self.on_event(result)
                return
            if any(self._blocks(dep) for dep in self.plan.graph.predecessors(step_id)):
                result.status, result.error = SKIPPED, DEPENDENCY_FAILED
                self._finish(result)
                return
            planned = self.plan.steps[step_id]
            if planned.step.for_each is not None:
                await self._execute(planned, result)
            else:
                async with self._slots:
                    await self._execute(planned, result)
        finally:
            self._finished_context[step_id] = result.context()
            finished[step_id].set()

    def _blocks(self, dep: str) -> bool:
        """A failed dependency stops its dependants, unless it may fail; the stop propagates."""
        done = self.results[dep]
        failed_hard = done.status == FAILED and not self.plan.steps[dep].step.continue_on_error
        return failed_hard or done.error == DEPENDENCY_FAILED

    def _finish(self, result: StepResult) -> None:
        """Journal first, then tell the user: what was shown as finished is always on disk."""
        self._journal("step_finished", **asdict(result))
        self.on_event(result)

    async def _execute(self, planned: PlannedStep, result: StepResult) -> None:
        step = planned.step
        context = self._context()
        result.started_at = time.monotonic()
        try:
            if step.when is not None and not await self._when(planned, step.when, context):
                result.status = SKIPPED
                return
            if planned.resolution is not None:
                result.backend, result.model = planned.resolution.target.backend, planned.resolution.target.model
            result.status = RUNNING
            self._journal("step_started", id=step.id, backend=result.backend, model=result.model)
            self.on_event(result)
            if step.for_each is None:
                result.output = await self._body(planned, result, context)
            else:
                result.output = await self._fan_out(planned, result, context)
            result.status, result.error = DONE, None
        except asyncio.TimeoutError:
            result.status, result.error = FAILED, f"timed out after {step.timeout:g}s"
        except (DseError, OSError) as exc:
            result.status, result.error = FAILED, str(exc)
            tries = getattr(exc, "attempts", ())
            if tries:
                result.tries = [asdict(t) for t in tries]
                result.attempts = max(result.attempts, len(tries))
        finally:
            result.finished_at = time.monotonic()
            result.seconds = result.finished_at - result.started_at
            # A server may echo a key back: scrubbed here, it never reaches a later prompt, the journal or a screen.
            result.output = self.redactor.value(result.output)
            result.error = self.redactor.text(result.error) if result.error else result.error
            if result.status != RUNNING:
                self._finish(result)

    async def _when(self, planned: PlannedStep, condition: str, context: dict[str, Any]) -> bool:
        """`when:` is a template expression too: evaluated in a worker, under the step's timeout."""
        where = planned.step.where("when")
        return await templating.run_bounded(
            lambda: bool(templating.evaluate(condition, context, where=where)), seconds=planned.step.timeout, where=where
        )

    async def _fan_out(self, planned: PlannedStep, result: StepResult, context: dict[str, Any]) -> list[Any]:
        """Run the step once per item, concurrently within `max_parallel`; results keep the items' order."""
        step = planned.step
        items = await templating.run_bounded(lambda: self._items(planned, context), seconds=step.timeout, where=step.where("for_each"))
        prompts: list[list[str]] = [[] for _ in items]

        finished = self._reuse_items.get(step.id, {})
        open_calls = self._open_calls(planned)
        result.items_total = len(items)

        def item_done() -> None:
            result.items_done += 1
            self.on_event(result)

        async def one(index: int, item: Any) -> Any:
            digest = _digest(item)
            earlier = finished.get(index)
            if earlier is not None and earlier.get("digest") == digest:
                item_done()
                return earlier.get("output")
            async with open_calls, self._slots:
                try:
                    output = await self._body(planned, result, {**context, "item": item, "index": index}, prompts[index])
                except DseError as exc:
                    raise ItemFailed(index, exc) from None
            # Journaled as it finishes, so a resumed fan-out sends only the items that had not.
            self._journal("item_finished", id=step.id, index=index, digest=digest, output=output)
            item_done()
            return output

        outputs = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        result.prompt = [p for item_prompts in prompts for p in item_prompts] or None
        return list(outputs)

    def _open_calls(self, planned: PlannedStep) -> asyncio.Semaphore:
        """Items of a model step in flight at once, at most what its endpoints take: never a failure of our own backlog."""
        room = self._room(planned.resolution.target) if self._room and planned.resolution else None
        return asyncio.Semaphore(room or self._max_parallel)

    def _items(self, planned: PlannedStep, context: dict[str, Any]) -> list[Any]:
        """The `for_each` items; renders templates, so it runs in a worker under `templating.run_bounded`."""
        step = planned.step
        source = step.for_each
        where = step.where("for_each")
        if isinstance(source, str):
            match = re.fullmatch(r"\s*\{\{(.*)\}\}\s*", source, re.S)
            value: Any = templating.evaluate(match.group(1), context, where=where) if match else source
            if isinstance(value, str):
                try:
                    value = json.loads(templating.render(value, context, where=where))
                except json.JSONDecodeError:
                    value = [line for line in value.splitlines() if line.strip()]
        else:
            value = templating.render_value(source, context, where=where)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise InputError(f"for_each must give a list, got {type(value).__name__}", location=where)
        return list(value)

    async def _body(
        self, planned: PlannedStep, result: StepResult, context: dict[str, Any], prompts: list[str] | None = None
    ) -> Any:
        step = planned.step
        if step.kind == "llm":
            return await self._call(planned, result, context, prompts)
        if step.kind == "workflow":
            return await self._subworkflow(planned, result, context)

        async def attempt() -> str:
            return await asyncio.wait_for(self._command(planned, context), timeout=step.timeout)

        return await self._retrying(result, attempt, step.retry)

    async def _retrying(self, result: StepResult, work: Callable[[], Awaitable[str]], retry: Mapping[str, Any]) -> str:
        """`retry:` for commands, waiting as the router does; model calls hand it to the router (one retry layer)."""
        policy = RetrySettings(**{"attempts": 1, **retry})
        attempts = policy.attempts
        for attempt in range(1, attempts + 1):
            result.attempts += 1
            result.calls += attempt == 1
            try:
                return await work()
            except (StepCommandFailed, OSError, asyncio.TimeoutError) as exc:
                result.tries.append({"attempt": attempt, "error": str(exc) or "timed out"})
                if attempt == attempts:
                    raise
                await self._sleep(backoff.delay(attempt, policy, self._rng))
        raise AssertionError("unreachable: the loop returns or raises")

    async def _call(
        self, planned: PlannedStep, result: StepResult, context: dict[str, Any], prompts: list[str] | None
    ) -> Any:
        step, resolution = planned.step, planned.resolution
        assert resolution is not None
        started = time.monotonic()
        messages = await templating.run_bounded(lambda: self._messages(planned, context), seconds=step.timeout, where=step.location)
        # One `timeout:` covers the step: the call gets what rendering left of it.
        left = None if step.timeout is None else max(step.timeout - (time.monotonic() - started), 0.001)
        target = resolution.target if left is None else replace(resolution.target, timeout=left)
        prompt = messages[-1].content
        if prompts is None:
            result.prompt = prompt
        else:
            prompts.append(prompt)
        retry = dict(step.retry) or None
        text = await self._complete(target, messages, retry, result, stream=step.stream)
        # A tool's `output_schema` (DiSE) asks for JSON as a step's `output: json` does.
        schema = step.output_schema or (planned.tool.output_schema if planned.tool else None)
        if step.output != "json" and schema is None:
            return text
        try:
            return _parse_json(text, schema)
        except OutputNotJson as first:
            messages += [
                Message("assistant", text),
                Message("user", f"That was not valid JSON ({first}). Reply with the JSON only, nothing else."),
            ]
            return _parse_json(await self._complete(target, messages, retry, result, stream=False), schema)

    def _messages(self, planned: PlannedStep, context: dict[str, Any]) -> list[Message]:
        """The system and user messages of a model call; renders, so it runs in a worker under `templating.run_bounded`."""
        step, tool = planned.step, planned.tool
        given = templating.render_value(dict(step.with_), context, where=step.where("with"))
        if tool is not None and tool.input_schema is not None:
            _check_input(given, tool.input_schema, tool.name, step.where("with"))
        local = {**context, **given}
        messages = []
        system = step.system if step.system is not None else (tool.system if tool else None)
        if system:
            messages.append(Message("system", templating.render(system, local, where=_template_where(planned, "system"))))
        prompt = templating.render(planned.prompt_template or "", local, where=_template_where(planned, "prompt"))
        return [*messages, Message("user", prompt)]

    async def _complete(
        self, target: Target, messages: list[Message], retry: Mapping[str, Any] | None, result: StepResult, *, stream: bool
    ) -> str:
        if stream:
            parts: list[str] = []
            async for chunk in self.caller.stream(target, messages, retry=retry):
                parts.append(chunk.text)
                if chunk.text:
                    result.first_token = chunk.elapsed if result.first_token is None else result.first_token
                    self.on_chunk(result.id, chunk.text)
                if chunk.usage is not None:
                    result.prompt_tokens += chunk.usage.prompt_tokens
                    result.completion_tokens += chunk.usage.completion_tokens
                if chunk.finish_reason is not None:
                    result.backend, result.endpoint = chunk.backend or result.backend, chunk.endpoint
                    result.attempts += len(chunk.attempts) - 1
                    result.tries += [asdict(t) for t in chunk.attempts if t.error]
            result.calls += 1
            result.attempts += 1
            return "".join(parts).strip()
        response = await self.caller.chat(target, messages, retry=retry)
        result.endpoint, result.model, result.backend = response.endpoint, response.model, response.backend
        result.calls += 1
        result.attempts += len(response.attempts) or 1
        result.tries += [asdict(t) for t in response.attempts if t.error]
        result.prompt_tokens += response.usage.prompt_tokens
        result.completion_tokens += response.usage.completion_tokens
        return response.text.strip()

    async def _command(self, planned: PlannedStep, context: dict[str, Any]) -> str:
        """An argv list run without a shell: a rendered value is one argument, never more."""
        step = planned.step
        argv, env, cwd = await templating.run_bounded(
            lambda: self._command_line(planned, context), seconds=step.timeout, where=step.where("run")
        )
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

    def _command_line(self, planned: PlannedStep, context: dict[str, Any]) -> tuple[list[str], dict[str, str], str | None]:
        """A command's argv, environment and directory; renders, so it runs in a worker under `templating.run_bounded`."""
        step = planned.step
        argv = [templating.render(arg, context, where=step.where("run")) for arg in step.run or ()]
        env = {**self._environ, **templating.render_value(dict(step.env), context, where=step.where("env"))}
        cwd = templating.render(step.cwd, context, where=step.where("cwd")) if step.cwd else None
        return argv, env, cwd

    async def _subworkflow(self, planned: PlannedStep, result: StepResult, context: dict[str, Any]) -> dict[str, Any]:
        """A sub-workflow runs with its own steps and inputs; its outputs are this step's output."""
        from .inputs import bind_inputs

        assert planned.subplan is not None
        step = planned.step
        given = await templating.run_bounded(
            lambda: templating.render_value(dict(step.with_), context, where=step.where("with")), seconds=step.timeout, where=step.where("with")
        )
        inputs = bind_inputs(planned.subplan.workflow, given)
        child = Executor(
            planned.subplan,
            self.caller,
            on_chunk=self.on_chunk,
            max_parallel=self._max_parallel,
            environ=self._environ,
            redactor=self.redactor,
        )
        outcome = await child.run(inputs)
        for sub in outcome.steps.values():
            result.prompt_tokens += sub.prompt_tokens
            result.completion_tokens += sub.completion_tokens
        if outcome.status != DONE:
            failed = [f"{s.id}: {s.error}" for s in outcome.steps.values() if s.status == FAILED]
            raise StepCommandFailed(f"sub-workflow {Path(planned.step.workflow or '').name} failed ({'; '.join(failed)})")
        return outcome.outputs


def _template_where(planned: PlannedStep, key: str) -> Location:
    """Where a prompt or system template was written: the step's own key, or the tool that supplied it."""
    tool = planned.tool
    if getattr(planned.step, key) is None and tool is not None and tool.location is not None:
        return tool.location
    return planned.step.where(key)


def _digest(item: Any) -> str:
    """Which item this was: a resumed fan-out reuses an answer only for the same item at the same place."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_input(given: Mapping[str, Any], schema: Mapping[str, Any], tool: str, where: Location | None) -> None:
    """A tool's `input_schema` (DiSE) is checked against what the step passes it, after rendering."""
    errors = sorted(user_schema.validator(schema).iter_errors(dict(given)), key=lambda e: list(map(str, e.path)))
    if errors:
        at = ".".join(map(str, errors[0].path)) or "with"
        raise InputError(f"step input {at} does not match tool {tool!r}'s input_schema: {errors[0].message}", location=where)


def _parse_json(text: str, schema: Mapping[str, Any] | None) -> Any:
    """The JSON in a model's answer: fences and chatter around it are tolerated, a wrong shape is not."""
    candidate = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", candidate, re.S)
    if fenced:
        candidate = fenced.group(1).strip()
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError:
        starts = [i for i in (candidate.find("{"), candidate.find("[")) if i >= 0]
        try:
            value, _ = json.JSONDecoder().raw_decode(candidate[min(starts):]) if starts else (None, 0)
        except json.JSONDecodeError as exc:
            raise OutputNotJson(f"invalid JSON: {exc.msg}") from None
        if not starts:
            raise OutputNotJson("no JSON value in the answer") from None
    if schema:
        errors = sorted(user_schema.validator(schema).iter_errors(value), key=lambda e: list(map(str, e.path)))
        if errors:
            where = "/".join(map(str, errors[0].path)) or "top level"
            raise OutputNotJson(f"does not match output_schema at {where}: {errors[0].message}")
    return value
