"""What the router asks before and after every attempt: may it go, when, and what did it cost.

Before: the user's yes where `require_confirmation` asks for it (once per run), the
backend's `rate_limit` turn, its daily request count, and the budgets, checked against the
ledger in the same transaction that writes the attempt's pending row. After: the row is
settled with the tokens the server counted and their cost. A call refused here is never sent.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from ..backends import ChatRequest
from ..backends.types import Usage
from ..config.model import BackendConfig, Config, Price
from ..errors import BackendLimitReached, NotConfirmed, SpendRefused
from ..redact import Redactor
from ..routing.catalog import lookup
from ..routing.target import Target
from . import budget, prices
from .ledger import FAILED, INTERRUPTED, OK, Ended, UsageLedger, today
from .rate import Pace

CURRENT_STEP: ContextVar[str | None] = ContextVar("dse_current_step", default=None)
"""The step whose body is running: set by the step, read when its calls are written to the ledger."""

Confirm = Callable[[str], Awaitable[bool]]
"""Asks the user a question and says whether they said yes."""


@dataclass
class Ticket:
    """An admitted attempt: its pending row, its price, how long it waited its turn, and (once settled) its cost."""

    row: int | None
    price: Price | None
    started: float
    queued: float
    backend: str
    model: str
    step_id: str | None
    cost: float | None = None
    settled: bool = False


class SpendControl:
    """One per run (per worker process on a cluster); `ledger` None keeps no rows and checks no budget."""

    def __init__(
        self,
        config: Config,
        ledger: UsageLedger | None = None,
        *,
        run_id: str | None = None,
        confirm: Confirm | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        redactor: Redactor = Redactor(),
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.run_id = run_id
        self._confirm = confirm
        self._confirmed = False
        self._declined: str | None = None
        """Why the user's no stopped the run: a call that was waiting behind the question is refused with it, not asked again."""
        self._asking = asyncio.Lock()
        self._sleep = sleep
        self._clock = clock
        self._redactor = redactor
        self._paces: dict[str, Pace] = {}
        self._windows: dict[tuple[str, str], int] = {}
        self._prices: dict[tuple[str, str], Price | None] = {}
        self._endpoints: dict[str, str] = {}

    async def admit(self, target: Target, request: ChatRequest, *, waiting: Callable[[float], None] | None = None) -> Ticket:
        """Wait for the call's turn and let it go, or raise SpendRefused / NotConfirmed; nothing is sent until this returns.

        `waiting` is told how long the call will wait for its rate-limit turn, before the wait, when it must wait at all.
        """
        backend = self._backend(target.backend)
        price = self._price(backend, target.model)
        prompt = budget.prompt_tokens(request.messages)
        output = request.max_tokens or self._window(backend, target.model)
        tokens = prompt + output
        worst = prices.cost(price, Usage(prompt, output))
        described = f"{backend.name} {target.model}"
        await self._confirmation(backend, tokens, worst, described)
        queued = 0.0
        if backend.rate_limit is not None:
            pace = self._paces.get(backend.name) or self._paces.setdefault(backend.name, Pace(backend.rate_limit, self._clock))
            queued = pace.reserve(tokens)
            if queued > 0:
                if waiting is not None:
                    waiting(queued)
                await self._sleep(queued)
        step = CURRENT_STEP.get()
        row = self._admitted(backend, target.model, worst, described, queued, step) if self._limited(backend) else None
        return Ticket(row, price, time.perf_counter(), queued, backend.name, target.model, step)

    def _limited(self, backend: BackendConfig) -> bool:
        """Whether a limit counts this backend's calls while they are in flight: then the row is written before the call."""
        rpd = backend.rate_limit is not None and backend.rate_limit.rpd is not None
        return self.ledger is not None and (self.config.budget is not None or backend.budget is not None or rpd)

    def _price(self, backend: BackendConfig, model: str) -> Price | None:
        """The model's price on this backend, looked up once: the config does not change under a run."""
        key = (backend.name, model)
        if key not in self._prices:
            self._prices[key] = prices.price_of(self.config, backend, model)
        return self._prices[key]

    def _window(self, backend: BackendConfig, model: str) -> int:
        """The most a call with no `max_tokens` can answer: the model's context window, looked up once."""
        key = (backend.type, model)
        if key not in self._windows:
            self._windows[key] = lookup(model, backend.type, self.config.selector.models).context_window
        return self._windows[key]

    def _admitted(self, backend: BackendConfig, model: str, worst: float | None, described: str, queued: float, step: str | None) -> int:
        """The daily request limit and the budgets, read and the pending row written in one transaction."""
        assert self.ledger is not None
        with self.ledger.admitting() as ledger:
            day = today()
            limit = backend.rate_limit.rpd if backend.rate_limit else None
            if limit is not None and ledger.spent(day=day, backend=backend.name).calls >= limit:
                raise BackendLimitReached(
                    f"llm.{backend.name}.rate_limit.rpd is {limit}: {backend.name} has had {limit} calls today ({day})",
                    backend=backend.name,
                    hint="the count starts again at midnight; raise rpd, or list a backend in llm.fallback_backends to take the call",
                )
            for only, refused in ((None, SpendRefused), (backend.name, BackendLimitReached)):
                reason = budget.refusal(self._limits(backend, day, only), worst, described) if worst != 0 else None
                if reason is not None:
                    raise refused(f"budget: {reason}", hint=_budget_hint(backend, model, worst))
            return ledger.begin(run_id=self.run_id, step_id=step, backend=backend.name, model=model, reserved=worst, rate_wait=queued)

    def _limits(self, backend: BackendConfig, day: str, only: str | None) -> list[budget.Limit]:
        """The limits of every backend together (`only` None: `llm.budget`), or of this backend alone (its `budget:`)."""
        assert self.ledger is not None
        owner, where = (self.config.budget, "llm.budget") if only is None else (backend.budget, f"llm.{backend.name}.budget")
        out: list[budget.Limit] = []
        if owner is not None:
            if owner.per_run is not None:
                spent = self.ledger.spent(run_id=self.run_id or "", backend=only).usd
                out.append(budget.Limit(f"{where}.per_run", owner.per_run, spent))
            if owner.per_day is not None:
                out.append(budget.Limit(f"{where}.per_day", owner.per_day, self.ledger.spent(day=day, backend=only).usd))
        return out

    async def _confirmation(self, backend: BackendConfig, tokens: int, worst: float | None, described: str) -> None:
        threshold = backend.confirm_above if backend.confirm_above is not None else self.config.confirm_above
        if threshold is None or tokens <= threshold or self._confirmed:
            return
        key = f"llm.{backend.name}.require_confirmation" if backend.confirm_above is not None else "llm.require_confirmation"
        cost = "price unknown" if worst is None else f"up to ${worst:.4f}"
        question = f"A call to {described} is estimated at {tokens} tokens ({cost}), above {key}.above_tokens = {threshold}."
        async with self._asking:
            if self._confirmed:
                return
            if self._declined is not None:
                raise NotConfirmed(self._declined)
            if self._confirm is None:
                raise NotConfirmed(question + " The run stopped before sending it.", hint="run again with --yes to accept, or on a terminal to be asked")
            if not await self._confirm(question):
                self._declined = question + " You said no; the run stopped before sending it."
                raise NotConfirmed(self._declined)
            self._confirmed = True

    def settle(self, ticket: Ticket | None, *, endpoint: str | None, usage: Usage | None, error: BaseException | None) -> float | None:
        """Write how the attempt ended; returns its cost (None: price unknown). Only the first settling counts."""
        if ticket is None:
            return 0.0
        if ticket.settled:
            return ticket.cost
        ticket.settled = True
        # An answer whose server never said what it used (a stream without usage) cost something
        # unknown on a paid model, not nothing; a failed call that reported nothing is billed nothing.
        said = usage is not None or error is not None or _free(ticket.price)
        usage = usage or Usage()
        ticket.cost = prices.cost(ticket.price, usage) if said else None
        if self.ledger is None:
            return ticket.cost
        ended = Ended(
            endpoint=self._endpoint(endpoint) if endpoint else endpoint,
            outcome=OK if error is None else FAILED if isinstance(error, Exception) else INTERRUPTED,
            error_kind=type(error).__name__ if error is not None else None,
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            latency=time.perf_counter() - ticket.started,
            cost=ticket.cost,
        )
        if ticket.row is not None:
            self.ledger.settle(ticket.row, ended)
        else:
            self.ledger.record(
                run_id=self.run_id, step_id=ticket.step_id, backend=ticket.backend, model=ticket.model, rate_wait=ticket.queued, ended=ended
            )
        return ticket.cost

    def _endpoint(self, url: str) -> str:
        """An endpoint as the ledger keeps it: scrubbed of secrets and of a password written into the URL; worked out once per URL."""
        if url not in self._endpoints:
            self._endpoints[url] = re.sub(r"//[^/@]*@", "//", self._redactor.text(url), count=1)
        return self._endpoints[url]

    def cache_hit(self, target: Target) -> None:
        if self.ledger is not None:
            self.ledger.cache_hit(run_id=self.run_id, step_id=CURRENT_STEP.get(), backend=target.backend, model=target.model)

    def _backend(self, name: str) -> BackendConfig:
        backend = self.config.find_backend(name)
        assert backend is not None, f"the router resolved {name!r}, so the config has it"
        return backend


def _budget_hint(backend: BackendConfig, model: str, worst: float | None) -> str:
    """What lets the call go: a price for a model that has none, else more room or a cheaper call."""
    if worst is None:
        return (
            f"add its price (USD per million tokens) to the config: pricing: {{'{model}': {{input: USD, output: USD}}}}"
            f", at the top level or under llm.{backend.name}"
        )
    return "raise the limit in the config, lower max_tokens, or use a cheaper model"


def _free(price: Price | None) -> bool:
    return price is not None and price.input == 0 and price.output == 0
