"""Step kinds: each renders its request in the scheduler and performs it wherever the runner sends it.

Adding a kind is one module here and one row in `_RENDERERS`; the scheduler does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..plan import PlannedStep
from .base import ChatCaller, ChunkSink, Outcome, Services, StepRequest, total_cost
from .command import Command, command
from .json_answer import OutputNotJson
from .model_call import ModelCall, model_call
from .subworkflow import SubWorkflow, subworkflow

_RENDERERS: dict[str, Callable[[PlannedStep, Mapping[str, Any], float | None], StepRequest]] = {
    "llm": model_call,
    "run": command,
    "workflow": subworkflow,
}


def request_for(planned: PlannedStep, context: Mapping[str, Any], deadline: float | None) -> StepRequest:
    """The rendered request of one step (or one fan-out item), due by `deadline` (`time.monotonic()`).

    Renders templates, so it runs under `templating.run_bounded`.
    """
    return _RENDERERS[planned.step.kind](planned, context, deadline)


__all__ = [
    "ChatCaller",
    "ChunkSink",
    "Command",
    "ModelCall",
    "Outcome",
    "OutputNotJson",
    "Services",
    "StepRequest",
    "SubWorkflow",
    "request_for",
    "total_cost",
]
