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
from bot.core.clock import Clock, SystemClock
from bot.core.config import Settings
from bot.core.controls.prices import read_prices_file
from bot.core.controls.queue import Dispatcher
from bot.core.controls.retention import prune_forever
from bot.core.controls.service import Controls
from bot.core.jobs import JobService
from bot.core.poller import Notifier, Poller, RateLimiter, Schedule
from bot.core.schedule import AdaptiveSchedule
from bot.core.store import Store
from bot.core.webhook import WebhookServer

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
    #: The callback listener, when WEBHOOK_PUBLIC_URL is set.
    webhook: WebhookServer | None = None
    #: Community controls (caps, queue, usage); always on (defaults: 2 per member, 8 per server).
    controls: Controls | None = None

    def set_notifier(self, notifier: Notifier) -> None:
        """Late binding for front ends that exist only after the runtime (the Discord bot)."""
        self.poller.notifier = notifier
        self.jobs.notifier = notifier


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
) -> AsyncIterator[Runtime]:
    """Open everything, resume unfinished jobs, start the poller; undo it all on exit.

    `schedule` defaults to the adaptive one (`make_schedule`), right for a bot with many jobs.
    """
    clock = clock or SystemClock()
    url = database_url or settings.DATABASE_URL
    if path := (settings.sqlite_path() if database_url is None else None):
        path.parent.mkdir(parents=True, exist_ok=True)
    assert settings.APIMART_API_KEY is not None
    limiter = RateLimiter(clock, settings.API_REQUESTS_PER_SECOND)
    async with aiohttp.ClientSession() as session:
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
            controls = Controls(
                store,
                clock,
                operator_daily=settings.operator_cap("OPERATOR_DAILY_SPEND"),
                operator_monthly=settings.operator_cap("OPERATOR_MONTHLY_SPEND"),
            )
            if settings.PRICES_FILE is not None:
                await controls.seed_prices(read_prices_file(settings.PRICES_FILE))
            jobs = JobService(
                store=store,
                api=api,
                poller=poller,
                notifier=notifier,
                clock=clock,
                webhook_url=webhook,
                controls=controls,
            )
            dispatcher = Dispatcher(store, jobs.launch)
            controls.dispatcher = dispatcher
            poller_task = asyncio.create_task(poller.run(), name="reelbot-poller")
            runtime = Runtime(settings, session, store, api, poller, jobs, clock, poller_task)
            runtime.controls = controls
            background = [
                asyncio.create_task(dispatcher.run(), name="reelbot-queue"),
                asyncio.create_task(
                    prune_forever(store, clock, settings.JOB_RETENTION_DAYS),
                    name="reelbot-retention",
                ),
            ]
            try:
                if resume:
                    await jobs.resume()  # also opens the queue (the bot resumes in setup_hook)
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
                await dispatcher.stop()
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await controls.settle_alerts()
                await poller.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller_task
        finally:
            await store.close()
