"""The gateway's one job, whatever protocol a request came in: resolve its model, send it, say what served it.

It is the workflow engine's path without the workflow: the same resolver picks the target,
the same caller (the router behind spend control and the response cache) sends it, so a
gateway call is retried, fallen back, balanced, budgeted, rate-limited, cached and written to
the usage ledger exactly as a step's call is.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from ..backends._fields import asked_fields
from ..backends.registry import TEMPERATURE, backend_type
from ..backends.types import ChatRequest, ChatResponse, EmbedResponse, StreamChunk
from ..config.model import Config
from ..errors import DseError
from ..redact import Redactor
from ..routing import Router, Target
from ..workflow.steps.base import ChatCaller
from .call import ChatCall
from .health import HealthWatch
from .metrics import Metrics
from .names import ModelNames
from .problems import Problem, from_error, invalid


@dataclass(frozen=True)
class Opened:
    """A stream whose first chunk has arrived: its route is settled, so headers can go out."""

    target: Target
    first: StreamChunk
    rest: AsyncIterator[StreamChunk]


class Gateway:
    def __init__(
        self, config: Config, router: Router, caller: ChatCaller, redactor: Redactor, health: HealthWatch, metrics: Metrics
    ) -> None:
        self.config = config
        self.router = router
        self.caller = caller
        self.redactor = redactor
        self.health = health
        self.metrics = metrics
        self.names = ModelNames(config, router.resolver)
        self.streams_end_by = math.inf
        """Monotonic time by which open streams must end: set when the server begins to drain."""

    def target(self, call: ChatCall, directives: bool) -> Target:
        """The call's target: its model name resolved, its temperature and max_tokens laid over the config's.

        The client's messages are never rewritten. Where directives are on, the last user
        message may retarget the call, and is still sent as the client wrote it.
        """
        text = None
        if directives or self.config.serve.directives:
            text = next((m.content for m in reversed(call.messages) if m.role == "user"), "")
        target = self.names.target(call.model, text)
        if call.temperature is not None:
            target = replace(target, temperature=call.temperature)
        if call.max_tokens is not None:
            target = replace(target, max_tokens=call.max_tokens)
        self._check_fields(target, call)
        return target

    def _check_fields(self, target: Target, call: ChatCall) -> None:
        """A field the target's backend type cannot take is a 400 now, naming the field, not dropped on the way."""
        asked = asked_fields(call.options.apply(ChatRequest(target.wire_model, call.messages))) | (
            {TEMPERATURE} if call.temperature is not None else set()
        )
        for name in sorted(asked - backend_type(target.backend_type).request_fields):
            raise invalid(
                f"{name} is not supported by backend {target.backend!r} (type {target.backend_type}), where model "
                f"{call.model!r} goes; remove it, or ask for a model on a backend that takes it",
                name,
            )

    def problem(self, error: DseError) -> Problem:
        """An engine error as the client sees it, with no secret in its message."""
        problem = from_error(error)
        problem.message = self.redactor.text(problem.message)
        return problem

    async def chat(self, call: ChatCall, directives: bool) -> tuple[Target, ChatResponse]:
        target = self.target(call, directives)
        try:
            response = await self.caller.chat(target, list(call.messages), json_output=call.json_output, options=call.options)
        except DseError as exc:
            raise self.problem(exc) from None
        return target, response

    async def open_stream(self, call: ChatCall, directives: bool) -> Opened:
        """Route the stream up to its first chunk: a failure before it is an HTTP error, not a broken stream."""
        target = self.target(call, directives)
        chunks = aiter(self.caller.stream(target, list(call.messages), json_output=call.json_output, options=call.options))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = StreamChunk("", finish_reason="stop")
        except DseError as exc:
            raise self.problem(exc) from None
        return Opened(target, first, chunks)

    async def embed(self, model: str, texts: Sequence[str]) -> tuple[Target, EmbedResponse]:
        target = self.names.embedding_target(model)
        try:
            return target, await self.router.embed(target, texts)
        except DseError as exc:
            raise self.problem(exc) from None

    def served_name(self, target: Target, backend: str | None) -> str:
        """`backend:model` of what answered: the target's, or the fallback's model for the same role."""
        if backend is None or backend == target.backend:
            return f"{target.backend}:{target.model}"
        try:
            return f"{backend}:{self.router.resolver.retarget(target, backend).model}"
        except DseError:
            return backend
