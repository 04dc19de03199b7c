"""One polling loop for every open job.

A heap of due times replaces the usual one-sleeping-task-per-job: the loop pops what is due,
polls it through a bounded pool of concurrent requests under one shared request budget
(`RateLimiter`), asks the `Schedule` when to look again, and hands each finished job to the
`Notifier`. 10,000 open jobs cost 10,000 small heap entries, not 10,000 coroutines.

The schedule is a strategy: `FixedSchedule` is what public clients do (every few seconds);
`bot.schedule.AdaptiveSchedule` asks far less often while a job is far from done.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.apimart import (
    ApimartError,
    AuthenticationFailed,
    PermissionDenied,
    RateLimited,
    TaskInfo,
    TaskNotFound,
)
from bot.clock import Clock
from bot.job import Job, JobState

log = logging.getLogger(__name__)

#: A task the API says it does not know this many polls in a row is reported lost.
NOT_FOUND_LIMIT = 3
#: Progress is cosmetic: it is written to the store in batches at most this often (seconds).
PROGRESS_FLUSH_EVERY = 2.0
#: On shutdown, polls and deliveries under way get this long (seconds) to finish.
DRAIN_TIMEOUT = 5.0
#: Webhook hints poll one task at most this often (seconds), however many arrive.
POKE_MIN_GAP = 1.0


class TaskReader(Protocol):
    """The one call the poller needs from the API (real client or in-memory simulation)."""

    async def get_task(self, task_id: str) -> TaskInfo: ...


class Notifier(Protocol):
    """Where outcomes go: Discord messages, a terminal progress bar, a benchmark's counters."""

    async def job_progress(self, job: Job) -> None:
        """The job moved (submitted, progress, estimate). Implementations throttle."""
        ...

    async def job_finished(self, job: Job) -> None:
        """The job reached a terminal state. Raise to have delivery retried later."""
        ...


class JobStore(Protocol):
    async def update(self, job: Job, **fields: Any) -> Job: ...

    async def update_many(self, changes: Any) -> None: ...


@dataclass(slots=True)
class Tracked:
    """What the poller remembers about one open job between polls."""

    job: Job
    due: float
    key: tuple[str, int | None, str]
    started: float
    polls: int = 0
    last_progress: int = 0
    last_progress_at: float = 0.0
    first_progress_at: float | None = None
    failures: int = 0
    not_found: int = 0
    #: When the last poll was sent (0 before the first).
    last_poll_at: float = 0.0
    #: A webhook hint came while a poll was in flight: poll again as soon as it returns.
    poked: bool = False
    info: TaskInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Schedule(Protocol):
    def first_due(self, tracked: Tracked, now: float) -> float:
        """When to poll a job first (absolute time)."""
        ...

    def next_due(self, tracked: Tracked, info: TaskInfo, now: float) -> float:
        """When to poll again after a non-terminal answer (absolute time)."""
        ...

    def retry_due(self, tracked: Tracked, now: float) -> float:
        """When to try again after an error (absolute time)."""
        ...

    def finished(self, tracked: Tracked, info: TaskInfo, now: float) -> None:
        """A job ended: a chance to learn how long such jobs take."""
        ...


@dataclass
class FixedSchedule:
    """The docs' advice and every public client's habit: first poll after N s, then every N s."""

    initial_delay: float = 5.0
    interval: float = 5.0
    max_interval: float = 60.0

    def first_due(self, tracked: Tracked, now: float) -> float:
        return max(now, tracked.started + self.initial_delay)

    def next_due(self, tracked: Tracked, info: TaskInfo, now: float) -> float:
        return now + self.interval

    def retry_due(self, tracked: Tracked, now: float) -> float:
        return now + min(self.max_interval, self.interval * 2 ** min(tracked.failures, 6))

    def finished(self, tracked: Tracked, info: TaskInfo, now: float) -> None:
        return None


