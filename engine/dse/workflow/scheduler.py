"""Running a plan: each step starts as soon as its dependencies finish; bodies go to a step runner.

Every step is an asyncio task that waits on its dependencies' completion events; nothing
polls. The scheduler decides what runs (DAG order, `when`, `for_each`, `max_parallel`, the
endpoints' room), renders each step's request, hands it to the runner (this process, or a Dask
cluster) and records the outcome: the journal, resume, retries of commands and progress all
stay here, whatever runs the bodies. A failed step stops its dependants (recorded as skipped,
with the reason) unless it has `continue_on_error`. Every finished step is journaled before
anything downstream starts, which is what makes `--resume` exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from ..config.model import RetrySettings
from ..errors import DseError, InputError
from ..redact import Redactor
from ..routing import Target, backoff
from . import templating
from .journal import RunJournal
from .plan import Plan, PlannedStep
from .results import DEPENDENCY_FAILED, DONE, FAILED, RUNNING, SKIPPED, RunResult, StepResult
from .steps import Outcome, Services, StepRequest, request_for, total_cost

if TYPE_CHECKING:
    from ..runners import StepRunner

DEFAULT_PARALLEL = 8
"""Steps that are not model calls (commands, sub-workflows) at once, unless `max_parallel` says otherwise.
Model calls are bounded by what their endpoints take instead."""


EventSink = Callable[[StepResult], None]


class _Gate(asyncio.Semaphore):
    """A semaphore that knows its size: a fan-out starts as many workers as its gate lets through."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        runner: StepRunner,
        *,
        journal: RunJournal | None = None,
        reuse: Mapping[str, StepResult] | None = None,
        reuse_items: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
        on_event: EventSink | None = None,
        max_parallel: int | None = None,
        environ: Mapping[str, str] | None = None,
        redactor: Redactor = Redactor(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        room: Callable[[Target], int | None] | None = None,
    ) -> None:
        self.plan = plan
        self.runner = runner
        self.redactor = redactor
        self.journal = journal
        self.on_event = on_event or (lambda result: None)
        self._max_parallel = max_parallel or plan.workflow.max_parallel
        self._slots = _Gate(self._max_parallel) if self._max_parallel else None
        self._others = self._slots or _Gate(DEFAULT_PARALLEL)
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._room = room
        self._rooms: dict[tuple[str, str | None], _Gate] = {}
        self._env = {name: self._environ.get(name, "") for name in plan.workflow.env}
        self._here = Services(environ=self._environ, run_plan=self._run_child)
        self.results = {s.id: StepResult(s.id, s.kind) for s in plan.workflow.steps}
        for step_id, previous in (reuse or {}).items():
            if step_id in self.results and previous.status in (DONE, SKIPPED):
                self.results[step_id] = replace(previous, reused=True)
        self._finished_context: dict[str, dict[str, Any]] = {}
        self._reuse_items = reuse_items or {}

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

    async def _run_child(self, plan: Plan, inputs: dict[str, Any]) -> RunResult:
        """A sub-workflow: its own scheduler, on the same runner, with nothing journaled of its own."""
        child = Scheduler(
            plan,
            self.runner,
            max_parallel=self._max_parallel,
            environ=self._environ,
            redactor=self.redactor,
            sleep=self._sleep,
            rng=self._rng,
            room=self._room,
        )
        return await child.run(inputs)

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
        try:
            for dep in self.plan.graph.predecessors(step_id):
                await finished[dep].wait()
            result = self.results[step_id]
            if result.reused:
                self.on_event(result)
                return
            if any(self._blocks(dep) for dep in self.plan.graph.predecessors(step_id)):
                self._finish(replace(result, status=SKIPPED, error=DEPENDENCY_FAILED))
                return
            self._finish(await self._execute(self.plan.steps[step_id]))
        finally:
            self._finished_context[step_id] = self.results[step_id].context()
            finished[step_id].set()

    def _blocks(self, dep: str) -> bool:
        """A failed dependency stops its dependants, unless its failure was tolerated; the stop propagates."""
        done = self.results[dep]
        return (done.status == FAILED and not done.tolerated) or done.error == DEPENDENCY_FAILED

    def _show(self, result: StepResult) -> None:
        self.results[result.id] = result
        self.on_event(result)

    def _finish(self, result: StepResult) -> None:
        """Journal first, then tell the user: what was shown as finished is always on disk."""
        self.results[result.id] = result
        self._journal("step_finished", **asdict(result))
        self.on_event(result)

    async def _execute(self, planned: PlannedStep) -> StepResult:
        """The step's final record; scrubbed of secrets a server may have echoed, so none reaches a later prompt, the journal or a screen."""
        step = planned.step
        began = time.monotonic()  # the step's duration; `started_at` and `finished_at` are epoch times for people and scripts
        result = replace(self.results[step.id], started_at=time.time())
        try:
            context = self._context()
            if step.when is not None and not await self._when(planned, step.when, context):
                return self._ended(replace(result, status=SKIPPED), began)
            if planned.resolution is not None:
                result = replace(result, backend=planned.resolution.target.backend, model=planned.resolution.target.model)
            result = replace(result, status=RUNNING)
            self._journal("step_started", id=step.id, backend=result.backend, model=result.model)
            self._show(result)
            if step.for_each is None:
                outcome = await self._single(planned, context)
            else:
                outcome = await self._fan_out(planned, result, context)
            result = _with(self.results[step.id], outcome)  # a fan-out's latest count of items
            result = replace(result, status=FAILED if outcome.error else DONE)
        except asyncio.TimeoutError:
            result = replace(result, status=FAILED, error=f"timed out after {step.timeout:g}s")
        except (DseError, OSError) as exc:
            if isinstance(exc, DseError) and exc.stops_run:
                raise
            tries = [asdict(t) for t in getattr(exc, "attempts", ())]
            result = replace(result, status=FAILED, error=str(exc), tries=tries or result.tries)
        return self._ended(result, began)

    def _ended(self, result: StepResult, began: float) -> StepResult:
        """The finished record: timed, a failure marked tolerated where `continue_on_error` allows it, every text scrubbed."""
        scrub = self.redactor.text
        return replace(
            result,
            finished_at=time.time(),
            seconds=time.monotonic() - began,
            tolerated=result.status == FAILED and self.plan.steps[result.id].step.continue_on_error,
            output=self.redactor.value(result.output),
            error=scrub(result.error) if result.error else result.error,
            stdout=scrub(result.stdout) if result.stdout else result.stdout,
            stderr=scrub(result.stderr) if result.stderr else result.stderr,
        )

    async def _when(self, planned: PlannedStep, condition: str, context: dict[str, Any]) -> bool:
        """`when:` is a template expression too: evaluated in a worker, under the step's timeout."""
        where = planned.step.where("when")
        return await templating.run_bounded(
            lambda: bool(templating.evaluate(condition, context, where=where)), seconds=planned.step.timeout, where=where
        )

    async def _single(self, planned: PlannedStep, context: dict[str, Any]) -> Outcome:
        step = planned.step
        deadline = _deadline(step.timeout)
        request = await templating.run_bounded(
            lambda: request_for(planned, context, deadline), seconds=step.timeout, where=step.location
        )
        async with self._admitted(planned):
            return await self._perform(request)

    async def _fan_out(self, planned: PlannedStep, result: StepResult, context: dict[str, Any]) -> Outcome:
        """The step once per item, as many at once as the gate allows; outputs keep the items' order.

        Items already answered in an interrupted run (same item at the same place) are reused.
        After the first failed item no new item starts; those in flight finish and are journaled,
        so `--resume` sends only what never finished. With `continue_on_error` every item runs,
        and a failed item's output is null in the list, which the step's dependants still get.
        """
        step = planned.step
        keep_going = step.continue_on_error
        items = await templating.run_bounded(lambda: self._items(planned, context), seconds=step.timeout, where=step.where("for_each"))
        requests = await templating.run_bounded_each(
            lambda pair: request_for(planned, {**context, "item": pair[1], "index": pair[0]}, _deadline(step.timeout)),
            list(enumerate(items)),
            seconds=step.timeout,
        )
        earlier = self._reuse_items.get(step.id, {})
        outcomes: list[Outcome | None] = [None] * len(items)
        failure: list[tuple[int, Outcome]] = []
        done = 0
        for index, item in enumerate(items):
            previous = earlier.get(index)
            if previous is not None and previous.get("digest") == _digest(item):
                outcomes[index] = Outcome(output=previous.get("output"))
                done += 1
        pending = iter([i for i, o in enumerate(outcomes) if o is None])
        if done:
            self._show(replace(result, items_done=done, items_total=len(items)))

        async def worker() -> None:
            nonlocal done
            for index in pending:
                if failure and not keep_going:
                    return
                async with self._admitted(planned):
                    began = time.monotonic()
                    outcome = await self._perform(requests[index])
                    seconds = time.monotonic() - began
                if outcome.error is not None:
                    failure.append((index, outcome))
                    if keep_going:
                        continue
                    return
                outcomes[index] = outcome
                # Journaled as it finishes, so a resumed fan-out sends only the items that had not;
                # where and for how long it ran is the HTML report's timeline.
                self._journal(
                    "item_finished",
                    id=step.id,
                    index=index,
                    digest=_digest(items[index]),
                    output=outcome.output,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    cost=outcome.cost,
                    endpoints=list(outcome.endpoints),
                    seconds=seconds,
                )
                done += 1
                self._show(replace(result, items_done=done, items_total=len(items)))

        width = min(gate.size for gate in self._gates(planned))
        await asyncio.gather(*(worker() for _ in range(min(width, len(items)))))
        finished = [o for o in outcomes if o is not None]
        total = _total([*finished, *(o for _, o in failure)])
        if failure:
            index, outcome = min(failure, key=lambda f: f[0])
            total = replace(total, stdout=outcome.stdout, stderr=outcome.stderr)  # the first failed item's evidence
            if keep_going:
                error = f"{len(failure)} of {len(items)} items failed; item {index}: {outcome.error}"
                return replace(total, output=[o.output if o is not None else None for o in outcomes], error=error)
            return replace(total, output=None, error=f"item {index}: {outcome.error}", tries=outcome.tries)
        prompts = [p for o in finished for p in ([o.prompt] if isinstance(o.prompt, str) else o.prompt or [])]
        return replace(total, output=[o.output for o in finished], prompt=prompts or None)

    def _gates(self, planned: PlannedStep) -> tuple[_Gate, ...]:
        """What bounds this step's bodies: `max_parallel` when given, and for a model call its endpoints' room.

        Every step calling the same backend shares one room gate, so calls in flight never
        exceed what the endpoints take plus their waiting line: no step fails on the run's own
        backlog. Gates are taken in one order, `max_parallel` first, so two steps never wait on each other.
        """
        resolution = planned.resolution
        if resolution is None:
            return (self._others,)
        key = (resolution.target.backend, resolution.target.role)
        room = self._rooms.get(key) or self._rooms.setdefault(key, _Gate(self._room_of(resolution.target)))
        return (room,) if self._slots is None else (self._slots, room)

    def _room_of(self, target: Target) -> int:
        return (self._room(target) if self._room else None) or self._max_parallel or DEFAULT_PARALLEL

    @contextlib.asynccontextmanager
    async def _admitted(self, planned: PlannedStep) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as held:
            for gate in self._gates(planned):
                await held.enter_async_context(gate)
            yield

    async def _perform(self, request: StepRequest) -> Outcome:
        """One request, tried again while its outcome is `retryable` and `retry:` allows: one policy for every kind."""
        policy = RetrySettings(**{"attempts": 1, **request.retry})
        tries: list[dict[str, Any]] = []
        for attempt in range(1, policy.attempts + 1):
            outcome = await (self.runner.run(request) if request.travels else request.perform(self._here))
            if outcome.error is None or not outcome.retryable:
                break
            tries.append({"attempt": attempt, "error": outcome.error})
            if attempt < policy.attempts:
                await self._sleep(backoff.delay(attempt, policy, self._rng))
        if not tries:
            return outcome
        return replace(outcome, attempts=len(tries) + (outcome.error is None), tries=(*tries, *outcome.tries))

    def _items(self, planned: PlannedStep, context: dict[str, Any]) -> list[Any]:
        """The `for_each` items; renders templates, so it runs in a worker under `templating.run_bounded`."""
        step = planned.step
        source = step.for_each
        where = step.where("for_each")
        if isinstance(source, str):
            match = re.fullmatch(r"\s*\{\{(.*)\}\}\s*", source, re.S)
            # One expression gives a value as it is; any other text is rendered once. What a
            # command or a model produced is data: parsed as JSON or split in lines, never rendered.
            value: Any = templating.evaluate(match.group(1), context, where=where) if match else templating.render(source, context, where=where)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    value = [line for line in value.splitlines() if line.strip()]
        else:
            value = templating.render_value(source, context, where=where)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise InputError(f"for_each must give a list, got {type(value).__name__}", location=where)
        return list(value)


