"""A model step: its messages rendered by the scheduler, the call (and one JSON repair) performed where it runs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from ... import user_schema
from ...backends import Message
from ...backends.types import LENGTH, Attempt, JsonOutput, StreamChunk
from ...errors import DseError, InputError, Location
from ...routing import Target
from ...spend.control import CURRENT_STEP
from .. import templating
from ..plan import PlannedStep
from ..template_env import noting_cuts
from .base import ChatCaller, ChunkSink, Outcome, Services, total_cost
from .json_answer import OutputNotJson, parse_json


@dataclass(frozen=True)
class ModelCall:
    travels: ClassVar[bool] = True
    step_id: str
    target: Target
    messages: tuple[Message, ...]
    retry: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    want_json: bool = False
    schema: Mapping[str, Any] | None = None
    truncated_inputs: tuple[str, ...] = ()

    async def perform(self, services: Services) -> Outcome:
        """The call; if JSON was asked for and the answer is not, one more call that shows the model its mistake.

        JSON is also asked of the server, as a constraint (a schema, or any JSON) where its
        backend type can hold an answer to one; the check and the one repair stay for the rest.
        Retries belong to the router (one retry layer), so a failure here is final: not `retryable`.
        """
        caller = services.caller
        assert caller is not None, "a model call needs a caller where it runs"
        start = Outcome(prompt=self.messages[-1].content, backend=self.target.backend, model=self.target.model, truncated_inputs=self.truncated_inputs)
        tally = _Tally(caller, services.on_chunk, self, start)
        messages = list(self.messages)
        step = CURRENT_STEP.set(self.step_id)
        try:
            text = await tally.complete(messages, stream=self.stream)
            if not self.want_json:
                return tally.outcome(output=text)
            try:
                return tally.outcome(output=parse_json(text, self.schema))
            except OutputNotJson as first:
                messages += [
                    Message("assistant", text),
                    Message("user", f"That was not valid JSON ({first}). Reply with the JSON only, nothing else."),
                ]
                return tally.outcome(output=parse_json(await tally.complete(messages, stream=False), self.schema))
        except DseError as exc:
            if exc.stops_run:
                raise
            return tally.failed(exc)
        finally:
            CURRENT_STEP.reset(step)


@dataclass
class _Tally:
    """What the calls of one performance added up to, kept as the Outcome it will become; private to `perform`."""

    caller: ChatCaller
    on_chunk: ChunkSink
    call: ModelCall
    so_far: Outcome

    def outcome(self, *, output: Any = None, error: str | None = None) -> Outcome:
        return replace(self.so_far, output=output, error=error)

    def failed(self, exc: DseError) -> Outcome:
        attempts = getattr(exc, "attempts", ())
        self.so_far = replace(
            self.so_far,
            tries=(*self.so_far.tries, *map(asdict, attempts)),
            attempts=max(self.so_far.attempts, len(attempts)),
            **_spent(self.so_far, attempts, cached=False),
        )
        return self.outcome(error=str(exc))

    async def complete(self, messages: list[Message], *, stream: bool) -> str:
        """One call; the finish reason of the last call is the step's, since its answer is the output."""
        caller, call, done = self.caller, self.call, self.so_far
        retry = dict(call.retry) or None
        # Passed only when JSON is wanted: a caller of plain text need not know the keyword.
        constraint: dict[str, Any] = {"json_output": JsonOutput.named(call.step_id, call.schema)} if call.want_json else {}
        if stream:
            parts: list[str] = []
            closing: StreamChunk | None = None
            first_token, prompt_tokens, completion_tokens = done.first_token, done.prompt_tokens, done.completion_tokens
            async for chunk in caller.stream(call.target, messages, retry=retry, **constraint):
                parts.append(chunk.text)
                if chunk.text:
                    first_token = chunk.elapsed if first_token is None else first_token
                    self.on_chunk(call.step_id, chunk.text)
                if chunk.usage is not None:
                    prompt_tokens += chunk.usage.prompt_tokens
                    completion_tokens += chunk.usage.completion_tokens
                if chunk.finish_reason is not None:
                    closing = chunk
            attempts = closing.attempts if closing is not None else ()
            self.so_far = replace(
                done,
                backend=(closing.backend if closing else None) or call.target.backend,
                model=call.target.model,
                endpoint=closing.endpoint if closing else done.endpoint,
                endpoints=_used(done, closing.endpoint if closing else None),
                first_token=first_token,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                calls=done.calls + 1,
                attempts=done.attempts + max(len(attempts), 1),
                tries=(*done.tries, *(asdict(t) for t in attempts if t.error)),
                finish_reason=closing.finish_reason if closing else None,
                truncated=closing is not None and closing.finish_reason == LENGTH,
                **_spent(done, attempts, cached=closing is not None and closing.cached),
            )
            return "".join(parts).strip()
        response = await caller.chat(call.target, messages, retry=retry, **constraint)
        self.so_far = replace(
            done,
            backend=response.backend,
            model=response.model,
            endpoint=response.endpoint,
            endpoints=_used(done, response.endpoint),
            prompt_tokens=done.prompt_tokens + response.usage.prompt_tokens,
            completion_tokens=done.completion_tokens + response.usage.completion_tokens,
            calls=done.calls + 1,
            attempts=done.attempts + (len(response.attempts) or 1),
            tries=(*done.tries, *(asdict(t) for t in response.attempts if t.error)),
            finish_reason=response.finish_reason,
            truncated=response.finish_reason == LENGTH,
            **_spent(done, response.attempts, cached=response.cached),
        )
        return response.text.strip()


