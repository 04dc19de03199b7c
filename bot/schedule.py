"""When to ask about a task again: sparse while it is far from done, dense near its end.

Public clients poll every 5 s until a task ends, so a 4-minute job costs ~50 requests. Here
each answer moves the next poll: the expected end is estimated from what is known (typical
durations learned from finished jobs of the same model/duration/resolution, the progress rate,
the API's `estimated_time` as a loose upper bound) and the next poll lands at a fraction of
the remaining time, never closer than `min_interval` (POLL_INTERVAL) nor further than
`max_interval` (POLL_MAX_INTERVAL).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.apimart import TaskInfo
from bot.poller import Tracked

#: Before anything is learned, a job is expected to take this long (the docs: 3–5 minutes).
DEFAULT_EXPECTED = 180.0


@dataclass
class AdaptiveSchedule:
    initial_delay: float = 5.0
    min_interval: float = 5.0
    max_interval: float = 60.0
    #: The next poll lands after this fraction of the estimated remaining time.
    fraction: float = 0.5
    _learned: dict[tuple[str, int | None, str], float] = field(default_factory=dict)

    def expected_total(self, tracked: Tracked) -> float:
        learned = self._learned.get(tracked.key)
        if learned is not None:
            return learned
        return DEFAULT_EXPECTED

    def first_due(self, tracked: Tracked, now: float) -> float:
        expected = self.expected_total(tracked)
        first = max(self.initial_delay, min(self.max_interval, expected * self.fraction))
        return max(now, tracked.started + first)

    def next_due(self, tracked: Tracked, info: TaskInfo, now: float) -> float:
        elapsed = now - tracked.started
        remaining = self.expected_total(tracked) - elapsed
        progress = info.progress or 0
        if tracked.first_progress_at is not None and 0 < progress < 100:
            rate = progress / max(1.0, now - tracked.started)
            remaining = min(remaining, (100 - progress) / rate) if remaining > 0 else remaining
        interval = remaining * self.fraction
        return now + min(self.max_interval, max(self.min_interval, interval))

    def retry_due(self, tracked: Tracked, now: float) -> float:
        return now + min(self.max_interval, self.min_interval * 2 ** min(tracked.failures, 6))

    def finished(self, tracked: Tracked, info: TaskInfo, now: float) -> None:
        took = (info.actual_time or 0) or (now - tracked.started)
        old = self._learned.get(tracked.key)
        self._learned[tracked.key] = took if old is None else 0.8 * old + 0.2 * took
