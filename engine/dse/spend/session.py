"""One process's spend control for one run: its ledger, its cache and the caller that puts them in front of the router.

A `SpendPlan` is plain data, so a cluster worker builds the same session as the dse process:
its rows go to the same ledger file and its answers to the same cache (both under the state
directory, which a cluster's workers must share, as `local:N` workers on this machine do).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config.model import Config
from ..redact import Redactor
from ..routing import Router, Target
from ..workflow.steps.base import ChatCaller
from . import cache, ledger
from .control import CURRENT_STEP, Confirm, SpendControl


@dataclass(frozen=True)
class SpendPlan:
    """How a process accounts for a run's calls: where the ledger and cache live, the run, `--cache` and `--yes`."""

    state_dir: str
    run_id: str | None = None
    cache_mode: str | None = None
    assume_yes: bool = False
    cache: bool = False
    """Whether any call may use the response cache; when none can, its file is not even opened."""

    @staticmethod
    def uses_cache(targets: Iterable[Target], mode: str | None) -> bool:
        return mode not in (None, "off") or (mode is None and any(t.cache.mode != "off" for t in targets))


async def _yes(question: str) -> bool:
    return True


class SpendSession:
    """Opens both files or neither: a cache that cannot be opened closes the ledger again before its error goes up."""

    def __init__(self, plan: SpendPlan, config: Config, *, confirm: Confirm | None = None) -> None:
        state = Path(plan.state_dir)
        self.redactor = Redactor([secret.reveal() for secret in config.secrets])
        self.ledger = ledger.UsageLedger(state / ledger.FILE)
        try:
            self.cache = cache.ResponseCache(state / cache.FILE) if plan.cache else None
        except BaseException:
            self.ledger.close()
            raise
        self.control = SpendControl(
            config, self.ledger, run_id=plan.run_id, confirm=_yes if plan.assume_yes else confirm, redactor=self.redactor
        )
        self._mode = plan.cache_mode

    def caller(self, router: Router) -> ChatCaller:
        """The router, accounting through this session, behind the cache when there is one."""
        router.spend = self.control
        if self.cache is None:
            return router
        return cache.CachedCaller(router, self.cache, spend=self.control, mode=self._mode, redactor=self.redactor)

    def close(self) -> None:
        try:
            if self.cache is not None:
                self.cache.close()
        finally:
            self.ledger.close()


@contextlib.contextmanager
def accounted(router: Router, config: Config, state_dir: Path, command: str) -> Iterator[SpendSession]:
    """The router's calls for one command that is no workflow run (`dse bench`, `dse embed`) in the ledger and under the limits.

    They are recorded as run `COMMAND-TIME`, step `COMMAND`: a benchmark or an embedding of a
    paid API costs what any call costs, and `dse usage --by run` shows it.
    """
    session = SpendSession(SpendPlan(str(state_dir), run_id=f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"), config)
    step = CURRENT_STEP.set(command)
    router.spend = session.control
    try:
        yield session
    finally:
        router.spend = None
        CURRENT_STEP.reset(step)
        session.close()
