"""One polling loop for every open job.

A heap of due times replaces the usual one-sleeping-task-per-job: the loop pops what is due,
polls it through a bounded pool of concurrent requests under one shared request budget
(`RateLimiter`), asks the `Schedule` when to look again, and hands each finished job to the
`Notifier`. 10,000 open jobs cost 10,000 small heap entries, not 10,000 coroutines.

The schedule is a strategy: `FixedSchedule` is what public clients do (every few seconds);
`bot.core.schedule.AdaptiveSchedule` asks far less often while a job is far from done.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.core.apimart import (
    ApimartError,
    ApiUnreachable,
    AuthenticationFailed,
    PermissionDenied,
    RateLimited,
    ServerError,
    TaskInfo,
    TaskNotFound,
)
from bot.core.clock import Clock
from bot.core.deadline import deadline_in
from bot.core.job import Job, JobState, plausible_duration
from bot.core.progress import duration_text
from bot.core.ratelimit import MAX_PAUSE as MAX_PAUSE  # re-exported: it is the poller's
from bot.core.ratelimit import RateLimiter
from bot.core.selection import ReadyQueue, priority_of
from bot.core.store import LeaseLost

if TYPE_CHECKING:
    from bot.core.leases import Leases

log = logging.getLogger(__name__)

#: A task the API says is *gone* (410) this many polls in a row is reported lost. A 404 is not
#: proof (a replica may lag, a proxy may answer): it is followed like any other refusal.
NOT_FOUND_LIMIT = 3
#: Progress is cosmetic: it is written to the store in batches at most this often (seconds).
PROGRESS_FLUSH_EVERY = 2.0
#: On shutdown, polls and deliveries under way get this long (seconds) to finish.
DRAIN_TIMEOUT = 5.0
#: Delivery attempts of one result in one process. The waits double from 5 s up to 5 minutes,
#: so these last about 1.5 hours: a Discord outage is outlived, while a channel that keeps
#: failing for a reason nobody fixes is not hammered for ever. The result is then parked: its
#: lease is kept (no other worker takes it up, to fail the same way) until this process
#: stops, and the next start or another worker tries again from the first attempt.
DELIVERY_ATTEMPTS = 24
#: The first and the longest wait between two delivery attempts (seconds).
DELIVERY_FIRST_WAIT = 5.0
DELIVERY_LONGEST_WAIT = 300.0
#: Answers that do not tell the job's state (a 404, a 401/403, an unreadable answer) in a row
#: before the requester is told the job is delayed. The job is still followed, more and more
#: slowly, until its age limit: a key can be fixed and a proxy can recover, and the task may
#: still finish and be billed.
REFUSAL_LIMIT = 3
#: Errors of our own (a store that refuses writes, a bug) while handling one job's polls, in a
#: row, before the job is closed as `unknown` with its task id (`reelbot status` and the next
#: start can follow it again). Every one counts; none is retried for ever.
ERROR_LIMIT = 10
#: A task still running after this long (seconds) is no longer followed (docs: 3–5 minutes;
#: the slowest models take well under an hour). The JOB_TIMEOUT setting overrides it.
MAX_JOB_AGE = 2 * 3600.0
#: Without an estimate from APIMart, a job is "taking longer than usual" after this (seconds).
SLOW_AFTER = 600.0
#: Statuses of a task still under way, as documented; any other non-final status is logged
#: once per job and treated as still running.
RUNNING_STATUSES = frozenset({"submitted", "pending", "queued", "processing", "running"})
#: A webhook hint for a task not yet followed (it raced the submit's answer) is kept this long.
EARLY_HINT_TTL = 120.0
#: Webhook hints poll one task at most this often (seconds), however many arrive.
POKE_MIN_GAP = 1.0
#: Results downloaded and posted at once: each holds a video (on disk, streamed) and an
#: upload; 200 finished jobs after a restart must not all download together.
DELIVERY_CONCURRENCY = 4
#: The loop wakes at least this often (seconds), so `heartbeat` proves it is alive (/readyz).
HEARTBEAT_EVERY = 5.0
#: A member who just looked their jobs up (`/video jobs`) is watching them for this long
#: (seconds): their polls go first while the budget is short (`Poller.watch`).
WATCH_AFTER_LOOKUP = 300.0
#: Jobs marked watched before this worker follows them (the submit is on its way), at most.
MAX_EARLY_WATCHES = 4096


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

    async def update_many(self, changes: Any) -> list[Job] | None: ...


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
    #: Consecutive errors of our own while handling this job (see ERROR_LIMIT).
    errors: int = 0
    #: Consecutive answers that retrying will not fix (see REFUSAL_LIMIT).
    refusals: int = 0
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


def _run_seconds(info: TaskInfo, tracked: Tracked, now: float) -> float:
    """How long the task ran, by the API's own clock when it says (no clock-skew surprises)."""
    if info.actual_time is not None:
        return info.actual_time
    if info.completed is not None and info.created is not None:
        ran = plausible_duration(info.completed - info.created)
        if ran is not None:
            return ran
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
        max_age: float = MAX_JOB_AGE,
    ) -> None:
        self.max_age = max_age
        self.delivery_attempts = DELIVERY_ATTEMPTS
        self.api = api
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.schedule = schedule
        self.limiter = limiter
        self.concurrency = concurrency
        self._heap: list[tuple[float, int, int]] = []
        #: (deadline, job id): when each job's age limit (`max_age`) runs out, so a job waiting
        #: out a rate-limit pause at that moment is ended then, not after the pause.
        self._deadlines: list[tuple[float, int]] = []
        self._seq = itertools.count()
        self._tracked: dict[int, Tracked] = {}
        self._by_task: dict[str, int] = {}
        self._early_hints: dict[str, float] = {}
        #: job id -> watched until (clock time), for jobs not followed here yet (`watch`).
        self._early_watches: dict[int, float] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._dirty: dict[int, Tracked] = {}
        self._last_flush = clock.now()
        self._wake = asyncio.Event()
        self._forwards = 0
        self._saturated = False
        self._stopping = False
        self.requests = 0
        self.errors = 0
        #: Due polls waiting for a request token, best first (`bot.core.selection`).
        self._ready = ReadyQueue()
        self._token_wait = 0.0
        self._deliveries = asyncio.Semaphore(DELIVERY_CONCURRENCY)
        #: Told of every finished job (`bot.core.webhook_health.WebhookHealth.observe`).
        self.on_finished: list[Any] = []
        #: This worker's leases (several workers on one database); None: the only process.
        self.leases: Leases | None = None
        #: Finished jobs handed to `deliver` and not delivered yet (by id).
        self._undelivered: dict[int, Job] = {}
        #: When the loop last went round (clock time); stale means the loop is stuck or gone.
        self.heartbeat = clock.now()

    # -- public API -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tracked)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._tracked

    def track(self, job: Job, *, started: float | None = None, due: float | None = None) -> None:
        """Follow a running job until it ends. Safe to call twice (the second is ignored).

        `due`: when to poll it first (a job taken over from another worker: its stored
        `next_poll_at`); by default the schedule's first poll.
        """
        if job.id in self._tracked or job.task_id is None:
            return
        request = job.request
        key = (request.model, request.effective_duration, request.effective_resolution)
        begun = started if started is not None else (job.submitted_at or self.clock.now())
        tracked = Tracked(job=job, due=0.0, key=key, started=begun, last_progress=job.progress)
        tracked.last_progress_at = begun
        self._tracked[job.id] = tracked
        self._by_task[job.task_id] = job.id
        self._watch_deadline(tracked)
        watched = self._early_watches.pop(job.id, None)
        if watched is not None:
            tracked.extra["watched_until"] = watched
        now = self.clock.now()
        hinted = self._early_hints.pop(job.task_id, None)
        if hinted is not None and now - hinted <= EARLY_HINT_TTL:
            self._push(tracked, now)  # a callback beat the submit's answer here: look now
        elif due is not None:
            self._push(tracked, max(now, due))
        else:
            self._push(tracked, self.schedule.first_due(tracked, now))

    def _remember_hint(self, task_id: str) -> None:
        """Keep a hint for a task that may be tracked in a moment (bounded, short-lived)."""
        now = self.clock.now()
        if len(self._early_hints) >= 1024:
            self._early_hints = {
                t: at for t, at in self._early_hints.items() if now - at <= EARLY_HINT_TTL
            }
            if len(self._early_hints) >= 1024:
                return  # a flood of unknown ids: forget them rather than grow
        self._early_hints[task_id] = now

    def poke(self, task_id: str, *, forward: bool = True) -> bool:
        """Poll this task now (a webhook said it may be done).

        A task this worker does not follow is marked due in the jobs table instead, for the
        worker that holds it (`forward`; several workers), and remembered briefly in case
        its submit's answer is still on the way here.

        A hint is never trusted, only acted on: the poll reads the truth. A hint that arrives
        while that task's poll is in flight is remembered and honoured when the poll returns
        (the answer may predate the end). However many hints come, one task is polled at most
        once per `POKE_MIN_GAP` seconds, so a flood of forged callbacks cannot multiply
        requests; every poll still waits its turn in the shared budget.
        """
        job_id = self._by_task.get(task_id)
        if job_id is None:
            self._remember_hint(task_id)
            if forward:  # a callback, not a hint already read from the table
                self._mark_due_elsewhere(task_id)
            return False
        tracked = self._tracked[job_id]
        tracked.extra["hinted"] = True
        if tracked.due == float("inf"):  # a poll is in flight
            tracked.poked = True
            return True
        tracked.extra["urgent"] = True
        due = max(self.clock.now(), tracked.last_poll_at + POKE_MIN_GAP)
        if tracked.due > due:
            self._push(tracked, due)
        elif tracked.due <= self.clock.now() and tracked.extra.get("moved_up") != tracked.due:
            # Already waiting for a token: move it up, once per due time however many come.
            tracked.extra["moved_up"] = tracked.due
            self._ready.add(job_id, tracked.due, *priority_of(self.schedule, tracked, tracked.due))
            self._wake.set()
        return True

    def watch(self, job_id: int, until: float) -> None:
        """Someone is looking at this job until `until` (clock time; `math.inf`: its whole
        life): while the budget is short its polls go ahead of unwatched ones (the schedule's
        `priority`), never past anyone's `POLL_MAX_INTERVAL` (`Schedule.latest`).

        Signals, cheap and real: `reelbot generate` in the foreground (its whole life), and a
        member's `/video jobs` lookup (`WATCH_AFTER_LOOKUP`). A job not followed here yet (its
        submit is on the way) is remembered until it is. The mark lives in this worker: the
        terminal follows its own job itself, and with several bot workers a lookup marks the
        jobs that worker holds (a few minutes' hint is not worth a column and a migration).
        """
        tracked = self._tracked.get(job_id)
        if tracked is None:
            now = self.clock.now()
            if len(self._early_watches) >= MAX_EARLY_WATCHES:
                self._early_watches = {j: u for j, u in self._early_watches.items() if u > now}
                if len(self._early_watches) >= MAX_EARLY_WATCHES:
                    return
            self._early_watches[job_id] = max(until, self._early_watches.get(job_id, until))
            return
        before = tracked.extra.get("watched_until", 0.0)
        tracked.extra["watched_until"] = max(before, until)
        now = self.clock.now()
        if before <= now < until and tracked.due <= now:
            # Already waiting for a token with an unwatched priority: line up again.
            self._ready.add(job_id, tracked.due, *priority_of(self.schedule, tracked, tracked.due))
            self._wake.set()

    def replan(self) -> None:
        """The schedule changed its mind (the webhook went quiet): plan every waiting poll
        again, keeping whichever time is sooner."""
        now = self.clock.now()
        for tracked in self._tracked.values():
            if tracked.due != float("inf"):
                due = max(now, self.schedule.first_due(tracked, now))
                if due < tracked.due:
                    self._push(tracked, due)

    def tracked(self, job_id: int) -> Tracked | None:
        return self._tracked.get(job_id)

    # -- several workers --------------------------------------------------------------------

    #: Webhook hints forwarded to the database at once at most (a flood is dropped, not queued).
    MAX_FORWARDS = 64

    def _mark_due_elsewhere(self, task_id: str) -> None:
        """A callback for a job another worker holds (or nobody yet): due now in the table.

        Its owner's claim loop sees `poked_at` within a second and polls it; if nobody holds
        it, whoever claims it next polls it first (`next_poll_at = now`).
        """
        if self.leases is None or self._stopping or self._forwards >= self.MAX_FORWARDS:
            return
        self._forwards += 1
        self._spawn(self._forward(task_id))

    async def _forward(self, task_id: str) -> None:
        try:
            assert self.leases is not None
            await self.leases.mark_due(task_id)
        except Exception:
            log.exception("could not mark task %s due for its owner", task_id)
        finally:
            self._forwards -= 1

    def forget(self, job_id: int) -> None:
        """Another worker holds this job now: stop following it, say nothing."""
        tracked = self._tracked.get(job_id)
        if tracked is not None:
            self._untrack(tracked)
        self._undelivered.pop(job_id, None)
        if self.leases is not None:
            self.leases.drop(job_id)
        log.info("job %s: its lease went to another worker; no longer followed here", job_id)

    def release_latest(self, count: int) -> list[tuple[Job, float | None]]:
        """Stop following the `count` resting jobs due last; returns them with their due time.

        Jobs with a poll in flight are skipped. The caller gives their leases back.
        """
        resting = [t for t in self._tracked.values() if t.due != float("inf")]
        resting.sort(key=lambda t: t.due, reverse=True)
        released: list[tuple[Job, float | None]] = []
        for tracked in resting[: max(0, count)]:
            self._untrack(tracked)
            released.append((tracked.job, tracked.due))
        return released

    def delivery_pending(self) -> list[Job]:
        """Finished jobs whose result has not been delivered yet (waiting for a retry)."""
        return list(self._undelivered.values())

    async def run(self) -> None:
        """The loop. Runs until `stop()`; cancellation-safe."""
        try:
            while not self._stopping:
                now = self.clock.now()
                self.heartbeat = now
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

    def _deadline(self, tracked: Tracked) -> float:
        """When the job's age limit runs out (clock time)."""
        return tracked.started + self.max_age

    def _watch_deadline(self, tracked: Tracked, at: float | None = None) -> None:
        if len(self._deadlines) > 2 * len(self._tracked) + 64:  # drop finished jobs' entries
            self._deadlines = [
                d
                for d in self._deadlines
                if (t := self._tracked.get(d[1])) and self._deadline(t) == d[0]
            ]
            heapq.heapify(self._deadlines)
        heapq.heappush(self._deadlines, (self._deadline(tracked), tracked.job.id))
        self._wake.set()

    def _push(self, tracked: Tracked, due: float) -> None:
        # Never planned past the job's deadline: its last look (or its end) comes on time.
        due = min(due, self._deadline(tracked))
        tracked.due = due
        heapq.heappush(self._heap, (due, next(self._seq), tracked.job.id))
        if self._heap[0][2] == tracked.job.id:
            self._wake.set()

    def _end_overdue(self, now: float) -> None:
        """Jobs whose age limit ran out while a rate-limit pause holds every poll end now.

        A job past its deadline that is polled ends after that poll (`_poll_once`); one that
        cannot be polled because APIMart asked everyone to wait (429, Retry-After) would
        otherwise wait out the pause first: `generate --timeout 8` once ran 65 s. Without a
        pause it is simply due (its due time is capped at the deadline) and gets its last look;
        it is checked again each second until that look is taken.
        """
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, job_id = heapq.heappop(self._deadlines)
            tracked = self._tracked.get(job_id)
            if tracked is None or self._deadline(tracked) != deadline:
                continue  # finished, or another life of the same job
            if tracked.due == float("inf"):
                continue  # a poll is in flight: it ends the job when it returns
            if self.limiter.paused_until > now:
                tracked.due = float("inf")  # out of the queues: nothing else may start it
                self._spawn(
                    self._give_up_quietly(
                        tracked,
                        f"APIMart asked reelbot to wait (rate limit) past the job's "
                        f"{duration_text(self.max_age)} limit.",
                    )
                )
            else:
                heapq.heappush(self._deadlines, (deadline, job_id))
                break  # looked at again in a second (`_next_timeout`)

    async def _give_up_quietly(self, tracked: Tracked, why: str) -> None:
        """`_give_up` from the loop: a store that fails is logged, the end delivered anyway."""
        try:
            await self._give_up(tracked, why)
        except LeaseLost:
            self.forget(tracked.job.id)
        except Exception:
            log.exception("job %s: could not record the end of its time", tracked.job.id)

    def _start_due(self, now: float) -> None:
        """Move due jobs into the ready line; spend each token there is on the best of it."""
        self._end_overdue(now)
        while self._heap and self._heap[0][0] <= now:
            due, _, job_id = heapq.heappop(self._heap)
            tracked = self._tracked.get(job_id)
            if tracked is None or tracked.due != due:
                continue  # stale entry: finished, or rescheduled by poke()
            self._ready.add(job_id, due, *priority_of(self.schedule, tracked, due))
        self._ready.promote(now, self._tracked.get)
        self._token_wait = 0.0
        while len(self._inflight) < self.concurrency and self._ready.has_valid(self._tracked.get):
            wait = self.limiter.reserve()
            if wait > 0:
                self._token_wait = wait
                break
            chosen = self._ready.pop(self._tracked.get)
            assert chosen is not None
            tracked = self._tracked[chosen]
            tracked.due = float("inf")
            task = asyncio.create_task(self._poll(tracked, paid=True))
            self._inflight.add(task)
            task.add_done_callback(self._poll_done)

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("poll crashed", exc_info=task.exception())
        # Wake the loop if something is due, or if it went to sleep because every slot was
        # taken (its timeout then ignored the heap: without this it would sleep for an hour).
        if self._saturated or self._ready or (self._heap and self._heap[0][0] <= self.clock.now()):
            self._saturated = False
            self._wake.set()

    def _next_timeout(self, now: float) -> float:
        self._saturated = len(self._inflight) >= self.concurrency
        if self._saturated or not self._heap:
            timeout = 3600.0
        else:
            timeout = max(0.0, self._heap[0][0] - now)
        if not self._saturated and self._ready:  # waiting for the next request token
            timeout = min(timeout, self._token_wait)
        if self._dirty:
            timeout = min(timeout, max(0.0, self._last_flush + PROGRESS_FLUSH_EVERY - now))
        if self._deadlines:  # a deadline already passed is re-checked each second
            timeout = min(timeout, max(self._deadlines[0][0] - now, 0.0) or 1.0)
        return min(timeout, HEARTBEAT_EVERY)

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
        deadline = self.clock.now() + DRAIN_TIMEOUT
        # Polls finishing now may start deliveries: keep waiting until nothing is left.
        while busy := self._inflight | self._background:
            left = deadline - self.clock.now()
            if left <= 0:
                for task in busy:
                    task.cancel()
                await asyncio.gather(*busy, return_exceptions=True)
                break
            await asyncio.wait(busy, timeout=left)
        if self._dirty:
            await self._flush_progress()

    async def _poll(self, tracked: Tracked, *, paid: bool = False) -> None:
        """One poll; whatever goes wrong counts toward the job's bounds (never endless)."""
        try:
            await self._poll_once(tracked, paid=paid)
        except LeaseLost:
            self.forget(tracked.job.id)
        except Exception as exc:
            # A database error, a bug, an answer that broke our parsing: look again later, but
            # every such error counts, and the job's age limit holds as for any other error.
            self.errors += 1
            tracked.errors += 1
            job = tracked.job
            if tracked.errors == 1:
                log.exception("job %s: handling a poll failed; will retry", job.id)
            else:  # the traceback was logged once; from here on, one line per error
                log.warning(
                    "job %s: handling a poll failed again (%d/%d): %s",
                    job.id,
                    tracked.errors,
                    ERROR_LIMIT,
                    type(exc).__name__,
                )
            if job.id not in self._tracked or tracked.due != float("inf"):
                return
            if tracked.errors >= ERROR_LIMIT or self._too_old(tracked):
                await self._abandon(tracked)
            else:
                self._retry(tracked)

    def _too_old(self, tracked: Tracked) -> bool:
        return self.clock.now() - tracked.started > self.max_age

    async def _abandon(self, tracked: Tracked) -> None:
        """Close a job our own errors keep us from following; said once, with its task id."""
        await self._record_end(
            tracked,
            {
                "state": JobState.UNKNOWN,
                "finished_at": self.clock.now(),
                "error_code": "poll_errors",
                "error_message": (
                    f"reelbot could not keep following task {tracked.job.task_id} (errors on "
                    "its side, logged for the operator). It may still finish and be billed; "
                    f"`reelbot status {tracked.job.task_id}` looks it up again."
                ),
            },
            force=True,
        )
        log.warning("job %s: given up after %d errors", tracked.job.id, tracked.errors)

    async def _record_end(
        self, tracked: Tracked, fields: dict[str, Any], *, force: bool = False
    ) -> None:
        """Write a job's end, then stop following it and deliver it.

        A store that refuses the write makes the poll fail (retried, counted); once the job's
        bounds are reached (`force`, or ERROR_LIMIT errors) the end is delivered from memory
        anyway: a result we could not store still reaches its requester (the CLI prints it).
        """
        job = tracked.job
        try:
            await self.store.update(job, **fields)
        except LeaseLost:
            raise  # another worker holds it now: nothing to say, it will (`_poll`)
        except Exception:
            if not force and tracked.errors + 1 < ERROR_LIMIT and not self._too_old(tracked):
                raise
            log.exception("job %s: its end could not be stored; delivering it anyway", job.id)
            for name, value in fields.items():
                setattr(job, name, value)
        job.notice = None
        self._untrack(tracked)
        self._spawn(self.deliver(job))

    async def _poll_once(self, tracked: Tracked, *, paid: bool = False) -> None:
        job = tracked.job
        assert job.task_id is not None
        try:
            if not paid:  # `_start_due` took the token when it chose this poll
                await self.limiter.acquire()
            self.requests += 1
            tracked.polls += 1
            tracked.last_poll_at = now = self.clock.now()
            # The client's retry sleeps end within the job's deadline and one poll interval.
            max_interval = getattr(self.schedule, "max_interval", MAX_PAUSE)
            with deadline_in(min(self._deadline(tracked) - now, max_interval)):
                info = await self.api.get_task(job.task_id)
        except RateLimited as exc:
            self.errors += 1
            self.limiter.penalize(exc.retry_after)
            await self._retry_or_give_up(tracked)
            return
        except (ServerError, ApiUnreachable) as exc:
            self.errors += 1
            log.warning("job %s: poll failed, will retry: %s", job.id, exc)
            await self._retry_or_give_up(tracked)
            return
        except ApimartError as exc:
            self.errors += 1
            if exc.status == 410 and not isinstance(exc, TaskNotFound):
                tracked.not_found += 1
                if tracked.not_found >= NOT_FOUND_LIMIT:
                    await self._lost(tracked)
                else:
                    self._retry(tracked)
                return
            # A 404, a 401/403, another 4xx, an unreadable answer: none proves the task ended
            # (it may complete and be billed). Keep following, ever more slowly, until the
            # age limit; after a few in a row, tell the requester the job is delayed.
            tracked.refusals += 1
            if tracked.refusals == 1:
                log.error("job %s: polling task %s refused: %s", job.id, job.task_id, exc)
            if tracked.refusals == REFUSAL_LIMIT:
                log.warning("job %s: %d refusals in a row; delayed", job.id, tracked.refusals)
                job.notice = "delayed"
                await self._notify_progress(job)
            if isinstance(exc, AuthenticationFailed | PermissionDenied):
                tracked.failures = max(tracked.failures, 6)
            await self._retry_or_give_up(tracked)
            return
        tracked.failures = 0
        tracked.not_found = 0
        tracked.refusals = 0
        tracked.info = info
        now = self.clock.now()
        if info.terminal:
            await self._finish(tracked, info, now)
            tracked.errors = 0
            return
        if now - tracked.started > self.max_age:
            await self._give_up(
                tracked, f"APIMart had not finished it after {duration_text(self.max_age)}."
            )
            return
        if info.status not in RUNNING_STATUSES and info.status not in tracked.extra.setdefault(
            "odd_statuses", set()
        ):
            tracked.extra["odd_statuses"].add(info.status)
            log.warning(
                "job %s: task %s has the undocumented status %r; treated as still running",
                job.id,
                job.task_id,
                info.status[:40],
            )
        notice = job.notice
        if notice == "delayed":
            job.notice = None
        estimate = info.estimated_time or SLOW_AFTER
        if job.notice is None and now - tracked.started > estimate:
            job.notice = "slow"
        progress = info.progress if info.progress is not None else job.progress
        if progress != tracked.last_progress:
            if tracked.first_progress_at is None and progress > 0:
                tracked.first_progress_at = now
            tracked.last_progress = progress
            tracked.last_progress_at = now
        moved = progress != job.progress or info.estimated_time != job.estimated_time
        if moved:
            job.progress = progress
            job.estimated_time = info.estimated_time
            self._dirty[job.id] = tracked
        if moved or job.notice != notice:
            await self._notify_progress(job)
        tracked.errors = 0
        self._push(tracked, self._hinted(tracked, self.schedule.next_due(tracked, info, now)))

    async def _retry_or_give_up(self, tracked: Tracked) -> None:
        """Retry after an error, unless the job has been followed for too long already."""
        if self._too_old(tracked):
            await self._give_up(
                tracked, f"APIMart could not be asked about it for {duration_text(self.max_age)}."
            )
        else:
            self._retry(tracked)

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
        self._early_watches.pop(job.id, None)
        self._dirty.pop(job.id, None)
        if job.task_id is not None:
            self._by_task.pop(job.task_id, None)

    async def _finish(self, tracked: Tracked, info: TaskInfo, now: float) -> None:
        """Record the outcome first; only then stop following the job and deliver it."""
        state = {
            "completed": JobState.COMPLETED,
            "failed": JobState.FAILED,
            "cancelled": JobState.CANCELLED,
        }[info.status]
        job = tracked.job
        progress = 100 if state is JobState.COMPLETED else (info.progress or job.progress)
        error_code, error_message = info.error_code, info.error_message
        if state is JobState.COMPLETED and not info.video_urls:
            log.warning(
                "job %s: task %s completed without a video URL; answer keys: %s",
                job.id,
                job.task_id,
                sorted(info.raw),
            )
            error_code = error_code or "no_video_url"
            error_message = error_message or (
                f"APIMart reports this video done but sent no link (task {job.task_id}). "
                "The operator can look the task up in APIMart's console."
            )
        fields: dict[str, Any] = {
            "state": state,
            "progress": progress,
            "estimated_time": info.estimated_time,
            "finished_at": now,
            "run_seconds": _run_seconds(info, tracked, now),
            "cost": info.cost,
            "credits_cost": info.credits_cost,
            "video_urls": list(info.video_urls),
            "expires_at": info.expires_at,
            "error_code": error_code,
            "error_message": error_message,
        }
        await self._record_end(tracked, fields)
        self.schedule.finished(tracked, info, now)
        for observe in self.on_finished:
            observe(tracked, info, now)
        log.info(
            "job %s: %s (task %s, cost %s, credits %s)",
            job.id,
            state.value,
            job.task_id,
            info.cost,
            info.credits_cost,
        )

    async def _lost(self, tracked: Tracked) -> None:
        fields = {
            "state": JobState.FAILED,
            "finished_at": self.clock.now(),
            "error_code": "task_not_found",
            "error_message": "APIMart says this task is gone; it cannot be followed any further.",
        }
        log.warning("job %s: task %s gone, given up", tracked.job.id, tracked.job.task_id)
        await self._record_end(tracked, fields, force=True)

    async def _give_up(self, tracked: Tracked, why: str) -> None:
        """Stop following a job whose end cannot be learned; it may still be billed."""
        job = tracked.job
        fields = {
            "state": JobState.UNKNOWN,
            "finished_at": self.clock.now(),
            "error_code": "not_followed",
            "error_message": (
                f"reelbot stopped following task {job.task_id}: {why} "
                "If it finishes later it may still be billed."
            ),
        }
        log.warning("job %s: given up on task %s: %s", job.id, job.task_id, why)
        await self._record_end(tracked, fields, force=True)

    async def _notify_progress(self, job: Job) -> None:
        try:
            await self.notifier.job_progress(job)
        except Exception:
            log.exception("job %s: progress notification failed", job.id)

    async def deliver(self, job: Job, attempt: int = 0) -> None:
        """Hand a finished job to the notifier once; retried with back-off until it lands.

        With several workers the job's lease is renewed first: a worker that lost it posts
        nothing (its new owner delivers), and the holder has a whole lease to post in.
        """
        self._undelivered[job.id] = job
        try:
            if self.leases is not None and job.owner == self.leases.worker_id:
                if not await self.leases.confirm(job):
                    self.forget(job.id)
                    return
        except Exception:
            log.exception("job %s: could not renew its lease before delivery", job.id)
        try:
            # The notifier derives the message's nonce from the job (issue 8), so a post
            # repeated after a lost `delivered` write (a worker killed in between) is dropped
            # by Discord.
            async with self._deliveries:  # bounded: each one holds a video and an upload
                await self.notifier.job_finished(job)
        except Exception:
            if self._park(job, attempt + 1):
                return
            delay = min(DELIVERY_LONGEST_WAIT, DELIVERY_FIRST_WAIT * 2**attempt)
            log.exception("job %s: delivering the result failed; retrying in %.0fs", job.id, delay)
            if not self._stopping:
                retry = asyncio.create_task(self._redeliver(job, attempt + 1, delay))
                self._retries.add(retry)
                retry.add_done_callback(self._retries.discard)
            return
        self._undelivered.pop(job.id, None)
        try:
            await self.store.update(job, delivered=True)
            if self.leases is not None:
                self.leases.drop(job.id)
        except LeaseLost:
            log.warning("job %s: delivered, but its lease had gone to another worker", job.id)
            self.forget(job.id)
        except Exception:
            # The requester has the result; only the flag is missing. Log loudly, and stop
            # renewing the lease: kept, it would pin the row (undelivered, owned, followed by
            # nobody) for as long as this worker lives. Once it runs out, whoever claims the
            # job finds its result in the channel (nonce, history) and records the flag.
            log.exception("job %s: delivered, but recording that failed", job.id)
            if self.leases is not None:
                self.leases.drop(job.id)

    def _park(self, job: Job, attempts: int) -> bool:
        """After the last attempt: stop retrying in this process (see DELIVERY_ATTEMPTS).

        The job stays undelivered in the table (`reelbot jobs` shows it) and in the shutdown
        hand-over, so the next start, or the worker that takes it then, tries again.
        """
        if attempts < self.delivery_attempts:
            return False
        log.error(
            "job %s: result not delivered after %d attempts; left undelivered until the next start",
            job.id,
            attempts,
            exc_info=True,
        )
        return True

    async def _redeliver(self, job: Job, attempt: int, delay: float) -> None:
        """Wait, then deliver as a background task (a shutdown cancels only the wait)."""
        await self.clock.sleep(delay)
        if not self._stopping:
            self._spawn(self.deliver(job, attempt))

    async def _flush_progress(self) -> None:
        self._last_flush = self.clock.now()
        batch, self._dirty = self._dirty, {}
        changes = [
            (t.job, {"progress": t.job.progress, "estimated_time": t.job.estimated_time})
            for t in batch.values()
        ]
        try:
            lost = await self.store.update_many(changes)
        except Exception:
            log.exception("writing progress of %d jobs failed", len(changes))
            return
        for job in lost or ():
            self.forget(job.id)
