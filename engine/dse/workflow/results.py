"""What a run did, step by step: the records the journal, `dse show` and the progress view read.

Kept apart from the scheduler so that reading a journal back imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

WAITING, RUNNING, DONE, SKIPPED, FAILED = "waiting", "running", "done", "skipped", "failed"
DEPENDENCY_FAILED = "dependency failed"
TOLERATED = "tolerated"
"""Not a status (a tolerated step's status stays `failed`, as templates read it): how reports name its state."""


@dataclass(frozen=True)
class StepResult:
    """What happened to one step: the journal, `dse show` and the progress view read these.

    `truncated` marks an answer that stopped at its token limit (for a fan-out: `truncated_items`
    of its items did); `truncated_inputs` names inputs a `truncate` filter cut on the way in.
    `cost` is USD (None: a price is unknown), `cached_calls` the calls the response cache
    answered, `rate_waited` the seconds its calls waited for their rate-limit turn.

    `tolerated` marks a failure the step was allowed (`continue_on_error`): its status stays
    `failed`, which templates read (`steps.x.status == 'failed'`), while the run goes on and is
    reported done. `stdout` and `stderr` keep a failed command's evidence, bounded (see
    `steps.command.kept`), for the journal and `dse show`.
    """

    id: str
    kind: str
    status: str = WAITING
    output: Any = None
    error: str | None = None
    tolerated: bool = False
    stdout: str | None = None
    stderr: str | None = None
    backend: str | None = None
    model: str | None = None
    endpoint: str | None = None
    endpoints: list[str] = field(default_factory=list)
    """Every endpoint that answered one of the step's calls, first use first (`endpoint` is the last one's)."""
    prompt: str | list[str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token: float | None = None
    items_done: int = 0
    items_total: int | None = None
    calls: int = 0
    attempts: int = 0
    tries: list[dict[str, Any]] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    reused: bool = False
    finish_reason: str | None = None
    truncated: bool = False
    truncated_items: int = 0
    truncated_inputs: list[str] = field(default_factory=list)
    cost: float | None = 0.0
    cached_calls: int = 0
    rate_waited: float = 0.0

    def context(self) -> dict[str, Any]:
        """How later templates see this step: `steps.<id>.output`, `.status`, `.error`."""
        return {"output": self.output, "status": self.status, "error": self.error}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StepResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class RunResult:
    workflow: str
    status: str
    steps: dict[str, StepResult]
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    run_id: str | None = None
