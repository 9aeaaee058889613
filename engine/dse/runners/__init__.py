"""Where step bodies run: in this process, or on a Dask cluster (`dse run --cluster`).

A runner takes a rendered request and returns its outcome; the scheduler never learns which
runner it has. Adding one touches no scheduler code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .in_process import InProcessRunner

if TYPE_CHECKING:
    from ..workflow.steps import Outcome, StepRequest


class StepRunner(Protocol):
    async def run(self, request: StepRequest) -> Outcome: ...


__all__ = ["InProcessRunner", "StepRunner"]
