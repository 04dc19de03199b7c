"""The long-lived resources of one reelbot process, opened and closed in one place.

As in discord.py's `advanced_startup.py`: one `aiohttp.ClientSession`, one store, one API
client, one poller loop; opened in order, closed in reverse. `reelbot generate` and
`reelbot run` both start here, so the terminal and Discord drive exactly the same pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from bot.core.apimart import ApimartClient
from bot.core.claimer import Claimer
from bot.core.clock import Clock, SystemClock
from bot.core.config import Settings
from bot.core.jobs import JobService
from bot.core.leases import Leases
from bot.core.poller import Notifier, Poller, RateLimiter, Schedule
from bot.core.schedule import AdaptiveSchedule
from bot.core.store import Store
from bot.core.webhook import WebhookServer
from bot.core.workers import SqliteLock, WorkerRegistry, new_worker_id

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    session: aiohttp.ClientSession
    store: Store
    api: ApimartClient
    poller: Poller
    jobs: JobService
    clock: Clock
    poller_task: asyncio.Task[None]
    leases: Leases
    claimer: Claimer
    workers: WorkerRegistry
    #: The callback listener, when WEBHOOK_PUBLIC_URL is set.
    webhook: WebhookServer | None = None

    @property
    def worker_id(self) -> str:
        return self.leases.worker_id

    def set_notifier(self, notifier: Notifier) -> None:
        """Late binding for front ends that exist only after the runtime (the Discord bot)."""
        self.poller.notifier = notifier
        self.jobs.notifier = notifier

    async def stop_work(self) -> None:
        """Stop claiming, then let the poller drain (polls and deliveries under way finish).

        Idempotent; the leases are given back when the runtime closes.
        """
        await self.claimer.stop()
        await self.poller.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self.poller_task

    async def resume(self) -> int:
        """Start claiming: this worker's share of the jobs that need work, now and from then
        on (a bot calls it once its notifier is bound). Returns how many it took at once.

        A terminal process never claims: it only ever touches the jobs it creates.
        """
        if self.workers.kind != "bot":
            return 0
        before = self.leases.claimed
        await self.claimer.resume()
        return self.leases.claimed - before


def make_schedule(settings: Settings) -> Schedule:
    """Adaptive polling; with a webhook configured, polls are only a sparse safety net."""
    return AdaptiveSchedule(
        initial_delay=settings.POLL_INITIAL_DELAY,
        min_interval=settings.POLL_INTERVAL,
        max_interval=settings.POLL_MAX_INTERVAL,
        webhook=bool(settings.WEBHOOK_PUBLIC_URL),
    )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    notifier: Notifier,
    *,
    clock: Clock | None = None,
    database_url: str | None = None,
    resume: bool = True,
    schedule: Schedule | None = None,
    role: str = "cli",
) -> AsyncIterator[Runtime]:
    """Open everything, resume unfinished jobs, start the poller; undo it all on exit.

    `schedule` defaults to the adaptive one (`make_schedule`), right for a bot with many jobs.
    `role`: `bot` (`reelbot run`) claims its share of every job that needs work, and on a
    SQLite file is the only one allowed (`AlreadyRunning` otherwise); `cli`
    (`reelbot generate`) only ever touches the jobs it creates. `resume=True` starts claiming
    at once; a bot whose notifier binds later calls `Runtime.resume()` itself.
    """
    clock = clock or SystemClock()
    url = database_url or settings.DATABASE_URL
    lock: SqliteLock | None = None
    if path := (settings.sqlite_path() if database_url is None else None):
        path.parent.mkdir(parents=True, exist_ok=True)
        if role == "bot":
            lock = SqliteLock(path)
            lock.acquire()  # before anything else: a second bot stops here, touching nothing
    assert settings.APIMART_API_KEY is not None
    limiter = RateLimiter(clock, settings.API_REQUESTS_PER_SECOND)
    worker_id = new_worker_id()
    # The worker id in the User-Agent lets an operator (and the tests) tell workers apart in
    # APIMart's request logs. It names a process, nothing secret.
    headers = {"User-Agent": f"reelbot ({worker_id})"}
    async with aiohttp.ClientSession(headers=headers) as session:
        store = await Store.open(url)
        try:
            api = ApimartClient(
                session,
                settings.APIMART_BASE_URL,
                settings.APIMART_API_KEY,
                timeout=settings.API_TIMEOUT,
                on_rate_limited=limiter.penalize,
            )
            poller = Poller(
                api,
                store,
                notifier,
                clock,
                schedule or make_schedule(settings),
                limiter,
                concurrency=settings.POLL_CONCURRENCY,
            )
            webhook = settings.WEBHOOK_PUBLIC_URL  # None, or a checked http(s) URL
            jobs = JobService(
                store=store,
                api=api,
                poller=poller,
                notifier=notifier,
                clock=clock,
                webhook_url=webhook,
            )
            exclusive = url.startswith("sqlite") and role == "bot"
            leases = Leases(store, worker_id, clock, settings.LEASE_SECONDS, exclusive=exclusive)
            poller.leases = leases
            jobs.leases = leases
            workers = WorkerRegistry(
                store,
                worker_id,
                clock,
                kind=role,
                limiter=limiter,
                budget=settings.API_REQUESTS_PER_SECOND,
            )
            await workers.register()
            workers_task = asyncio.create_task(workers.run(), name="reelbot-heartbeat")
            claimer = Claimer(leases, poller, jobs.take_over, clock, registry=workers)
            claimer.start()
            poller_task = asyncio.create_task(poller.run(), name="reelbot-poller")
            runtime = Runtime(
                settings,
                session,
                store,
                api,
                poller,
                jobs,
                clock,
                poller_task,
                leases,
                claimer,
                workers,
            )
            try:
                if resume:
                    await runtime.resume()
                if webhook:
                    # After resume, so a callback finds its task followed. Until it listens,
                    # APIMart's callbacks fail and are retried (and polls still run).
                    host, port = settings.webhook_listen
                    runtime.webhook = WebhookServer(poller, host, port)
                    await runtime.webhook.start()
                yield runtime
            finally:
                if runtime.webhook is not None:
                    await runtime.webhook.close()
                await runtime.stop_work()
                # Hand the resting jobs to the other workers now rather than in a lease.
                await claimer.release_all()
                await claimer.close()
                log.info(
                    "leases: %d claimed, %d taken over, %d lost; %d lease and %d heartbeat "
                    "database round trips",
                    leases.claimed,
                    leases.takeovers,
                    leases.lost,
                    leases.round_trips,
                    workers.round_trips,
                )
                workers_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await workers_task
                with contextlib.suppress(Exception):
                    await workers.unregister()
        finally:
            await store.close()
            if lock is not None:
                lock.release()