class RateLimiter:
    """A request budget shared by every poll: `rate` per second, paused after a 429.

    A 429 halves the rate and pauses everyone for Retry-After (or a second); each quiet second
    after that wins back a tenth of the configured rate, so the bot slows down together and
    recovers by itself. The 429s of one burst (every request in flight gets one, and both the
    API client's hook and the poller report it) halve the rate once, not once each.
    """

    #: 429s closer together than this (seconds) count as one burst.
    BURST_WINDOW = 1.0

    def __init__(self, clock: Clock, rate: float, burst: float | None = None) -> None:
        self.clock = clock
        self.max_rate = rate
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._updated = clock.now()
        self._paused_until = 0.0
        self._last_cut = float("-inf")
        self._lock = asyncio.Lock()
        self.throttled = 0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if self.rate < self.max_rate and now >= self._paused_until:
            self.rate = min(self.max_rate, self.rate + self.max_rate * 0.1 * elapsed)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock.now()
                if now < self._paused_until:
                    await self.clock.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await self.clock.sleep((1.0 - self._tokens) / self.rate)

    def penalize(self, retry_after: float | None = None) -> None:
        """Called on every 429, from the poller or straight from the API client."""
        now = self.clock.now()
        self.throttled += 1
        if now - self._last_cut >= self.BURST_WINDOW:
            self._last_cut = now
            self.rate = max(self.max_rate / 32, self.rate / 2)
        self._tokens = 0.0
        self._paused_until = max(self._paused_until, now + (retry_after or 1.0))


def _run_seconds(info: TaskInfo, tracked: Tracked, now: float) -> float:
    """How long the task ran, by the API's own clock when it says (no clock-skew surprises)."""
    if info.actual_time is not None:
        return info.actual_time
    if info.completed is not None and info.created is not None:
        return max(0.0, info.completed - info.created)
    return max(0.0, now - tracked.started)


