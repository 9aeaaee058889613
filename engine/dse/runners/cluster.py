"""Step bodies on a Dask cluster: `dse run --cluster ADDRESS` or `--cluster local:N`.

The scheduler, journal, resume, retries of commands and progress stay in the dse process; a
rendered request is submitted as an impure task (a sampled answer is never deduplicated) and
its outcome comes back. Each worker builds its own router from the config, which travels as
plain data in a worker plugin (clients and connections are never pickled). An endpoint's
capacity holds across the cluster: every worker's router passes one `distributed.Semaphore`
per endpoint, so ten workers never send ten times `max_concurrency` to one server.

A worker lost mid-run: Dask runs its tasks again on another worker, and since only the dse
process journals, each step and item is recorded exactly once. The endpoint places the lost
worker held come back when their leases time out (`LEASE_TIMEOUT`, checked as often as the
scheduler's `distributed.scheduler.locks.lease-validation-interval`; `local:N` checks every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import dask
import distributed

from ..errors import SetupError
from ..workflow.steps import ChatCaller, Outcome, Services, StepRequest
from . import local_workers

if TYPE_CHECKING:
    from ..config import Config
    from ..routing import Router
    from ..spend import SpendPlan, SpendSession

_PLUGIN = "dse"
BODIES_PER_WORKER = 64
"""Step bodies a `local:N` worker runs at once. They wait on the network, not the CPU, and Dask
runs at most `nthreads` tasks per worker even when they are coroutines: start a remote worker
with `--nthreads` as high. Endpoint capacity, not this, is what bounds the calls."""
LEASE_TIMEOUT = 10.0
"""Seconds after which an endpoint place of a worker that stopped refreshing it (it died) is free again."""


class ClusterRunner:
    """Submits each request to the cluster and awaits its outcome; requests that do not travel run here."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def run(self, request: StepRequest) -> Outcome:
        try:
            outcome: Outcome = await self.client.submit(_perform, request, pure=False)
        except Exception as exc:  # the cluster gave up on the task (e.g. it killed too many workers)
            return Outcome(error=f"the cluster could not run it: {type(exc).__name__}: {exc}", retryable=True)
        return outcome

    async def served(self) -> dict[str, dict[str, int]]:
        """Every worker's calls per endpoint, added up (a worker lost mid-run took its count with it)."""
        total: dict[str, dict[str, int]] = {}
        for counts in (await self.client.run(_served)).values():
            for backend, endpoints in counts.items():
                mine = total.setdefault(backend, {})
                for url, calls in endpoints.items():
                    mine[url] = mine.get(url, 0) + calls
        return total


@contextlib.asynccontextmanager
async def cluster_runner(
    spec: str, config: Config, managed: Mapping[str, tuple[str, ...]], spend: SpendPlan
) -> AsyncIterator[ClusterRunner]:
    """A runner on the cluster `spec` names (checked by `runners.check_cluster`); `local:N` is started here and stopped on the way out."""
    workers = local_workers(spec)
    async with contextlib.AsyncExitStack() as stack:
        if workers is not None:
            stack.enter_context(dask.config.set({"distributed.scheduler.locks.lease-validation-interval": "1s"}))
            cluster = await stack.enter_async_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=BODIES_PER_WORKER,
                    processes=True,
                    asynchronous=True,
                    dashboard_address=None,
                    worker_dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            address: Any = cluster
        else:
            address = spec
        try:
            client = await stack.enter_async_context(distributed.Client(address, asynchronous=True, timeout="10s"))
        except OSError as exc:
            raise SetupError(f"cannot reach the Dask scheduler at {spec}: {exc}", hint="is `dask scheduler` running there?") from None
        await client.register_plugin(DseWorker(config, dict(managed), spend), name=_PLUGIN)
        yield ClusterRunner(client)