def _with(result: StepResult, outcome: Outcome) -> StepResult:
    """The step's record with what its body did laid over it; where the body says nothing, the plan's word stays."""
    return replace(
        result,
        output=outcome.output,
        error=outcome.error,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        backend=outcome.backend or result.backend,
        model=outcome.model or result.model,
        endpoint=outcome.endpoint,
        endpoints=list(outcome.endpoints),
        prompt=outcome.prompt,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        calls=outcome.calls,
        attempts=outcome.attempts,
        tries=list(outcome.tries),
        first_token=outcome.first_token,
        finish_reason=outcome.finish_reason,
        truncated=outcome.truncated,
        truncated_items=outcome.truncated_items,
        truncated_inputs=list(outcome.truncated_inputs),
        cost=outcome.cost,
        cached_calls=outcome.cached_calls,
        rate_waited=outcome.rate_waited,
    )


def _total(outcomes: list[Outcome]) -> Outcome:
    """A fan-out's items added up: tokens, calls and attempts summed; where, from the last item that said, and every endpoint any item used.

    Truncated when any item's answer was, with how many; its inputs cut where any item's were.
    The cost is unknown when any item's is.
    """
    last = next((o for o in reversed(outcomes) if o.endpoint or o.backend), Outcome())
    cut = [o for o in outcomes if o.truncated]
    return Outcome(
        backend=last.backend,
        model=last.model,
        endpoint=last.endpoint,
        endpoints=tuple(dict.fromkeys(url for o in outcomes for url in o.endpoints)),
        prompt_tokens=sum(o.prompt_tokens for o in outcomes),
        completion_tokens=sum(o.completion_tokens for o in outcomes),
        calls=sum(o.calls for o in outcomes),
        attempts=sum(o.attempts for o in outcomes),
        tries=tuple(t for o in outcomes for t in o.tries),
        first_token=next((o.first_token for o in outcomes if o.first_token is not None), None),
        finish_reason=cut[0].finish_reason if cut else last.finish_reason,
        truncated=bool(cut),
        truncated_items=len(cut),
        truncated_inputs=tuple(dict.fromkeys(name for o in outcomes for name in o.truncated_inputs)),
        cost=total_cost(o.cost for o in outcomes),
        cached_calls=sum(o.cached_calls for o in outcomes),
        rate_waited=sum(o.rate_waited for o in outcomes),
    )


def _deadline(timeout: float | None) -> float | None:
    """When a step's (or an item's) `timeout:` runs out: one figure covers rendering and the call."""
    return None if timeout is None else time.monotonic() + timeout


def _digest(item: Any) -> str:
    """Which item this was: a resumed fan-out reuses an answer only for the same item at the same place."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]
