"""Polling benchmark: fixed 5-second polling against reelbot's adaptive schedule.

    python bench/poller.py            # full run: 10,000 simulated jobs + 10,000 over real HTTP
    python bench/poller.py --quick    # a small smoke run (500 jobs)
    python bench/poller.py --sim-only # only part 1

Part 1 (schedule quality) runs the real `Poller` with a `ManualClock` against an in-memory
simulated API, so hours of job time take seconds. Part 2 (scale) runs the real runtime pieces
(ApimartClient over aiohttp, Store on SQLite, Poller) against the stand-in API in another
process on 127.0.0.1. See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import math
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.core.apimart import TaskInfo  # noqa: E402
from bot.core.config import Settings  # noqa: E402
from bot.core.job import Job, JobState  # noqa: E402
from bot.core.poller import FixedSchedule, Poller, RateLimiter, Schedule  # noqa: E402
from bot.core.request import VideoRequest, build_request  # noqa: E402
from bot.core.schedule import AdaptiveSchedule  # noqa: E402
from bot.testing.clock import ManualClock, ScaledClock  # noqa: E402
from bot.testing.notifier import RecordingNotifier  # noqa: E402
from bot.testing.store import MemoryJobStore  # noqa: E402

#: reelbot as shipped: the settings' defaults (not the environment or a .env file).
DEFAULTS = Settings.model_construct()

# ------------------------------------------------------------------------------------------
# Part 1: schedule quality, simulated time
# ------------------------------------------------------------------------------------------

#: (model, duration, resolution, median seconds, estimated_time the API reports, weight)
KINDS: list[tuple[str, int, str, float, float, float]] = [
    ("sora-2", 4, "720p", 170.0, 600.0, 0.30),
    ("sora-2-pro", 8, "1080p", 260.0, 600.0, 0.15),
    ("veo3.1-fast-official", 8, "720p", 200.0, 600.0, 0.25),
    ("veo3.1-quality-official", 8, "1080p", 280.0, 600.0, 0.10),
    ("Omni-Flash-Ext", 6, "720p", 230.0, 600.0, 0.20),
]
FAIL_SHARE = 0.03
TAIL_SHARE = 0.05
NO_PROGRESS_SHARE = 0.08
#: Simulated webhook: each delivery attempt is lost with this probability (a receiver that is
#: up; APIMart retries on any non-2xx or a 10 s silence) ...
WEBHOOK_LOSS = 0.01
#: ... else arrives after a delay drawn from this range (seconds) ...
WEBHOOK_DELAY = (0.2, 1.0)
#: ... and a lost one is retried after these delays (APIMart's documented ~10/30/60 s).
WEBHOOK_RETRIES = (10.0, 30.0, 60.0)


@dataclass(slots=True)
class SimTask:
    task_id: str
    kind: int
    created: float
    end: float
    estimated_time: float
    fail: bool
    pending_share: float
    gamma: float
    wobble: float
    waves: int
    step: int
    shows_progress: bool
    polls: int = 0

    def progress(self, now: float) -> int:
        """Uneven progress: 0 while pending, then a wavy curve, reported in steps, < 100."""
        if not self.shows_progress:
            return 0
        total = self.end - self.created
        x = min(1.0, (now - self.created) / total)
        if x < self.pending_share:
            return 0
        u = ((x - self.pending_share) / (1 - self.pending_share)) ** self.gamma
        k = 2 * math.pi * self.waves
        g = u + self.wobble * math.sin(k * u) / k
        value = max(1, min(99, int(99 * g)))
        return max(1, value - value % self.step)


def make_workload(n: int, *, seed: int = 1, arrival_window: float | None = None) -> list[SimTask]:
    """`n` jobs arriving as a Poisson stream, durations mostly 3–5 min with a tail to 10."""
    rng = random.Random(seed)
    window = arrival_window if arrival_window is not None else max(600.0, n * 0.24)
    weights = [k[5] for k in KINDS]
    t = 0.0
    tasks = []
    for i in range(n):
        t += rng.expovariate(n / window)
        kind = rng.choices(range(len(KINDS)), weights)[0]
        median, estimate = KINDS[kind][3], KINDS[kind][4]
        duration = median * math.exp(rng.gauss(0.0, 0.15))
        if rng.random() < TAIL_SHARE:
            duration *= rng.uniform(1.3, 2.4)
        duration = min(estimate, max(60.0, duration))  # estimated_time: a loose upper bound
        fail = rng.random() < FAIL_SHARE
        if fail:
            duration *= rng.uniform(0.05, 1.0)  # moderation early, upstream timeouts late
        tasks.append(
            SimTask(
                task_id=f"task_{i:06d}",
                kind=kind,
                created=t,
                end=t + duration,
                estimated_time=estimate,
                fail=fail,
                pending_share=rng.uniform(0.05, 0.15),
                gamma=rng.uniform(0.6, 1.4),
                wobble=rng.uniform(0.3, 0.9),
                waves=rng.randint(1, 4),
                step=rng.choice((1, 1, 1, 5, 10)),
                shows_progress=rng.random() >= NO_PROGRESS_SHARE,
            )
        )
    return tasks


class SimApi:
    """In-memory `TaskReader`: answers from each task's plan at the clock's time."""

    def __init__(self, tasks: list[SimTask], clock: ManualClock, t0: float) -> None:
        self.tasks = {t.task_id: t for t in tasks}
        self.clock = clock
        self.t0 = t0
        self.requests = 0

    async def get_task(self, task_id: str) -> TaskInfo:
        task = self.tasks[task_id]
        task.polls += 1
        self.requests += 1
        now = self.clock.now() - self.t0
        done = now >= task.end
        if done:
            status = "failed" if task.fail else "completed"
            progress = task.progress(task.end) if task.fail else 100
        else:
            status = "processing" if task.progress(now) > 0 else "pending"
            progress = task.progress(now)
        return TaskInfo(
            task_id=task_id,
            status=status,
            progress=progress,
            estimated_time=task.estimated_time,
            actual_time=round(task.end - task.created) if done else None,
            created=self.t0 + task.created,
            completed=self.t0 + task.end if done else None,
            cost=(0.0 if task.fail else 0.4) if done else None,
            credits_cost=None,
            video_urls=("https://cdn.example/v.mp4",) if done and not task.fail else (),
            expires_at=None,
            error_code="task_failed" if done and task.fail else None,
            error_message="upstream timeout" if done and task.fail else None,
            raw={},
        )


@dataclass
class SimResult:
    name: str
    jobs: int
    requests: int
    delays: list[float]
    failed_delays: list[float]
    wall_s: float
    peak_open: int
    throttled: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_job(self) -> float:
        return self.requests / max(1, self.jobs)

    def pct(self, q: float, values: list[float] | None = None) -> float:
        return percentile(self.delays if values is None else values, q)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


_REQUESTS: dict[tuple[str, int, str], VideoRequest] = {}


def _request(kind: int) -> VideoRequest:
    model, duration, resolution = KINDS[kind][:3]
    key = (model, duration, resolution)
    if key not in _REQUESTS:
        _REQUESTS[key] = build_request(
            model=model, prompt="benchmark", duration=duration, resolution=resolution
        )
    return _REQUESTS[key]


async def simulate(
    name: str,
    schedule: Schedule,
    tasks: list[SimTask],
    *,
    webhook: bool = False,
    rate: float = 2000.0,
    concurrency: int = 64,
    seed: int = 7,
) -> SimResult:
    """Run the real Poller over `tasks` in simulated time; return what it cost and how fast."""
    for task in tasks:
        task.polls = 0
    clock = ManualClock()
    t0 = clock.now()
    api = SimApi(tasks, clock, t0)
    ends = {i: t0 + task.end for i, task in enumerate(tasks)}
    notifier = RecordingNotifier(clock=clock, keep_progress=False)
    limiter = RateLimiter(clock, rate)
    store = MemoryJobStore()
    poller = Poller(api, store, notifier, clock, schedule, limiter, concurrency=concurrency)
    rng = random.Random(seed)
    # Events: (time, seq, kind, index[, attempt]) — arrivals and webhook deliveries.
    seq = itertools.count()
    events: list[tuple[float, int, str, int, int]] = [
        (t0 + task.created, next(seq), "arrive", i, 0) for i, task in enumerate(tasks)
    ]
    heapq.heapify(events)
    if webhook:
        for i, task in enumerate(tasks):
            heapq.heappush(events, (t0 + task.end, next(seq), "callback", i, 0))
    started = time.perf_counter()
    runner = asyncio.create_task(poller.run())
    peak = 0
    total = len(tasks)
    while len(notifier.finished) < total:
        deadline = clock.next_deadline()
        next_event = events[0][0] if events else math.inf
        target = min(next_event, deadline if deadline is not None else math.inf)
        if math.isinf(target):
            raise RuntimeError(
                f"{name}: simulation stalled with {total - len(notifier.finished)} open jobs"
            )
        await clock.run_until(target)
        while events and events[0][0] <= clock.now():
            _, _, kind, i, attempt = heapq.heappop(events)
            task = tasks[i]
            if kind == "arrive":
                job = Job(
                    id=i,
                    state=JobState.RUNNING,
                    request=_request(task.kind),
                    created_at=clock.now(),
                    task_id=task.task_id,
                    submitted_at=clock.now(),
                )
                poller.track(job)
                peak = max(peak, len(poller))
            elif kind == "callback":  # the task ended: APIMart tries to deliver
                if rng.random() < WEBHOOK_LOSS:
                    if attempt < len(WEBHOOK_RETRIES):
                        when = clock.now() + WEBHOOK_RETRIES[attempt]
                        heapq.heappush(events, (when, next(seq), "callback", i, attempt + 1))
                else:
                    when = clock.now() + rng.uniform(*WEBHOOK_DELAY)
                    heapq.heappush(events, (when, next(seq), "deliver", i, attempt))
            else:  # "deliver": the callback reached reelbot's endpoint
                poller.poke(task.task_id)
    await poller.stop()
    await clock.advance(1.0)
    await runner
    delays = [
        at - ends[job.id] for job, at in zip(notifier.finished, notifier.finished_at, strict=True)
    ]
    failed = [
        delay
        for job, delay in zip(notifier.finished, delays, strict=True)
        if job.state is not JobState.COMPLETED
    ]
    return SimResult(
        name=name,
        jobs=total,
        requests=api.requests,
        delays=delays,
        failed_delays=failed,
        wall_s=time.perf_counter() - started,
        peak_open=peak,
        throttled=limiter.throttled,
    )


def schedules(
    initial: float = DEFAULTS.POLL_INITIAL_DELAY,
    interval: float = DEFAULTS.POLL_INTERVAL,
    max_interval: float = DEFAULTS.POLL_MAX_INTERVAL,
) -> dict[str, Callable[[], tuple[Schedule, bool]]]:
    """The baseline, reelbot as shipped (the settings' defaults), and with the webhook on.

    The fourth row, at a 5 s dense interval, is information only (no target): it shows why the
    default is 4.5 s — at 5 s the adaptive schedule's tail can only tie the baseline's p95.
    """
    return {
        "fixed 5 s (baseline)": lambda: (FixedSchedule(5.0, 5.0), False),
        f"adaptive ({interval:g} s)": lambda: (
            AdaptiveSchedule(initial, interval, max_interval),
            False,
        ),
        "adaptive + webhook": lambda: (
            AdaptiveSchedule(initial, interval, max_interval, webhook=True),
            True,
        ),
        "adaptive (5 s), info": lambda: (AdaptiveSchedule(initial, 5.0, max_interval), False),
    }


async def run_simulation(n: int, *, seed: int = 1) -> list[SimResult]:
    results = []
    for name, make in schedules().items():
        tasks = make_workload(n, seed=seed)
        schedule, webhook = make()
        results.append(await simulate(name, schedule, tasks, webhook=webhook))
    return results


def print_simulation(results: list[SimResult]) -> None:
    print(
        f"\nPart 1 - schedule quality (simulated time, {results[0].jobs} jobs, "
        f"peak {max(r.peak_open for r in results)} open)"
    )
    header = (
        f"{'schedule':<22} {'req/job':>8} {'delay p50':>10} {'p95':>7} {'p99':>7}"
        f" {'fail p95':>9} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<22} {r.per_job:>8.1f} {r.pct(50):>9.2f}s {r.pct(95):>6.2f}s"
            f" {r.pct(99):>6.2f}s {r.pct(95, r.failed_delays):>8.1f}s {r.wall_s:>7.1f}"
        )


def simulation_targets(results: list[SimResult]) -> list[tuple[str, str, bool]]:
    base, adaptive, hook = results[:3]
    targets = [
        (
            f"{adaptive.name}: req/job <= 1/3 baseline",
            f"{adaptive.per_job:.1f} vs {base.per_job / 3:.1f}",
            adaptive.per_job <= base.per_job / 3,
        ),
        (
            f"{adaptive.name}: p95 <= baseline p95",
            f"{adaptive.pct(95):.2f}s vs {base.pct(95):.2f}s",
            adaptive.pct(95) <= base.pct(95),
        ),
    ]
    return [
        *targets,
        ("webhook p95 delay <= 1 s", f"{hook.pct(95):.2f}s", hook.pct(95) <= 1.0),
        ("webhook requests/job <= 2", f"{hook.per_job:.2f}", hook.per_job <= 2.0),
    ]


# ------------------------------------------------------------------------------------------
# Part 2: scale over real HTTP, the stand-in API in another process
# ------------------------------------------------------------------------------------------

API_KEY = "sk-bench-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the stand-in API did not start on port {port}")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _lag_monitor(samples: list[float], stop: asyncio.Event, every: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(every)
        samples.append(max(0.0, loop.time() - start - every))


async def run_scale(
    n: int, *, time_scale: float, rate: float, concurrency: int, submitters: int = 32
) -> dict[str, Any]:
    """Submit `n` jobs through JobService to the stand-in API (another process); follow all."""
    import aiohttp

    from bot.core.apimart import ApimartClient
    from bot.core.jobs import JobService
    from bot.core.store import Store

    port = _free_port()
    fake = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "fake-api", "--port", str(port),
        "--time-scale", str(time_scale), "--api-key", API_KEY,
        "--balance", "1e12",  # 10,000 jobs must never meet a 402, however the timing falls
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tmp = tempfile.TemporaryDirectory()
    try:
        await _wait_listening(port)
        clock = ScaledClock(time_scale)
        limiter = RateLimiter(clock, rate)
        notifier = RecordingNotifier(keep_progress=False)
        async with aiohttp.ClientSession() as session:
            api = ApimartClient(
                session, f"http://127.0.0.1:{port}", API_KEY, on_rate_limited=limiter.penalize
            )
            store = await Store.open(f"sqlite+aiosqlite:///{tmp.name}/scale.db")
            schedule = AdaptiveSchedule()
            poller = Poller(api, store, notifier, clock, schedule, limiter, concurrency=concurrency)
            jobs = JobService(store=store, api=api, poller=poller, notifier=notifier, clock=clock)
            runner = asyncio.create_task(poller.run())
            lag: list[float] = []
            stop = asyncio.Event()
            monitor = asyncio.create_task(_lag_monitor(lag, stop))
            cpu0, wall0 = _cpu(), time.monotonic()
            counter = itertools.count()
            submit_failed = 0
            peak_open = 0
            kinds = [_request(i) for i in range(len(KINDS))]

            async def submitter() -> None:
                nonlocal submit_failed, peak_open
                while (i := next(counter)) < n:
                    job = await jobs.submit(kinds[i % len(kinds)])
                    if job.state is not JobState.RUNNING:
                        submit_failed += 1
                    peak_open = max(peak_open, len(poller))

            await asyncio.gather(*(submitter() for _ in range(submitters)))
            submitted_s = time.monotonic() - wall0
            polls0, poll_t0 = poller.requests, time.monotonic()
            # A refused submit is reported finished at once, so every job ends up counted.
            with contextlib.suppress(TimeoutError):
                await notifier.wait_count(n, timeout=900 / time_scale + 120)
            wall = time.monotonic() - wall0
            polling_s = time.monotonic() - poll_t0
            cpu = _cpu() - cpu0
            stop.set()
            await monitor
            await poller.stop()
            await runner
            await store.close()
        return {
            "jobs": n,
            "peak_open": peak_open,
            "finished": len(notifier.finished),
            "states": dict(notifier.states()),
            "submit_s": submitted_s,
            "wall_s": wall,
            "polls": poller.requests,
            "polls_per_job": poller.requests / max(1, n),
            "req_per_s": (poller.requests - polls0) / max(1e-9, polling_s),
            "req_per_s_overall": (poller.requests + n) / max(1e-9, wall),
            "cpu_per_1000": cpu / n * 1000,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "lag_p99_ms": percentile(lag, 99) * 1000,
            "lag_max_ms": max(lag) * 1000 if lag else float("nan"),
            "errors": poller.errors,
            "submit_failed": submit_failed,
            "throttled": limiter.throttled,
            "time_scale": time_scale,
            "rate": rate,
        }
    finally:
        fake.terminate()
        try:
            await asyncio.wait_for(fake.wait(), timeout=10)
        except TimeoutError:
            fake.kill()
        tmp.cleanup()


class _FirstPoll:
    """A task reader that notes when the first poll is issued (the resume measurement)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.first_seen = asyncio.Event()

    async def get_task(self, task_id: str) -> TaskInfo:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_seen.set()
        return TaskInfo(task_id, "processing", 10, 600.0, None, None, None, None, None, (),
                        None, None, None, raw={})  # fmt: skip


async def run_resume(n: int) -> dict[str, Any]:
    """Insert `n` running jobs, then time `JobService.resume()` until the first poll."""
    from bot.core.clock import SystemClock
    from bot.core.jobs import JobService
    from bot.core.store import Store, jobs_table

    tmp = tempfile.TemporaryDirectory()
    try:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp.name}/resume.db")
        now = time.time()
        rows = []
        for i in range(n):
            request = _request(i % len(KINDS))
            rows.append(
                {
                    "state": JobState.RUNNING.value,
                    "model": request.model,
                    "request": request.model_dump(mode="json", exclude_none=True),
                    "origin": {"kind": "bench", "channel_id": "1234567890"},
                    "requester": str(1000 + i % 50),
                    "guild_id": "42",
                    "task_id": f"task_resume_{i:06d}",
                    "progress": 30,
                    "created_at": now - 120,
                    "submitted_at": now - 120 + random.random() * 60,
                    "video_urls": [],
                    "delivered": False,
                }
            )
        async with store.engine.begin() as conn:
            await conn.execute(jobs_table.insert(), rows)
        clock = SystemClock()
        reader = _FirstPoll()
        notifier = RecordingNotifier(keep_progress=False)
        poller = Poller(
            reader, store, notifier, clock, AdaptiveSchedule(), RateLimiter(clock, 20.0)
        )
        jobs = JobService(store=store, api=None, poller=poller, notifier=notifier, clock=clock)  # type: ignore[arg-type]
        runner = asyncio.create_task(poller.run())
        await asyncio.sleep(0.05)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        counts = await jobs.resume()
        resumed = time.perf_counter() - started
        await asyncio.wait_for(reader.first_seen.wait(), timeout=30)
        assert reader.first is not None
        first_poll = reader.first - started
        await poller.stop()
        await runner
        await store.close()
        return {
            "jobs": n,
            "tracked": counts["polling"],
            "resume_s": resumed,
            "first_poll_s": first_poll,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss0,
        }
    finally:
        tmp.cleanup()


