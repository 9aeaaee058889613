"""Workflows: the model, the DAG, templating, planning, the scheduler and its step kinds.

Names are imported on first use: reading a run's journal back (`dse show`) must not pay for
networkx, Jinja and the config loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dag import build_dag as build_dag
    from .inputs import bind_inputs as bind_inputs
    from .model import Step as Step, Workflow as Workflow, load_workflow as load_workflow
    from .plan import Plan as Plan, PlannedStep as PlannedStep, build_plan as build_plan
    from .results import RunResult as RunResult, StepResult as StepResult
    from .scheduler import Scheduler as Scheduler

_LAZY = {
    "build_dag": "dag",
    "bind_inputs": "inputs",
    "Step": "model",
    "Workflow": "model",
    "load_workflow": "model",
    "Plan": "plan",
    "PlannedStep": "plan",
    "build_plan": "plan",
    "RunResult": "results",
    "StepResult": "results",
    "Scheduler": "scheduler",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
