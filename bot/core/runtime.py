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
from bot.core.config import Settings, SettingsError
from bot.core.jobs import JobService
from bot.core.poller import Notifier, Poller, RateLimiter, Schedule
from bot.core.schedule import AdaptiveSchedule
from bot.core.scrub import register_secret
from bot.core.store import Store, open_store
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
    assert settings.APIMART_API_KEY is not None
    # Every outside text this process stores or shows is scrubbed of the secrets it holds.
    for secret in (settings.APIMART_API_KEY, settings.DISCORD_TOKEN):
        register_secret(secret.get_secret_value() if secret is not None else None)
    limiter = RateLimiter(clock, settings.API_REQUESTS_PER_SECOND)
    async with aiohttp.ClientSession() as session:
        store = await open_store(url)
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
                max_age=settings.JOB_TIMEOUT,
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
            poller_task = asyncio.create_task(poller.run(), name="reelbot-poller")
            runtime = Runtime(settings, session, store, api, poller, jobs, clock, poller_task)
            try:
                if resume:
                    await jobs.resume()
                if webhook:
                    # After resume, so a callback finds its task followed. Until it listens,
                    # APIMart's callbacks fail and are retried (and polls still run).
                    host, port = settings.webhook_listen
                    server = WebhookServer(poller, host, port)
                    try:
                        await server.start()
                    except OSError as exc:  # a busy port, a host that is not ours
                        raise SettingsError(
                            [f"WEBHOOK_LISTEN: cannot listen on {host}:{port} ({exc.strerror})"]
                        ) from None
                    runtime.webhook = server
                yield runtime
            finally:
                if runtime.webhook is not None:
                    await runtime.webhook.close()
                await poller.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller_task
        finally:
            await store.close()