class Poller:
    """The scheduler loop: `track()` jobs, `run()` it once, `poke()` on a webhook hint."""

    def __init__(
        self,
        api: TaskReader,
        store: JobStore,
        notifier: Notifier,
        clock: Clock,
        schedule: Schedule,
        limiter: RateLimiter,
        *,
        concurrency: int = 16,
    ) -> None:
        self.api = api
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.schedule = schedule
        self.limiter = limiter
        self.concurrency = concurrency
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._tracked: dict[int, Tracked] = {}
        self._by_task: dict[str, int] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._dirty: dict[int, Tracked] = {}
        self._last_flush = clock.now()
        self._wake = asyncio.Event()
        self._saturated = False
        self._stopping = False
        self.requests = 0
        self.errors = 0

    # -- public API -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tracked)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._tracked

    def track(self, job: Job, *, started: float | None = None) -> None:
        """Follow a running job until it ends. Safe to call twice (the second is ignored)."""
        if job.id in self._tracked or job.task_id is None:
            return
        request = job.request
        key = (request.model, request.effective_duration, request.effective_resolution)
        begun = started if started is not None else (job.submitted_at or self.clock.now())
        tracked = Tracked(job=job, due=0.0, key=key, started=begun, last_progress=job.progress)
        tracked.last_progress_at = begun
        self._tracked[job.id] = tracked
        self._by_task[job.task_id] = job.id
        self._push(tracked, self.schedule.first_due(tracked, self.clock.now()))

    def poke(self, task_id: str) -> bool:
        """Poll this task now (a webhook said it may be done). Unknown tasks are ignored.

        A hint is never trusted, only acted on: the poll reads the truth. A hint that arrives
        while that task's poll is in flight is remembered and honoured when the poll returns
        (the answer may predate the end). However many hints come, one task is polled at most
        once per `POKE_MIN_GAP` seconds, so a flood of forged callbacks cannot multiply
        requests; every poll still waits its turn in the shared budget.
        """
        job_id = self._by_task.get(task_id)
        if job_id is None:
            return False
        tracked = self._tracked[job_id]
        if tracked.due == float("inf"):  # a poll is in flight
            tracked.poked = True
            return True
        due = max(self.clock.now(), tracked.last_poll_at + POKE_MIN_GAP)
        if tracked.due > due:
            self._push(tracked, due)
        return True

    def tracked(self, job_id: int) -> Tracked | None:
        return self._tracked.get(job_id)

    async def run(self) -> None:
        """The loop. Runs until `stop()`; cancellation-safe."""
        try:
            while not self._stopping:
                now = self.clock.now()
                self._start_due(now)
                if self._dirty and now - self._last_flush >= PROGRESS_FLUSH_EVERY:
                    self._spawn(self._flush_progress())
                timeout = self._next_timeout(now)
                self._wake.clear()
                await self.clock.wait(self._wake, timeout)
        finally:
            await self._drain()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def spawn(self, coro: Any) -> None:
        """Run a side job (a delivery retry) owned by the poller, so shutdown waits for it."""
        self._spawn(coro)

    # -- the loop's parts -------------------------------------------------------------------

    def _push(self, tracked: Tracked, due: float) -> None:
        tracked.due = due
        heapq.heappush(self._heap, (due, next(self._seq), tracked.job.id))
        if self._heap[0][2] == tracked.job.id:
            self._wake.set()

    def _start_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now and len(self._inflight) < self.concurrency:
            due, _, job_id = heapq.heappop(self._heap)
            tracked = self._tracked.get(job_id)
            if tracked is None or tracked.due != due:
                continue  # stale entry: finished, or rescheduled by poke()
            tracked.due = float("inf")
            task = asyncio.create_task(self._poll(tracked))
            self._inflight.add(task)
            task.add_done_callback(self._poll_done)

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("poll crashed", exc_info=task.exception())
        # Wake the loop if something is due, or if it went to sleep because every slot was
        # taken (its timeout then ignored the heap: without this it would sleep for an hour).
        if self._saturated or (self._heap and self._heap[0][0] <= self.clock.now()):
            self._saturated = False
            self._wake.set()

    def _next_timeout(self, now: float) -> float:
        self._saturated = len(self._inflight) >= self.concurrency
        if self._saturated or not self._heap:
            timeout = 3600.0
        else:
            timeout = max(0.0, self._heap[0][0] - now)
        if self._dirty:
            timeout = min(timeout, max(0.0, self._last_flush + PROGRESS_FLUSH_EVERY - now))
        return timeout

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain(self) -> None:
        """Stop in a resumable state.

        Polls and deliveries already under way get `DRAIN_TIMEOUT` to finish, so a result being
        posted is also marked delivered (no double post after a restart); waits for a delivery
        retry are cancelled. Whatever is cut short is redone by `JobService.resume()`.
        """
        for task in self._retries:
            task.cancel()
        busy = self._inflight | self._background
        if busy:
            _, pending = await asyncio.wait(busy, timeout=DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
        if self._dirty:
            await self._flush_progress()

    async def _poll(self, tracked: Tracked) -> None:
        job = tracked.job
        assert job.task_id is not None
        try:
            await self.limiter.acquire()
            self.requests += 1
            tracked.polls += 1
            tracked.last_poll_at = self.clock.now()
            info = await self.api.get_task(job.task_id)
        except RateLimited as exc:
            self.errors += 1
            self.limiter.penalize(exc.retry_after)
            self._retry(tracked)
            return
        except TaskNotFound:
            self.errors += 1
            tracked.not_found += 1
            if tracked.not_found >= NOT_FOUND_LIMIT:
                await self._lost(tracked)
            else:
                self._retry(tracked)
            return
        except (AuthenticationFailed, PermissionDenied) as exc:
            self.errors += 1
            log.error("job %s: the API refused to show task %s: %s", job.id, job.task_id, exc)
            tracked.failures = max(tracked.failures, 6)
            self._retry(tracked)
            return
        except ApimartError as exc:
            self.errors += 1
            log.warning("job %s: poll failed, will retry: %s", job.id, exc)
            self._retry(tracked)
            return
        tracked.failures = 0
        tracked.not_found = 0
        tracked.info = info
        now = self.clock.now()
        if info.terminal:
            await self._finish(tracked, info, now)
            return
        progress = info.progress if info.progress is not None else job.progress
        if progress != tracked.last_progress:
            if tracked.first_progress_at is None and progress > 0:
                tracked.first_progress_at = now
            tracked.last_progress = progress
            tracked.last_progress_at = now
        if progress != job.progress or info.estimated_time != job.estimated_time:
            job.progress = progress
            job.estimated_time = info.estimated_time
            self._dirty[job.id] = tracked
            await self._notify_progress(job)
        self._push(tracked, self._hinted(tracked, self.schedule.next_due(tracked, info, now)))

    def _hinted(self, tracked: Tracked, due: float) -> float:
        """A webhook hint that came during the poll moves the next one forward."""
        if tracked.poked:
            tracked.poked = False
            return min(due, max(self.clock.now(), tracked.last_poll_at + POKE_MIN_GAP))
        return due

    def _retry(self, tracked: Tracked) -> None:
        tracked.failures += 1
        self._push(
            tracked, self._hinted(tracked, self.schedule.retry_due(tracked, self.clock.now()))
        )

    def _untrack(self, tracked: Tracked) -> None:
        job = tracked.job
        self._tracked.pop(job.id, None)
        self._dirty.pop(job.id, None)
        if job.task_id is not None:
            self._by_task.pop(job.task_id, None)

    async def _finish(self, tracked: Tracked, info: TaskInfo, now: float) -> None:
        self._untrack(tracked)
        self.schedule.finished(tracked, info, now)
        state = {
            "completed": JobState.COMPLETED,
            "failed": JobState.FAILED,
            "cancelled": JobState.CANCELLED,
        }[info.status]
        progress = 100 if state is JobState.COMPLETED else (info.progress or tracked.job.progress)
        await self.store.update(
            tracked.job,
            state=state,
            progress=progress,
            estimated_time=info.estimated_time,
            finished_at=now,
            run_seconds=_run_seconds(info, tracked, now),
            cost=info.cost,
            credits_cost=info.credits_cost,
            video_urls=list(info.video_urls),
            expires_at=info.expires_at,
            error_code=info.error_code,
            error_message=info.error_message,
        )
        log.info(
            "job %s: %s (task %s, cost %s, credits %s)",
            tracked.job.id,
            state.value,
            tracked.job.task_id,
            info.cost,
            info.credits_cost,
        )
        # Posting a result (a video download, an upload to Discord) must not hold a poll slot.
        self._spawn(self.deliver(tracked.job))

    async def _lost(self, tracked: Tracked) -> None:
        self._untrack(tracked)
        await self.store.update(
            tracked.job,
            state=JobState.FAILED,
            finished_at=self.clock.now(),
            error_code="task_not_found",
            error_message="APIMart no longer knows this task; it cannot be followed any further.",
        )
        log.warning("job %s: task %s not found, given up", tracked.job.id, tracked.job.task_id)
        # Posting a result (a video download, an upload to Discord) must not hold a poll slot.
        self._spawn(self.deliver(tracked.job))

    async def _notify_progress(self, job: Job) -> None:
        try:
            await self.notifier.job_progress(job)
        except Exception:
            log.exception("job %s: progress notification failed", job.id)

    async def deliver(self, job: Job, attempt: int = 0) -> None:
        """Hand a finished job to the notifier once; retried with back-off until it lands."""
        try:
            await self.notifier.job_finished(job)
        except Exception:
            delay = min(300.0, 5.0 * 2**attempt)
            log.exception("job %s: delivering the result failed; retrying in %.0fs", job.id, delay)
            if not self._stopping:
                retry = asyncio.create_task(self._redeliver(job, attempt + 1, delay))
                self._retries.add(retry)
                retry.add_done_callback(self._retries.discard)
            return
        await self.store.update(job, delivered=True)

    async def _redeliver(self, job: Job, attempt: int, delay: float) -> None:
        await self.clock.sleep(delay)
        if not self._stopping:
            await self.deliver(job, attempt)

    async def _flush_progress(self) -> None:
        self._last_flush = self.clock.now()
        batch, self._dirty = self._dirty, {}
        changes = [
            (t.job, {"progress": t.job.progress, "estimated_time": t.job.estimated_time})
            for t in batch.values()
        ]
        try:
            await self.store.update_many(changes)
        except Exception:
            log.exception("writing progress of %d jobs failed", len(changes))