def _used(done: Outcome, endpoint: str | None) -> tuple[str, ...]:
    """The endpoints that answered so far, with this call's added once."""
    return tuple(dict.fromkeys([*done.endpoints, *([endpoint] if endpoint else [])]))


def _spent(done: Outcome, attempts: Sequence[Attempt], *, cached: bool) -> dict[str, Any]:
    """What a call's attempts add to the outcome's cost, cache count and rate-limit waiting."""
    return {
        "cost": total_cost([done.cost, *(a.cost for a in attempts)]),
        "cached_calls": done.cached_calls + cached,
        "rate_waited": done.rate_waited + sum(a.queued for a in attempts),
    }


def model_call(planned: PlannedStep, context: Mapping[str, Any], deadline: float | None) -> ModelCall:
    """The request for one model call; the call gets what rendering left of the step's `timeout:`."""
    step, resolution = planned.step, planned.resolution
    assert resolution is not None
    rendered, cut = _messages(planned, context)
    target = resolution.target
    if deadline is not None:
        target = replace(target, timeout=max(deadline - time.monotonic(), 0.001))
    # A tool's `output_schema` (DiSE) asks for JSON as a step's `output: json` does.
    schema = step.output_schema or (planned.tool.output_schema if planned.tool else None)
    return ModelCall(
        step_id=step.id,
        target=target,
        messages=tuple(rendered),
        retry=dict(step.retry),
        stream=step.stream,
        want_json=step.output == "json" or schema is not None,
        schema=schema,
        truncated_inputs=tuple(cut),
    )


def _messages(planned: PlannedStep, context: Mapping[str, Any]) -> tuple[list[Message], list[str]]:
    """The messages, and which inputs (`with.KEY`, `system`, `prompt`) a `truncate` filter cut while rendering them."""
    step, tool = planned.step, planned.tool
    cut: list[str] = []
    given: dict[str, Any] = {}
    for key, value in step.with_.items():
        with noting_cuts() as cuts:
            given[key] = templating.render_value(value, context, where=step.where("with"))
        cut += [f"with.{key}"] if cuts else []
    if tool is not None and tool.input_schema is not None:
        _check_input(given, tool.input_schema, tool.name, step.where("with"))
    local = {**context, **given}
    messages = []
    system = step.system if step.system is not None else (tool.system if tool else None)
    if system:
        with noting_cuts() as cuts:
            messages.append(Message("system", templating.render(system, local, where=_template_where(planned, "system"))))
        cut += ["system"] if cuts else []
    with noting_cuts() as cuts:
        prompt = templating.render(planned.prompt_template or "", local, where=_template_where(planned, "prompt"))
    cut += ["prompt"] if cuts else []
    return [*messages, Message("user", prompt)], cut


def _template_where(planned: PlannedStep, key: str) -> Location:
    """Where a prompt or system template was written: the step's own key, or the tool that supplied it."""
    tool = planned.tool
    if getattr(planned.step, key) is None and tool is not None and tool.location is not None:
        return tool.location
    return planned.step.where(key)


def _check_input(given: Mapping[str, Any], schema: Mapping[str, Any], tool: str, where: Location | None) -> None:
    """A tool's `input_schema` (DiSE) is checked against what the step passes it, after rendering."""
    errors = sorted(user_schema.validator(schema).iter_errors(dict(given)), key=lambda e: list(map(str, e.path)))
    if errors:
        at = ".".join(map(str, errors[0].path)) or "with"
        raise InputError(f"step input {at} does not match tool {tool!r}'s input_schema: {errors[0].message}", location=where)
