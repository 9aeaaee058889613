"""The seam between the scheduler and step bodies: a request goes in, an outcome comes out.

A request is plain, picklable data, rendered by the scheduler from its templates: it can be
performed in this process or shipped to a Dask worker, which performs it with its own model
caller. An outcome is a record of what happened; a body never touches the scheduler's state,
so where it ran makes no difference to the journal, resume or progress.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ...backends import ChatResponse, Message
from ...backends.types import ChatOptions, JsonOutput, StreamChunk
from ...routing import Target

if TYPE_CHECKING:
    from ..plan import Plan
    from ..results import RunResult

ChunkSink = Callable[[str, str], None]


class ChatCaller(Protocol):
    """What a model step needs from the router: a call, or a stream, with a retry override.

    `json_output` is passed only by steps that want JSON, so a caller for plain text may leave it
    out; `options` only by the gateway, whose clients send their own request fields.
    """

    async def chat(
        self,
        target: Target,
        messages: list[Message],
        *,
        retry: Mapping[str, Any] | None = None,
        json_output: JsonOutput | None = None,
        options: ChatOptions | None = None,
    ) -> ChatResponse: ...

    def stream(
        self,
        target: Target,
        messages: list[Message],
        *,
        retry: Mapping[str, Any] | None = None,
        json_output: JsonOutput | None = None,
        options: ChatOptions | None = None,
    ) -> AsyncIterator[StreamChunk]: ...


@dataclass(frozen=True)
class Services:
    """What a body may use where it runs: that process's model caller and environment, a sink for streamed text.

    `run_plan` exists only in the dse process: a sub-workflow schedules its own steps there.
    """

    caller: ChatCaller | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    on_chunk: ChunkSink = lambda step_id, text: None
    run_plan: Callable[[Plan, dict[str, Any]], Awaitable[RunResult]] | None = None


@dataclass(frozen=True)
class Outcome:
    """What one performance of a request did. `retryable` marks a failure that the step's `retry:` may try again.

    `truncated` says the answer stopped at its token limit (`finish_reason` "length"); for a
    fan-out, that some item's did, and `truncated_items` how many. `truncated_inputs` names
    the step inputs (`with.diff`, `prompt`) a template's `truncate` filter cut while rendering.
    `cost` is USD over every attempt (None: some price is unknown); `cached_calls` how many
    calls the response cache answered; `rate_waited` seconds spent waiting for rate-limit turns.
    `stdout` and `stderr` are a failed command's output, bounded: the evidence of why it failed.
    """

    output: Any = None
    error: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    retryable: bool = False
    prompt: str | list[str] | None = None
    backend: str | None = None
    model: str | None = None
    endpoint: str | None = None
    endpoints: tuple[str, ...] = ()
    """Every endpoint that answered a call of this performance, first use first."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    attempts: int = 0
    tries: tuple[dict[str, Any], ...] = ()
    first_token: float | None = None
    finish_reason: str | None = None
    truncated: bool = False
    truncated_items: int = 0
    truncated_inputs: tuple[str, ...] = ()
    cost: float | None = 0.0
    cached_calls: int = 0
    rate_waited: float = 0.0


def total_cost(costs: Iterable[float | None]) -> float | None:
    """USD added up; unknown when any part is: a report never shows an unknown price as free."""
    total = 0.0
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total


class StepRequest(Protocol):
    """A rendered step, ready to perform. `travels` says whether it may run on another machine."""

    @property
    def travels(self) -> bool: ...

    @property
    def step_id(self) -> str: ...

    @property
    def retry(self) -> Mapping[str, Any]: ...

    async def perform(self, services: Services) -> Outcome: ...
