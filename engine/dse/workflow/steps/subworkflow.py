"""A `workflow:` step: a child plan scheduled in the dse process, its own steps going wherever the run sends bodies.

It does not travel: shipping a whole scheduler to a worker would hide its steps from the run's
runner (and from the cluster-wide endpoint limits). Its model calls and commands are requests
like any other, so on a cluster they run on the workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import templating
from ..inputs import bind_inputs
from ..plan import Plan, PlannedStep
from .base import Outcome, Services, total_cost


@dataclass(frozen=True)
class SubWorkflow:
    travels: ClassVar[bool] = False
    step_id: str
    plan: Plan
    inputs: Mapping[str, Any]
    retry: Mapping[str, Any] = field(default_factory=dict)

    async def perform(self, services: Services) -> Outcome:
        assert services.run_plan is not None, "a sub-workflow is scheduled in the dse process"
        outcome = await services.run_plan(self.plan, dict(self.inputs))
        steps = outcome.steps.values()
        spent = Outcome(
            prompt_tokens=sum(s.prompt_tokens for s in steps),
            completion_tokens=sum(s.completion_tokens for s in steps),
            cost=total_cost(s.cost for s in steps),
            cached_calls=sum(s.cached_calls for s in steps),
            rate_waited=sum(s.rate_waited for s in steps),
        )
        if outcome.status != "done":
            failed = [f"{s.id}: {s.error}" for s in steps if s.status == "failed" and not s.tolerated]
            return replace(spent, error=f"sub-workflow {Path(self.plan.workflow.path).name} failed ({'; '.join(failed)})")
        return replace(spent, output=outcome.outputs)


def subworkflow(planned: PlannedStep, context: Mapping[str, Any], deadline: float | None) -> SubWorkflow:
    """The request for a `workflow:` step: its inputs rendered and bound; runs under `templating.run_bounded`."""
    assert planned.subplan is not None
    step = planned.step
    given = templating.render_value(dict(step.with_), context, where=step.where("with"))
    return SubWorkflow(step.id, planned.subplan, bind_inputs(planned.subplan.workflow, given), dict(step.retry))