class DseWorker(distributed.WorkerPlugin):
    """Lives on each worker: the config as data, and the router built from it on first use, on the worker's loop."""

    def __init__(self, config: Config, managed: dict[str, tuple[str, ...]], spend: SpendPlan) -> None:
        self.config = config
        self.managed = managed
        self.spend = spend
        self._router: Router | None = None
        self._session: SpendSession | None = None
        self._caller: ChatCaller | None = None
        self._gate: ClusterGate | None = None
        self._scheduler: Any = None

    def setup(self, worker: Any) -> None:
        """The router waits for the first request: its clients must be made on the loop that uses them."""
        self._scheduler = worker.scheduler

    async def teardown(self, worker: Any) -> None:
        if self._gate is not None:
            self._gate.close()
        if self._router is not None:
            await self._router.aclose()
        if self._session is not None:
            self._session.close()

    def caller(self) -> ChatCaller:
        """The router, with this worker's ledger rows and cache; no terminal here, so a confirmation needs `--yes`."""
        if self._caller is None:
            from ..balance import EndpointDirectory
            from ..routing import Resolver, Router
            from ..spend import SpendSession

            endpoints = EndpointDirectory()
            for backend, urls in self.managed.items():
                endpoints.manage(backend, urls)
            self._gate = ClusterGate(self._scheduler, LEASE_TIMEOUT)
            self._router = Router(self.config, Resolver(self.config, endpoints), gate=self._gate)
            self._session = SpendSession(self.spend, self.config)
            self._caller = self._session.caller(self._router)
        return self._caller


class ClusterGate:
    """One scheduler semaphore per endpoint, named after it, so every worker shares its capacity.

    It speaks the scheduler's semaphore routes itself rather than use `distributed.Semaphore`,
    whose periodic lease refresh races with a release: a lease refreshed just after it was
    released comes back as a ghost that holds a place until it times out (and the scheduler
    logs a CRITICAL line each time). Here a refresh and a release never overlap.
    """

    def __init__(self, scheduler: Any, lease_timeout: float) -> None:
        self._scheduler = scheduler
        self._lease_timeout = lease_timeout
        self._held: dict[str, set[str]] = {}
        self._turn = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None

    async def enter(self, url: str, capacity: int) -> Callable[[], None]:
        name = f"dse-endpoint:{url}"
        if name not in self._held:
            await self._scheduler.semaphore_register(name=name, max_leases=capacity, lease_timeout=self._lease_timeout)
            self._held.setdefault(name, set())
        lease = uuid.uuid4().hex
        await self._scheduler.semaphore_acquire(name=name, timeout=None, lease_id=lease)
        self._held[name].add(lease)
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh())

        def leave() -> None:
            self._held[name].discard(lease)
            task = asyncio.ensure_future(self._release(name, lease))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return leave

    async def _release(self, name: str, lease: str) -> None:
        async with self._turn:
            await self._scheduler.semaphore_release(name=name, lease_id=lease)

    async def _refresh(self) -> None:
        """Tell the scheduler the places this worker holds are still in use, well within their timeout."""
        while True:
            await asyncio.sleep(self._lease_timeout / 5)
            async with self._turn:
                for name, leases in self._held.items():
                    if leases:
                        await self._scheduler.semaphore_refresh_leases(name=name, lease_ids=list(leases))

    def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()


def _plugin(worker: Any) -> DseWorker:
    plugin = worker.plugins[_PLUGIN]
    assert isinstance(plugin, DseWorker)
    return plugin


def _served(dask_worker: Any) -> dict[str, dict[str, int]]:
    """Run by `Client.run`, which passes the worker under this name."""
    router = _plugin(dask_worker)._router
    return router.calls_per_endpoint() if router is not None else {}


async def _perform(request: StepRequest) -> Outcome:
    """What a worker runs: the request's body, with this worker's router and environment."""
    return await request.perform(Services(caller=_plugin(distributed.get_worker()).caller(), environ=os.environ))
