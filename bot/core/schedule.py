"""When to ask about a task again: sparse while it is far from done, dense near its end.

Public clients poll every 5 s until a task ends, so a 4-minute job costs ~50 requests. Here
every answer moves the next poll. The schedule keeps one number per job in mind: the
*earliest plausible end* (seconds after submit), the latest of three lower bounds, each
calibrated on finished jobs rather than guessed:

- the **prior**: a low quantile of how long finished jobs with the same
  model/duration/resolution (`Tracked.key`) took; before enough are known, a fraction of the
  API's `estimated_time` (a loose upper bound: the docs show 600 s for a 240 s task);
- the **progress fraction**: a job showing progress `p` after `e` seconds is at most a
  fraction `x_hi(p)` through its run, so it ends no earlier than `e / x_hi(p)`; `x_hi` is a
  high quantile of "share of the run elapsed when progress read `p`", learned per model;
- the **progress rate**: `(100 - p) / rate` seconds remain at the current pace, times a low
  quantile of how wrong that pace forecast was on finished jobs.

Far from that bound the next poll lands after half the time still to go (at most
`max_interval`, POLL_MAX_INTERVAL), so progress is re-read a few times and the bound
tightens; within `min_interval` (POLL_INTERVAL) of it, and after it, polls are
`min_interval` apart — the densest. A job that runs far past anything plausible backs off
slowly again. Failures cannot be predicted: they are found at the current pace.

With a webhook (`webhook=True`) the callback is what finds the end; polls are only a safety
net: none before the job is probably over (a high duration quantile, or `estimated_time`),
then one every `max_interval`.

Under a binding request budget the *due time* says when a poll would help, and the
*priority* (`priority`) says how much: the poller spends each token on the due poll with the
lowest priority key (see `bot.core.selection`). A new job's first poll (which also finds
most early failures) and webhook hints come first; polls near a job's end and the early
failure checks are keyed by their due time; a sparse poll far from the end is keyed by its latest acceptable time
(`max_interval` after the last one), so it is stretched when tokens are short and never
starves. A watched job (its requester stares at it: `Poller.watch`) comes after first looks
and hints but ahead of every other ordinary poll, and is not stretched. A job picked up again after a restart (or from another worker) is first polled at
its earliest plausible end, not all at once.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

from bot.core.apimart import TaskInfo
from bot.core.poller import Tracked

Key = tuple[str, int | None, str]

#: Before anything is learned and without an `estimated_time`: the docs' "3–5 minutes".
DEFAULT_EXPECTED = 180.0
#: Cold start: the earliest plausible end is this share of the API's `estimated_time`.
COLD_LOW_SHARE_OF_ESTIMATE = 0.25
#: Cold start without `estimated_time`: the earliest plausible end (seconds).
COLD_LOW = 60.0
#: Samples needed before a learned quantile replaces the cold default.
MIN_SAMPLES = 20
#: Finished jobs remembered per key / per calibration bucket (a sliding window).
WINDOW = 400
#: The tail probability of each lower bound ("earliest plausible" = this quantile).
TAIL = 0.01
#: Far from the earliest end, the next poll comes after this share of the time to it.
SPARSE_FRACTION = 0.6
#: Observations kept per job for learning (elapsed, progress).
MAX_OBSERVATIONS = 32
#: The progress rate is measured over at least this many seconds.
MIN_RATE_SPAN = 8.0
#: With a webhook, the safety net starts after this quantile of learned durations ...
WEBHOOK_SAFETY_QUANTILE = 0.95
#: ... plus this grace (the webhook's first delivery plus its first retry, ~10 s).
WEBHOOK_GRACE = 15.0
#: Between the `TAIL` bound and this one an end is possible but rare: polls there are
#: `RELAXED_FACTOR` times `min_interval` apart (worst case ~9 s for ~4 % of jobs).
RELAXED_TAIL = 0.05
RELAXED_FACTOR = 2.0
#: Early failure checks after the first poll (seconds after submit): moderation refuses in
#: the first seconds, and a member should not wait a sparse minute to learn that.
EARLY_CHECKS = (15.0,)
#: A job first tracked longer than this after its submit is being picked up again (a
#: restart, another worker's lease): its first poll is spread, not a new job's first look.
RESUMED_AFTER = 15.0
#: Priority keys (seconds): lower is served first when tokens are short. A new job's first
#: poll and a webhook hint go ahead of everything else by this much.
FIRST_POLL_LEAD = 1e6
#: A watched job's poll (`Poller.watch`: someone stares at its progress) goes ahead of
#: unwatched ones by this much - but behind first looks, hints and polls already at their
#: latest acceptable time (`bot.core.selection.OVERDUE_LEAD` is larger): nobody starves.
WATCHED_LEAD = 2e5


class Window:
    """The last `size` values, kept sorted for quantiles (O(size) insert, O(1) query)."""

    __slots__ = ("_fifo", "_sorted", "size")

    def __init__(self, size: int = WINDOW) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, value: float) -> None:
        self._fifo.append(value)
        insort(self._sorted, value)
        if len(self._fifo) > self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def quantile(self, q: float) -> float:
        values = self._sorted
        return values[min(len(values) - 1, max(0, int(q * len(values))))]

    def __len__(self) -> int:
        return len(self._sorted)


def _bucket(progress: int) -> int:
    """Progress 1..99 in twenty buckets (0 is "pending": no information)."""
    return min(19, progress // 5)


def _rate_bucket(progress: int) -> int:
    return 0 if progress < 50 else 1 if progress < 80 else 2 if progress < 90 else 3


@dataclass
class AdaptiveSchedule:
    initial_delay: float = 5.0
    min_interval: float = 5.0
    max_interval: float = 60.0
    #: A webhook reports ends: poll only as a slow safety net.
    webhook: bool = False
    tail: float = TAIL
    sparse_fraction: float = SPARSE_FRACTION
    _durations: dict[Key | None, Window] = field(default_factory=dict, repr=False)
    _fractions: dict[tuple[str | None, int], Window] = field(default_factory=dict, repr=False)
    _ratios: dict[int, Window] = field(default_factory=dict, repr=False)

    # -- what is known -----------------------------------------------------------------------

    def _duration_window(self, key: Key) -> Window | None:
        for k in (key, None):
            window = self._durations.get(k)
            if window is not None and len(window) >= MIN_SAMPLES:
                return window
        return None

    def expected_total(self, tracked: Tracked) -> float:
        """The typical duration of such a job (seconds): the learned median, else a guess."""
        window = self._duration_window(tracked.key)
        if window is not None:
            return window.quantile(0.5)
        estimate = tracked.info.estimated_time if tracked.info is not None else None
        return min(DEFAULT_EXPECTED, estimate) if estimate else DEFAULT_EXPECTED

    def _prior_low(
        self, tracked: Tracked, estimate: float | None, progress: int, tail: float
    ) -> float:
        window = self._duration_window(tracked.key)
        if window is not None:
            return window.quantile(tail)
        if progress > 0:
            return 0.0  # a cold guess never outweighs what progress shows
        return COLD_LOW_SHARE_OF_ESTIMATE * estimate if estimate else COLD_LOW

    def _fraction_high(self, model: str, progress: int, tail: float) -> float:
        bucket = _bucket(progress)
        for k in ((model, bucket), (None, bucket)):
            window = self._fractions.get(k)
            if window is not None and len(window) >= MIN_SAMPLES:
                return window.quantile(1.0 - tail)
        return min(1.0, 0.15 + progress / 100)  # cold: progress may lag time a lot

    def _ratio_low(self, progress: int, tail: float) -> float:
        window = self._ratios.get(_rate_bucket(progress))
        if window is not None and len(window) >= MIN_SAMPLES:
            return window.quantile(tail)
        return 0.3  # cold: the pace may triple

    @staticmethod
    def _pace_remaining(obs: list[tuple[float, int]], upto: int) -> float | None:
        """Seconds left at the recent pace, from observation `upto` looking back."""
        elapsed, progress = obs[upto]
        if not 0 < progress < 100:
            return None
        for i in range(upto - 1, -1, -1):
            before, then = obs[i]
            if elapsed - before >= MIN_RATE_SPAN and then < progress:
                rate = (progress - then) / (elapsed - before)
                return (100 - progress) / rate
        return None

    def earliest_end(
        self, tracked: Tracked, elapsed: float, progress: int, tail: float | None = None
    ) -> float:
        """The earliest plausible end, in seconds after submit (`tail`: how plausible)."""
        tail = self.tail if tail is None else tail
        info = tracked.info
        estimate = info.estimated_time if info is not None else None
        low = self._prior_low(tracked, estimate, progress, tail)
        if progress > 0:
            low = max(low, elapsed / self._fraction_high(tracked.key[0], progress, tail))
            obs = tracked.extra.get("obs")
            if obs:
                remaining = self._pace_remaining(obs, len(obs) - 1)
                if remaining is not None:
                    low = max(low, elapsed + remaining * self._ratio_low(progress, tail))
        return low

    def _overdue_after(self, tracked: Tracked) -> float:
        window = self._duration_window(tracked.key)
        learned = 2.0 * window.quantile(0.99) if window is not None else 0.0
        estimate = tracked.info.estimated_time if tracked.info is not None else None
        return max(learned, 1.5 * (estimate or 0.0), 4.0 * DEFAULT_EXPECTED)

    # -- the Schedule protocol ---------------------------------------------------------------

    def first_due(self, tracked: Tracked, now: float) -> float:
        if self.webhook:
            return max(now, tracked.started + self._safety_start(tracked))
        elapsed = now - tracked.started
        if elapsed <= RESUMED_AFTER:
            return max(now, tracked.started + self.initial_delay)
        # Picked up again: spread by the expected end rather than all due at once (a herd of
        # 10,000 would take minutes of budget). Within `max_interval` either way.
        tracked.extra["resumed"] = True
        to_low = self.earliest_end(tracked, elapsed, tracked.last_progress) - elapsed
        return now + min(self.max_interval, max(0.0, to_low))

    def latest(self, tracked: Tracked, due: float) -> float:
        """The latest acceptable time of a due poll: `max_interval` after the last one."""
        return (tracked.last_poll_at if tracked.polls else due) + self.max_interval

    def priority(self, tracked: Tracked, due: float) -> float:
        """The poll's place in line when the budget is short (lower first); see the module."""
        if tracked.extra.pop("urgent", False):  # a webhook hint: the job is probably over
            return due - FIRST_POLL_LEAD
        if tracked.polls == 0 and not tracked.extra.get("resumed"):
            return due - FIRST_POLL_LEAD  # a new job's first look (and first failure check)
        if tracked.extra.get("watched_until", 0.0) > due:
            return due - WATCHED_LEAD  # someone is watching: not stretched, served early
        if tracked.extra.get("sparse"):
            last = tracked.last_poll_at or tracked.started
            return max(due, last + self.max_interval)
        return due

    def next_due(self, tracked: Tracked, info: TaskInfo, now: float) -> float:
        elapsed = now - tracked.started
        progress = info.progress if info.progress is not None else tracked.last_progress
        obs: list[tuple[float, int]] = tracked.extra.setdefault("obs", [])
        obs.append((elapsed, progress))
        if len(obs) > MAX_OBSERVATIONS:
            del obs[1]  # keep the first reading and the most recent ones
        tracked.extra["early"] = False
        tracked.extra["sparse"] = False
        if self.webhook:
            tracked.extra["sparse"] = True
            start = tracked.started + self._safety_start(tracked)
            return max(now + self.min_interval, start, now + self.max_interval)
        overdue = self._overdue_after(tracked)
        if elapsed > overdue:  # stuck or a very long tail: back off slowly
            interval = self.min_interval * (1.0 + (elapsed - overdue) / overdue * 4)
        else:
            to_low = self.earliest_end(tracked, elapsed, progress) - elapsed
            # Approach the bound in shrinking steps (each re-reads progress), but land on it
            # rather than creep towards it.
            interval = self.sparse_fraction * to_low
            if to_low - interval < self.min_interval:
                interval = to_low
                # Past the 1 % bound but short of the 5 % one, an end is still unlikely:
                # polls twice as far apart there, densest only where ends are common.
                likely = self.earliest_end(tracked, elapsed, progress, RELAXED_TAIL) - elapsed
                if likely > self.min_interval:
                    interval = min(RELAXED_FACTOR * self.min_interval, likely)
            else:
                tracked.extra["sparse"] = interval > self.min_interval
        early = next((at for at in EARLY_CHECKS if at > elapsed), None)
        if early is not None and not tracked.extra.get("resumed"):
            if tracked.started + early < now + interval:
                tracked.extra["early"] = True
                tracked.extra["sparse"] = False
                interval = max(self.min_interval, tracked.started + early - now)
        return now + min(self.max_interval, max(self.min_interval, interval))

    def retry_due(self, tracked: Tracked, now: float) -> float:
        return now + min(self.max_interval, self.min_interval * 2 ** min(tracked.failures, 6))

    def _safety_start(self, tracked: Tracked) -> float:
        window = self._duration_window(tracked.key)
        if window is not None:
            return window.quantile(WEBHOOK_SAFETY_QUANTILE) + WEBHOOK_GRACE
        # Cold: never wait longer than twice the docs' typical job for the first safety
        # poll, so a webhook that never calls back is noticed within two job lifetimes.
        estimate = tracked.info.estimated_time if tracked.info is not None else None
        return min(estimate or math.inf, 2 * DEFAULT_EXPECTED) + WEBHOOK_GRACE

    # -- learning ------------------------------------------------------------------------------

    def finished(self, tracked: Tracked, info: TaskInfo, now: float) -> None:
        """Learn from completed jobs only: a failure's time says nothing about a success's."""
        if info.status != "completed":
            return
        took = info.actual_time if info.actual_time and info.actual_time > 0 else None
        took = took or (now - tracked.started)
        if took <= 0:
            return
        for k in (tracked.key, None):
            self._durations.setdefault(k, Window()).add(took)
        obs: list[tuple[float, int]] = tracked.extra.get("obs") or []
        model = tracked.key[0]
        for i, (elapsed, progress) in enumerate(obs):
            if not 0 < progress < 100 or elapsed >= took:
                continue
            share = elapsed / took
            bucket = _bucket(progress)
            for fk in ((model, bucket), (None, bucket)):
                self._fractions.setdefault(fk, Window()).add(share)
            remaining = self._pace_remaining(obs, i)
            if remaining is not None and remaining > 0:
                ratio = (took - elapsed) / remaining
                self._ratios.setdefault(_rate_bucket(progress), Window()).add(ratio)
