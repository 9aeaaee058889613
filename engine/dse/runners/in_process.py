"""Bodies on this process's event loop, with this process's router: the default runner."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..workflow.steps import ChatCaller, ChunkSink, Outcome, Services, StepRequest


class InProcessRunner:
    def __init__(self, caller: ChatCaller, *, on_chunk: ChunkSink | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.services = Services(
            caller=caller, environ=os.environ if environ is None else environ, on_chunk=on_chunk or (lambda step_id, text: None)
        )

    async def run(self, request: StepRequest) -> Outcome:
        return await request.perform(self.services)

    async def served(self) -> None:
        return None