# ------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_scale(scale: dict[str, Any], resume: dict[str, Any]) -> list[tuple[str, str, bool]]:
    print(
        f"\nPart 2 - scale over real HTTP ({scale['jobs']} jobs, stand-in API in another process, "
        f"time scale {scale['time_scale']:g}, budget {scale['rate'] * scale['time_scale']:g} req/s)"
    )
    rows = [
        ("peak open jobs", f"{scale['peak_open']}"),
        ("finished", f"{scale['finished']} {scale['states']}"),
        ("submit phase (s)", f"{scale['submit_s']:.1f}"),
        ("run wall time (s)", f"{scale['wall_s']:.1f}"),
        ("polls per job", f"{scale['polls_per_job']:.1f}"),
        ("requests/s sustained (polls after submit)", f"{scale['req_per_s']:.0f}"),
        ("requests/s overall (submits + polls)", f"{scale['req_per_s_overall']:.0f}"),
        ("CPU seconds per 1,000 jobs", f"{scale['cpu_per_1000']:.1f}"),
        ("peak RSS (MB)", f"{scale['rss_mb']:.0f}"),
        ("event-loop lag p99 / max (ms)", f"{scale['lag_p99_ms']:.1f} / {scale['lag_max_ms']:.0f}"),
        ("request errors / 429s / failed submits",
         f"{scale['errors']} / {scale['throttled']} / {scale['submit_failed']}"),
        (f"resume {resume['jobs']} running jobs: resume() (s)", f"{resume['resume_s']:.2f}"),
        ("resume: until the first poll (s)", f"{resume['first_poll_s']:.2f}"),
    ]  # fmt: skip
    for label, value in rows:
        print(f"  {label:<44} {value}")
    return [
        ("peak RSS <= 200 MB", f"{scale['rss_mb']:.0f} MB", scale["rss_mb"] <= 200),
        ("event-loop lag p99 <= 50 ms", f"{scale['lag_p99_ms']:.1f} ms", scale["lag_p99_ms"] <= 50),
        (
            "resume -> first poll <= 3 s",
            f"{resume['first_poll_s']:.2f} s",
            resume["first_poll_s"] <= 3,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500 jobs: a smoke run")
    parser.add_argument("--sim-only", action="store_true", help="only part 1 (simulated)")
    parser.add_argument("--jobs", type=int, help="jobs per part (default 10,000; 500 with --quick)")
    parser.add_argument(
        "--time-scale", type=float, help="part 2: API time speed-up (default 2; 20 with --quick)"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="part 2: request budget, requests per API second"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="part 2: polls in flight")
    parser.add_argument("--part", choices=["scale"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.jobs or (500 if args.quick else 10_000)
    args.time_scale = args.time_scale or (20.0 if args.quick else 2.0)
    if args.part == "scale":  # in a fresh process, so its peak RSS is its own
        import json

        scale = asyncio.run(
            run_scale(n, time_scale=args.time_scale, rate=args.rate, concurrency=args.concurrency)
        )
        print(json.dumps(scale))
        return 0
    print(f"reelbot polling benchmark - {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    results = asyncio.run(run_simulation(n))
    print_simulation(results)
    targets = simulation_targets(results)
    if not args.sim_only:
        import json

        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--part", "scale", "--jobs", str(n),
             "--time-scale", str(args.time_scale), "--rate", str(args.rate),
             "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        scale = json.loads(child.stdout.strip().splitlines()[-1])
        resume = asyncio.run(run_resume(n))
        targets += print_scale(scale, resume)
    print("\nTargets")
    for label, value, ok in targets:
        print(f"  {_mark(ok)}  {label:<46} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
