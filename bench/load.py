"""Under real load, at the shipped defaults: issue 12's targets, against baselines in one run.

    python bench/load.py            # everything (~3-4 min on 2 cores)
    python bench/load.py --quick    # smoke: smaller workloads, the same parts (~40 s)
    python bench/load.py --sim-only # only the simulated parts (no Discord, no downloads)

Simulated parts (the real `Poller`, `AdaptiveSchedule`, `RateLimiter`, `WebhookHealth` on a
`ManualClock` against an in-memory API) at `API_REQUESTS_PER_SECOND` and `POLL_CONCURRENCY`
as shipped: the realistic mix with fixed-5 s and fixed-`POLL_INTERVAL` baselines, 5,000 open,
a restart with 10,000 running, a misconfigured webhook, and the budget trade-off curve. The
Discord part runs the real `DiscordNotifier` (discord.py over HTTP) in this process against
the fake Discord and a video server in another process. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.poller import KINDS, SimApi, SimTask, _request, percentile  # noqa: E402
from bot.core.apimart import TaskInfo  # noqa: E402
from bot.core.config import Settings  # noqa: E402
from bot.core.job import Job, JobState  # noqa: E402
from bot.core.poller import FixedSchedule, Poller, RateLimiter, Schedule  # noqa: E402
from bot.core.schedule import AdaptiveSchedule  # noqa: E402
from bot.core.webhook_health import WebhookHealth  # noqa: E402
from bot.testing.clock import ManualClock  # noqa: E402
from bot.testing.notifier import RecordingNotifier  # noqa: E402
from bot.testing.store import MemoryJobStore  # noqa: E402

#: reelbot as shipped: the settings' defaults (not the environment or a .env file).
DEFAULTS = Settings.model_construct()

#: The realistic mix: 4 % of jobs fail; of those 70 % early (moderation: 1-15 s after
#: submit), the rest late (an upstream timeout at 80-110 % of the planned run).
FAIL_SHARE = 0.04
EARLY_FAIL_SHARE = 0.7
#: 10 % of tasks never report progress; 5 % run 1.3-2.4x longer than their kind.
NO_PROGRESS_SHARE = 0.10
TAIL_SHARE = 0.05
#: Spread of durations within a kind (log-normal sigma): "variable lengths".
SPREAD = 0.25
#: How long one status poll takes to answer (seconds): a few hundred ms over the internet.
LATENCY = 0.25


def realistic_mix(
    n: int, window: float, *, seed: int = 1, start: float = 0.0, ages: float = 0.0
) -> list[SimTask]:
    """`n` jobs arriving as a Poisson stream over `window` s (from `start`).

    `ages` > 0: the jobs were submitted up to that many seconds *before* `start` instead (the
    running jobs a restart finds).
    """
    rng = random.Random(seed)
    weights = [k[5] for k in KINDS]
    t = start
    tasks = []
    for i in range(n):
        if ages:
            created = start - rng.uniform(0.0, ages)
        else:
            t += rng.expovariate(n / window)
            created = t
        kind = rng.choices(range(len(KINDS)), weights)[0]
        median, estimate = KINDS[kind][3], KINDS[kind][4]
        duration = median * math.exp(rng.gauss(0.0, SPREAD))
        if rng.random() < TAIL_SHARE:
            duration *= rng.uniform(1.3, 2.4)
        duration = min(estimate, max(60.0, duration))
        fail = rng.random() < FAIL_SHARE
        if fail:
            if rng.random() < EARLY_FAIL_SHARE:
                duration = rng.uniform(1.0, 15.0)
            else:
                duration *= rng.uniform(0.8, 1.1)
        tasks.append(
            SimTask(
                task_id=f"task_{seed}_{i:06d}",
                kind=kind,
                created=created,
                end=created + duration,
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


def asked_per_job(tasks: list[SimTask], initial: float, interval: float) -> float:
    """What a fixed schedule asks per job: a poll at `initial`, then every `interval` until
    the one that sees the end (the baseline's own requests/job shrink once the budget binds,
    which would flatter the comparison the wrong way)."""
    total = 0
    for t in tasks:
        life = max(0.0, t.end - t.created - initial)
        total += 1 + math.ceil(life / interval)
    return total / max(1, len(tasks))


class SettlingClock(ManualClock):
    """A `ManualClock` that lets the poller finish what is due *now* before time jumps.

    The plain one settles a fixed 5 loop rounds; a chain of "poll done -> loop wakes -> next
    polls start" at one instant takes more, and time would jump to the next deadline with
    due polls still waiting: simulated lateness that a real clock does not have.
    """

    def __init__(self) -> None:
        super().__init__()
        self.idle: Callable[[], bool] = lambda: True

    async def _settle(self, rounds: int = 5) -> None:  # type: ignore[override]
        for i in range(1000):
            await asyncio.sleep(0)
            if i >= rounds and self.idle():
                return


class FirstPollApi(SimApi):
    """The simulated API, answering after `LATENCY` s, noting when each task was first asked."""

    def __init__(self, tasks: list[SimTask], clock: ManualClock, t0: float) -> None:
        super().__init__(tasks, clock, t0)
        self.first: dict[str, float] = {}

    async def get_task(self, task_id: str) -> TaskInfo:
        self.first.setdefault(task_id, self.clock.now() - self.t0)
        await self.clock.sleep(LATENCY)  # polls in flight: POLL_CONCURRENCY matters
        return await super().get_task(task_id)


@dataclass
class Run:
    name: str
    tasks: list[SimTask]
    requests: int
    delays: dict[int, float]
    first_poll: dict[int, float]
    throttled: int
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def select(self, which: Callable[[SimTask], bool]) -> list[int]:
        return [i for i, t in enumerate(self.tasks) if which(t)]

    def pct(self, q: float, ids: list[int] | None = None) -> float:
        keys = ids if ids is not None else list(self.delays)
        return percentile([self.delays[i] for i in keys if i in self.delays], q)

    @property
    def failed(self) -> list[int]:
        return self.select(lambda t: t.fail)

    def per_job(self, ids: list[int] | None = None) -> float:
        if ids is None:
            return self.requests / max(1, len(self.tasks))
        return sum(self.tasks[i].polls for i in ids) / max(1, len(ids))


async def simulate(
    name: str,
    schedule: Schedule,
    tasks: list[SimTask],
    *,
    rate: float = DEFAULTS.API_REQUESTS_PER_SECOND,
    concurrency: int = DEFAULTS.POLL_CONCURRENCY,
    callbacks: bool | None = None,
    health: bool = False,
    seed: int = 7,
    watched: frozenset[int] = frozenset(),
) -> Run:
    """The real Poller over `tasks` in simulated time; jobs are tracked when `created` comes
    (jobs created before 0 are tracked at 0, as `resume()` does after a restart).

    `callbacks`: None = no webhook; True = APIMart calls back 0.2-1 s after each end; False =
    the webhook is configured but nothing ever arrives (a wrong public URL).
    `watched`: tasks whose requester watches them for their whole life (`Poller.watch`).
    """
    for task in tasks:
        task.polls = 0
    clock = SettlingClock()
    t0 = clock.now()
    api = FirstPollApi(tasks, clock, t0)
    notifier = RecordingNotifier(clock=clock, keep_progress=False)
    limiter = RateLimiter(clock, rate)
    poller = Poller(
        api, MemoryJobStore(), notifier, clock, schedule, limiter, concurrency=concurrency
    )
    monitor = None
    if health:
        monitor = WebhookHealth(schedule, on_change=lambda _: poller.replan())
        poller.on_finished.append(monitor.observe)
    rng = random.Random(seed)
    seq = itertools.count()
    events: list[tuple[float, int, str, int]] = [
        (t0 + max(0.0, task.created), next(seq), "arrive", i) for i, task in enumerate(tasks)
    ]
    if callbacks:
        events += [
            (t0 + t.end + rng.uniform(0.2, 1.0), next(seq), "callback", i)
            for i, t in enumerate(tasks)
        ]
    heapq.heapify(events)
    started = time.perf_counter()
    runner = asyncio.create_task(poller.run())
    warned_at = None
    total = len(tasks)
    clock.idle = lambda: not poller._wake.is_set()
    while len(notifier.finished) < total:
        deadline = clock.next_deadline()
        target = min(events[0][0] if events else math.inf, deadline or math.inf)
        if math.isinf(target):
            # Polls just started have not reached their first await yet: let them run.
            for _ in range(1000):
                await asyncio.sleep(0)
                if clock.next_deadline() is not None:
                    break
            else:
                crash = runner.exception() if runner.done() else None
                raise RuntimeError(
                    f"{name}: stalled with {total - len(notifier.finished)} open ({crash!r})"
                )
            continue
        await clock.run_until(target)
        while events and events[0][0] <= clock.now():
            _, _, kind, i = heapq.heappop(events)
            task = tasks[i]
            if kind == "arrive":
                job = Job(
                    id=i,
                    state=JobState.RUNNING,
                    request=_request(task.kind),
                    created_at=t0 + task.created,
                    task_id=task.task_id,
                    submitted_at=t0 + task.created,
                )
                if i in watched:
                    poller.watch(i, math.inf)
                poller.track(job)
            else:
                poller.poke(task.task_id)
        if monitor is not None and warned_at is None and not monitor.healthy:
            warned_at = clock.now() - t0
    await poller.stop()
    await clock.advance(1.0)
    await runner
    delays = {
        job.id: at - t0 - tasks[job.id].end
        for job, at in zip(notifier.finished, notifier.finished_at, strict=True)
    }
    first = {
        i: api.first[t.task_id] - max(0.0, t.created)
        for i, t in enumerate(tasks)
        if t.task_id in api.first
    }
    return Run(
        name,
        tasks,
        api.requests,
        delays,
        first,
        limiter.throttled,
        time.perf_counter() - started,
        {"warned_at": warned_at},
    )


def adaptive(*, webhook: bool = False) -> AdaptiveSchedule:
    """The schedule `reelbot run` builds from the shipped defaults."""
    return AdaptiveSchedule(
        initial_delay=DEFAULTS.POLL_INITIAL_DELAY,
        min_interval=DEFAULTS.POLL_INTERVAL,
        max_interval=DEFAULTS.POLL_MAX_INTERVAL,
        webhook=webhook,
    )


# ------------------------------------------------------------------------------------------
# The parts
# ------------------------------------------------------------------------------------------

Target = tuple[str, str, bool]


def _row(r: Run, budget: float | None = None) -> str:
    name = r.name if budget is None else f"{r.name} @ {budget:g}/s"
    return (
        f"  {name:<30} {r.per_job():>7.1f} {r.pct(50):>7.2f}s {r.pct(95):>6.2f}s"
        f" {r.pct(99):>6.2f}s {r.pct(95, r.failed):>7.1f}s {r.throttled:>5} {r.wall_s:>6.1f}"
    )


HEADER = (
    f"  {'schedule':<30} {'req/job':>7} {'p50':>8} {'p95':>7} {'p99':>7} {'fail p95':>8}"
    f" {'429s':>5} {'wall s':>6}"
)


async def part_mix(n: int, window: float) -> list[Target]:
    interval = DEFAULTS.POLL_INTERVAL
    rows = {
        "fixed 5 s (baseline)": FixedSchedule(DEFAULTS.POLL_INITIAL_DELAY, 5.0),
        f"fixed {interval:g} s (POLL_INTERVAL)": FixedSchedule(
            DEFAULTS.POLL_INITIAL_DELAY, interval
        ),
        "adaptive (shipped)": adaptive(),
    }
    runs = [await simulate(name, s, realistic_mix(n, window)) for name, s in rows.items()]
    print(
        f"\nMix - {n} jobs over {window / 60:g} min, budget {DEFAULTS.API_REQUESTS_PER_SECOND:g}"
        f" req/s, {DEFAULTS.POLL_CONCURRENCY} in flight (detection delay after the end)"
    )
    print(HEADER)
    for r in runs:
        print(_row(r))
    base, fixed_i, ours = runs
    asked = asked_per_job(ours.tasks, DEFAULTS.POLL_INITIAL_DELAY, 5.0)
    print(
        f"  fixed 5 s asks {asked:.1f} req/job (one poll per 5 s of each job's life); it got"
        f" {base.per_job():.1f} at this budget"
        + (" (throttled: the budget binds)" if base.per_job() < 0.95 * asked else "")
    )
    return [
        ("mix: detection p95 <= 6 s", f"{ours.pct(95):.2f} s", ours.pct(95) <= 6),
        ("mix: detection p99 <= 10 s", f"{ours.pct(99):.2f} s", ours.pct(99) <= 10),
        (
            "mix: failed-job p95 <= 15 s",
            f"{ours.pct(95, ours.failed):.2f} s",
            ours.pct(95, ours.failed) <= 15,
        ),
        (
            "mix: req/job <= 1/3 of fixed 5 s",
            f"{ours.per_job():.1f} vs {asked / 3:.1f}",
            ours.per_job() <= asked / 3,
        ),
        (
            f"INFO mix: p95 vs fixed {interval:g} s's",
            f"{ours.pct(95):.2f} vs {fixed_i.pct(95):.2f} s",
            ours.pct(95) <= fixed_i.pct(95),
        ),
    ]


#: The share of jobs someone watches (a terminal in the foreground, a recent `/video jobs`).
WATCHED_SHARE = 0.1


async def part_open(n: int, window: float) -> list[Target]:
    watched = frozenset(range(0, n, round(1 / WATCHED_SHARE)))
    r = await simulate(
        "adaptive (shipped)", adaptive(), realistic_mix(n, window, seed=2), watched=watched
    )
    limit = DEFAULTS.POLL_INITIAL_DELAY + 10
    worst = max(r.first_poll.values())
    print(f"\n{n} open - arriving over {window:g} s (budget binds: value order decides)")
    print(HEADER)
    print(_row(r))
    print(
        f"  first poll after submit: p50 {percentile(list(r.first_poll.values()), 50):.1f} s,"
        f" max {worst:.1f} s"
    )
    others = [i for i in range(n) if i not in watched]
    print(
        f"  watched ({WATCHED_SHARE:.0%}) vs unwatched detection: p50 "
        f"{r.pct(50, sorted(watched)):.1f} / {r.pct(50, others):.1f} s, p95 "
        f"{r.pct(95, sorted(watched)):.1f} / {r.pct(95, others):.1f} s, p99 "
        f"{r.pct(99, sorted(watched)):.1f} / {r.pct(99, others):.1f} s"
    )
    return [
        (f"{n} open: every first poll <= {limit:g} s", f"max {worst:.1f} s", worst <= limit),
        (f"{n} open: detection p95 <= 30 s", f"{r.pct(95):.1f} s", r.pct(95) <= 30),
    ]


async def part_restart(running: int, new: int) -> list[Target]:
    old = realistic_mix(running, 0.0, seed=3, ages=300.0)
    fresh = realistic_mix(new, new * 1.0, seed=4, start=1.0)
    r = await simulate("adaptive (shipped)", adaptive(), old + fresh)
    new_ids = range(running, running + new)
    waits = [r.first_poll[i] for i in new_ids]
    old_first = sorted(r.first_poll[i] for i in range(running))
    limit = DEFAULTS.POLL_INITIAL_DELAY + 1
    print(f"\nRestart - {running} running resumed at t=0, {new} new jobs over the next {new} s")
    print(
        f"  resumed: first polls done by p50 {percentile(old_first, 50):.0f} s, "
        f"p95 {percentile(old_first, 95):.0f} s, all {old_first[-1]:.0f} s; "
        f"detection p95 {r.pct(95, list(range(running))):.1f} s"
    )
    print(f"  new jobs: first poll after submit max {max(waits):.2f} s")
    return [
        (
            f"restart {running}: new job's first poll <= {limit:g} s",
            f"max {max(waits):.2f} s",
            max(waits) <= limit,
        )
    ]


async def part_webhook(n: int, window: float) -> list[Target]:
    tasks = realistic_mix(n, window, seed=5)
    r = await simulate(
        "webhook, no callbacks", adaptive(webhook=True), tasks, callbacks=False, health=True
    )
    ok = realistic_mix(n, window, seed=5)
    good = await simulate(
        "webhook, callbacks", adaptive(webhook=True), ok, callbacks=True, health=True
    )
    lifetime = percentile([t.end - t.created for t in tasks if not t.fail], 50)
    first = min(t.created for t in tasks)
    warned = r.extra["warned_at"]
    after = (warned - first) / lifetime if warned is not None else math.inf
    print(f"\nWebhook - {n} jobs, WEBHOOK_PUBLIC_URL wrong (no callback ever arrives)")
    print(HEADER)
    print(_row(r))
    print(_row(good))
    print(f"  warning after {after:.2f} job lifetimes (median lifetime {lifetime:.0f} s)")
    print(f"  healthy webhook warned: {'yes' if good.extra['warned_at'] is not None else 'no'}")
    return [
        ("webhook wrong: warning within 2 job lifetimes", f"{after:.2f}", after <= 2),
        (
            "webhook working: no warning",
            "none" if good.extra["warned_at"] is None else "warned",
            good.extra["warned_at"] is None,
        ),
    ]


async def part_curve(n_mix: int, n_open: int, budgets: list[float]) -> None:
    print("\nTrade-off - the budget against what it buys (adaptive schedule)")
    print(HEADER)
    for budget in budgets:
        for label, tasks in (
            (f"mix {n_mix}/4 min", realistic_mix(n_mix, 240.0)),
            (f"{n_open} open", realistic_mix(n_open, 240.0, seed=2)),
        ):
            r = await simulate(label, adaptive(), tasks, rate=budget)
            print(_row(r, budget))


# ------------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads: a smoke run")
    parser.add_argument("--sim-only", action="store_true", help="skip the Discord part")
    parser.add_argument("--curve", action="store_true", help="also print the trade-off curve")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part == "discord":
        from bench.discord_load import run_discord

        print(json.dumps(asyncio.run(run_discord(quick=args.quick))))
        return 0
    q = args.quick
    print(
        f"reelbot load benchmark - defaults: API_REQUESTS_PER_SECOND "
        f"{DEFAULTS.API_REQUESTS_PER_SECOND:g}, POLL_CONCURRENCY {DEFAULTS.POLL_CONCURRENCY}, "
        f"POLL_INITIAL_DELAY {DEFAULTS.POLL_INITIAL_DELAY:g}, POLL_INTERVAL "
        f"{DEFAULTS.POLL_INTERVAL:g}, POLL_MAX_INTERVAL {DEFAULTS.POLL_MAX_INTERVAL:g}"
    )
    targets: list[Target] = []
    targets += asyncio.run(part_mix(300 if q else 1000, 240.0))
    targets += asyncio.run(part_open(1500 if q else 5000, 240.0))
    targets += asyncio.run(part_restart(2000 if q else 10_000, 30 if q else 60))
    targets += asyncio.run(part_webhook(100 if q else 300, 240.0))
    if args.curve:
        asyncio.run(part_curve(1000, 5000, [20.0, 50.0, 100.0, 200.0]))
    if not args.sim_only:
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--part", "discord"]
            + (["--quick"] if q else []),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            print(child.stderr[-4000:], file=sys.stderr)
            raise SystemExit("the Discord part failed")
        from bench.discord_load import print_discord

        targets += print_discord(json.loads(child.stdout.strip().splitlines()[-1]))
    print("\nTargets")
    for label, value, ok in targets:
        if label.startswith("INFO "):  # shown for comparison; not one of the targets
            print(f"  INFO  {label[5:]:<50} {value}")
        else:
            print(f"  {_mark(ok)}  {label:<50} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
