"""Workflows: the model, the DAG, templating, planning, the scheduler and its step kinds."""

from .dag import build_dag
from .scheduler import RunResult, Scheduler, StepResult
from .inputs import bind_inputs
from .model import Step, Workflow, load_workflow
from .plan import Plan, PlannedStep, build_plan

__all__ = [
    "Plan",
    "PlannedStep",
    "RunResult",
    "Scheduler",
    "Step",
    "StepResult",
    "Workflow",
    "bind_inputs",
    "build_dag",
    "build_plan",
    "load_workflow",
]
