"""The long-lived resources of one reelbot process, opened and closed in one place.

As in discord.py's `advanced_startup.py`: one `aiohttp.ClientSession`, one store, one API
client, one poller loop; opened in order, closed in reverse. `reelbot generate` and
`reelbot run` both start here, so the terminal and Discord drive exactly the same pipeline.
`reelbot run` also opens the operations side (`serve_http=True`): the HTTP listener with
`/healthz`, `/readyz`, `/metrics` (and the webhook), and the sampler of the metrics gauges.
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
from bot.core.config import Settings, SettingsError
from bot.core.controls.prices import read_prices_file
from bot.core.controls.queue import Dispatcher
from bot.core.controls.retention import prune_forever
from bot.core.controls.service import Controls
from bot.core.fetch import fetch_session
from bot.core.health import Readiness
from bot.core.http import HttpListener
from bot.core.identify import IdentifyGate
from bot.core.interaction_claims import InteractionClaims
from bot.core.jobs import JobService
from bot.core.leases import Leases
from bot.core.metrics import MeteredApimartClient, Metrics, Sampler
from bot.core.owner import owned_elsewhere
from bot.core.poller import Notifier, Poller, RateLimiter, Schedule
from bot.core.reroll import REROLL_GUARD_S
from bot.core.schedule import AdaptiveSchedule
from bot.core.scrub import register_secret
from bot.core.send_window import SharedWindow
from bot.core.store import Store, open_store
from bot.core.webhook import WebhookServer
from bot.core.webhook_health import WebhookHealth
from bot.core.workers import SqliteLock, WorkerRegistry, new_worker_id

log = logging.getLogger(__name__)

#: The poller loop counts as stuck when it has not gone round for this long (seconds); it
#: wakes at least every `poller.HEARTBEAT_EVERY`.
POLLER_STALE = 30.0


@dataclass
class Runtime:
    settings: Settings
    #: APIMart's session (the operator's APIMART_BASE_URL, wherever it points).
    session: aiohttp.ClientSession
    #: Other people's URLs (attachments, finished videos): confined by `bot.core.fetch`.
    fetch_session: aiohttp.ClientSession
    store: Store
    api: ApimartClient
    poller: Poller
    jobs: JobService
    clock: Clock
    leases: Leases
    claimer: Claimer
    workers: WorkerRegistry
    metrics: Metrics
    readiness: Readiness
    identify_gate: IdentifyGate
    #: The callback handler, when WEBHOOK_PUBLIC_URL is set (served by `http`).
    webhook: WebhookServer | None = None
    #: The HTTP listener and the metrics sampler (`reelbot run` only).
    http: HttpListener | None = None
    sampler: Sampler | None = None
    #: The poller's loop, once the work has started (`open_runtime`).
    poller_task: asyncio.Task[None] | None = None
    #: Community controls (caps, queue, usage); always on (defaults: 2 per member, 8 per server).
    controls: Controls | None = None
    #: Who answers each front-end interaction (bot/core/interaction_claims.py): a bot on
    #: PostgreSQL only. On SQLite one `reelbot run` holds the file lock, so no other process
    #: receives the interaction and a claim would only add a write to SQLite's single writer.
    interaction_claims: InteractionClaims | None = None
    #: Set by `stop_work`: from then on `resume` takes nothing on. A SIGTERM while `reelbot run`
    #: starts drains the runtime while discord.py's login may still be on its way to
    #: `setup_hook` (which resumes): a claim after the drain would sit under a leaving worker.
    stopping: bool = False

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
        self.stopping = True
        await self.claimer.stop()
        await self.poller.stop()
        if self.poller_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.poller_task

    async def resume(self) -> int:
        """Start claiming: this worker's share of the jobs that need work, now and from then
        on (a bot calls it once its notifier is bound). Returns how many it took at once.

        A terminal process never claims: it only ever touches the jobs it creates; a runtime
        already stopping (`stop_work`) takes nothing on.
        """
        if self.workers.kind != "bot" or self.stopping:
            return 0
        before = self.leases.claimed
        await self.claimer.resume()
        if self.controls is not None and self.controls.dispatcher is not None:
            self.controls.dispatcher.open()  # queued jobs may go now
        # `unknown` jobs with a task id whose end was never learned: followed again (each
        # claimed first, so one worker does it).
        now = self.clock.now()
        for job in await self.store.unknown_with_task(since=now - self.poller.max_age):
            if owned_elsewhere(job, now, self.worker_id) or job.id in self.poller:
                continue
            claimed = await self.leases.claim_one(
                job.id, live_terminals=self.workers.live_terminals
            )
            if claimed is not None:
                await self.jobs.follow_again(claimed)
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
    serve_http: bool = False,
    expect_ready: tuple[str, ...] = (),
    role: str = "cli",
) -> AsyncIterator[Runtime]:
    """Open everything, resume unfinished jobs, start the poller; undo it all on exit.

    `schedule` defaults to the adaptive one (`make_schedule`), right for a bot with many jobs.
    `serve_http` starts the HTTP listener and the metrics sampler; `expect_ready` names
    readiness checks a front end will register later (`gateway`), unready until it does.
    `role`: `bot` (`reelbot run`) claims its share of every job that needs work, and on a
    SQLite file is the only one allowed (`AlreadyRunning` otherwise); `cli` (`reelbot
    generate`, `status`) only ever touches the jobs it creates or leases. `resume=True` starts
    claiming at once; a bot whose notifier binds later calls `Runtime.resume()` itself.

    Each resource registers its own undoing on one `AsyncExitStack` as soon as it exists, so
    they close in the reverse order of opening, also when a later step fails.
    """
    clock = clock or SystemClock()
    url = database_url or settings.DATABASE_URL
    async with contextlib.AsyncExitStack() as stack:
        if role == "bot" and (path := (settings.sqlite_path() if database_url is None else None)):
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = SqliteLock(path)
            lock.acquire()  # before anything else: a second bot stops here, touching nothing
            stack.callback(lock.release)
        assert settings.APIMART_API_KEY is not None
        # Every outside text this process stores or shows is scrubbed of the secrets it holds.
        for secret in (settings.APIMART_API_KEY, settings.DISCORD_TOKEN):
            register_secret(secret.get_secret_value() if secret is not None else None)
        worker_id = new_worker_id()
        # The worker id in the User-Agent lets an operator (and the tests) tell workers apart
        # in APIMart's request logs. It names a process, nothing secret.
        headers = {"User-Agent": f"reelbot ({worker_id})"}
        session = await stack.enter_async_context(aiohttp.ClientSession(headers=headers))
        fetcher = await stack.enter_async_context(
            fetch_session(allow_local=settings.ALLOW_LOCAL_FETCH)
        )
        store = await open_store(url)
        stack.push_async_callback(store.close)
        runtime = await _assemble(
            settings,
            notifier,
            clock=clock,
            schedule=schedule or make_schedule(settings),
            sessions=(session, fetcher),
            store=store,
            worker_id=worker_id,
            role=role,
            exclusive=url.startswith("sqlite") and role == "bot",
        )
        await _start_work(runtime, stack)
        for name in expect_ready:
            runtime.readiness.expect(name)
        if serve_http:
            # Before resume: /healthz answers while a large backlog is read, and /readyz says
            # "not ready" until the front end reports in. A callback that arrives before its
            # job is followed is kept as an early hint.
            await _serve_http(runtime, stack)
        if resume:
            await runtime.resume()
        yield runtime


async def _assemble(
    settings: Settings,
    notifier: Notifier,
    *,
    clock: Clock,
    schedule: Schedule,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
    store: Store,
    worker_id: str,
    role: str,
    exclusive: bool,
) -> Runtime:
    """Build the pipeline's objects and wire them together; nothing runs yet."""
    session, fetcher = sessions
    # A 429's pause (however long its Retry-After) ends within POLL_MAX_INTERVAL: every job
    # is still looked at that often, and a job's deadline is never waited past (R3).
    limiter = RateLimiter(
        clock, settings.API_REQUESTS_PER_SECOND, max_pause=settings.POLL_MAX_INTERVAL
    )
    metrics = Metrics()

    def rate_limited(retry_after: float | None) -> None:
        metrics.rate_limited(retry_after)
        limiter.penalize(retry_after)

    assert settings.APIMART_API_KEY is not None
    api: ApimartClient = MeteredApimartClient(
        session,
        settings.APIMART_BASE_URL,
        settings.APIMART_API_KEY,
        timeout=settings.API_TIMEOUT,
        on_rate_limited=rate_limited,
        metrics=metrics,
    )
    poller = Poller(
        api,
        store,
        notifier,
        clock,
        schedule,
        limiter,
        concurrency=settings.POLL_CONCURRENCY,
        max_age=settings.JOB_TIMEOUT,
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
    leases = Leases(store, worker_id, clock, settings.LEASE_SECONDS, exclusive=exclusive)
    poller.leases = jobs.leases = controls.leases = leases
    # The queue opens when the claimer resumes (in `open_runtime`, or in the bot's
    # setup_hook): a terminal process never submits another front end's queued jobs.
    dispatcher = Dispatcher(store, jobs.launch, on_moved=jobs.show_queue)
    dispatcher.leases = leases
    controls.dispatcher = dispatcher
    workers = WorkerRegistry(
        store,
        worker_id,
        clock,
        kind=role,
        limiter=limiter,
        budget=settings.API_REQUESTS_PER_SECOND,
    )
    claimer = Claimer(leases, poller, jobs.take_over, clock, registry=workers)
    claimer.on_takeover = metrics.lease_takeovers.inc
    metrics.tracked.set_function(lambda: len(poller))
    runtime = Runtime(
        settings,
        session,
        fetcher,
        store,
        api,
        poller,
        jobs,
        clock,
        leases,
        claimer,
        workers,
        metrics=metrics,
        readiness=Readiness(),
        identify_gate=IdentifyGate(store.engine),
        webhook=WebhookServer(poller) if webhook else None,
    )
    runtime.controls = controls
    if role == "bot" and store.engine.dialect.name != "sqlite":
        runtime.interaction_claims = InteractionClaims(
            store, worker_id, clock, others_live=lambda: workers.live_bots > 1
        )
        jobs.shared_rerolls = SharedWindow(store, clock, limit=1, per=REROLL_GUARD_S)
    add_core_checks(runtime)
    if runtime.webhook is not None:
        watch_webhook(runtime, schedule)
    runtime.sampler = Sampler(metrics, store, now=clock.now)
    return runtime


async def _start_work(runtime: Runtime, stack: contextlib.AsyncExitStack) -> None:
    """Register in `workers`, start the heartbeat, the claimer, the poller loop, the queue
    and the retention pass; each stop is pushed on `stack` as it starts."""
    settings, store, workers = runtime.settings, runtime.store, runtime.workers
    await workers.register()
    stack.push_async_callback(_leave, runtime)
    workers_task = asyncio.create_task(workers.run(), name="reelbot-heartbeat")
    stack.push_async_callback(_cancel, workers_task)
    runtime.claimer.start()
    runtime.poller_task = asyncio.create_task(runtime.poller.run(), name="reelbot-poller")
    # Stop claiming, drain the poller (polls and deliveries under way finish), then hand the
    # resting jobs to the other workers now rather than in a lease.
    stack.push_async_callback(runtime.claimer.close)
    stack.push_async_callback(runtime.claimer.release_all)
    stack.push_async_callback(runtime.stop_work)
    stack.push_async_callback(runtime.identify_gate.close)
    stack.push_async_callback(runtime.readiness.close)
    assert runtime.controls is not None and runtime.controls.dispatcher is not None
    stack.push_async_callback(runtime.controls.settle_alerts)
    for task in (
        asyncio.create_task(runtime.controls.dispatcher.run(), name="reelbot-queue"),
        asyncio.create_task(
            prune_forever(store, runtime.clock, settings.JOB_RETENTION_DAYS),
            name="reelbot-retention",
        ),
    ):
        stack.push_async_callback(_cancel, task)
    stack.push_async_callback(runtime.controls.dispatcher.stop)


async def _serve_http(runtime: Runtime, stack: contextlib.AsyncExitStack) -> None:
    """The HTTP listener (/healthz, /readyz, /metrics, the webhook) and the metrics sampler."""
    settings = runtime.settings
    host, port = settings.http_listen
    runtime.http = HttpListener(
        host, port, readiness=runtime.readiness, metrics=runtime.metrics, webhook=runtime.webhook
    )
    try:
        await runtime.http.start()
    except OSError as exc:  # a busy port, an address that is not ours
        name = "WEBHOOK_LISTEN" if settings.listen_deprecated else "HTTP_LISTEN"
        raise SettingsError([f"{name}: {exc.strerror}"]) from None
    stack.push_async_callback(runtime.http.close)
    if settings.listen_deprecated:
        log.warning("WEBHOOK_LISTEN is deprecated: rename it to HTTP_LISTEN")
    assert runtime.sampler is not None
    runtime.sampler.start()
    stack.push_async_callback(runtime.sampler.stop)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _leave(runtime: Runtime) -> None:
    """The last word of a worker: its lease bookkeeping in the log, its row removed."""
    leases, workers = runtime.leases, runtime.workers
    log.info(
        "leases: %d claimed, %d taken over, %d lost; %d lease and %d heartbeat database round "
        "trips",
        leases.claimed,
        leases.takeovers,
        leases.lost,
        leases.round_trips,
        workers.round_trips,
    )
    with contextlib.suppress(Exception):
        await workers.unregister()


def watch_webhook(runtime: Runtime, schedule: Schedule) -> None:
    """Notice callbacks that never come (a wrong WEBHOOK_PUBLIC_URL): warn once, export it,
    and poll at the normal pace until they do (`bot.core.webhook_health`)."""
    assert runtime.webhook is not None
    poller = runtime.poller
    health = WebhookHealth(schedule, on_change=lambda _: poller.replan())
    poller.on_finished.append(health.observe)
    runtime.webhook.health = health
    runtime.metrics.webhook_callbacks.set_function(lambda: 1.0 if health.healthy else 0.0)
    runtime.metrics.webhook_missed.set_function(lambda: float(health.misses))


def add_core_checks(runtime: Runtime) -> None:
    """Readiness of what the core owns: the database answers, the poller loop goes round."""

    async def database() -> str | None:
        await runtime.store.ping()
        return None

    def poller() -> str | None:
        if runtime.poller_task is None or runtime.poller_task.done():
            return "the poller loop has stopped"
        silent = runtime.clock.now() - runtime.poller.heartbeat
        if silent > POLLER_STALE:
            return f"the poller loop has not gone round for {silent:.0f} s"
        return None

    runtime.readiness.add("database", database)
    runtime.readiness.add("poller", poller, ttl=0.0)
