"""Workflows: the model, the DAG, templating, planning and the executor."""

from .dag import build_dag
from .executor import Executor, RunResult, StepResult
from .inputs import bind_inputs
from .model import Step, Workflow, load_workflow
from .plan import Plan, PlannedStep, build_plan

__all__ = [
    "Executor",
    "Plan",
    "PlannedStep",
    "RunResult",
    "Step",
    "StepResult",
    "Workflow",
    "bind_inputs",
    "build_dag",
    "build_plan",
    "load_workflow",
]
