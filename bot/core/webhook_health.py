"""Is APIMart's webhook reaching us? Judged from what polls find, not from what arrives.

A wrong `WEBHOOK_PUBLIC_URL` (a typo, a proxy that drops the path, a firewall) fails in
silence: APIMart's callbacks go nowhere, and in webhook mode polls are only a slow safety
net, so every job is found minutes late with no progress shown. Nothing arrives, so the
listener cannot tell; the poller can: a job it finds finished without a callback having
announced it is a *miss*. Misses happen now and then with a healthy webhook too (a lost
attempt awaiting its retry, a safety poll a moment before the callback), so one is not
enough: the webhook is judged unhealthy when, among the last `WINDOW` finished jobs, at
least `MIN_MISSES` and at least `MISS_SHARE` of them were misses.

Then a warning is logged once (naming the setting to check), `healthy` turns False for
`/readyz`/metrics or whoever asks, and the schedule falls back to normal polling
(`schedule.webhook = False`), so members get their results at the normal pace. Callbacks
that start arriving again (each one announced a job before the poll found it) turn it back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Finished jobs judged together.
WINDOW = 20
#: Misses needed before anything is said (a handful of jobs, well within 2 job lifetimes).
MIN_MISSES = 3
#: Share of misses among the window's jobs that counts as "callbacks stopped arriving".
MISS_SHARE = 0.5


class WebhookHealth:
    """Watches finished jobs (`Poller.on_finished`) and switches the schedule's mode."""

    def __init__(
        self,
        schedule: Any,
        *,
        on_change: Callable[[bool], None] | None = None,
        url_hint: str = "WEBHOOK_PUBLIC_URL",
    ) -> None:
        self.schedule = schedule
        #: Called with the new state (the runtime re-plans the open jobs' polls).
        self.on_change = on_change
        self.url_hint = url_hint
        self.healthy = True
        self.misses = 0
        self.announced = 0
        self._recent: deque[bool] = deque(maxlen=WINDOW)
        self._warned = False

    def observe(self, tracked: Any, info: Any, now: float) -> None:
        """A followed job ended: did a callback announce it before a poll found it?"""
        announced = bool(tracked.extra.get("hinted"))
        self._recent.append(announced)
        if announced:
            self.announced += 1
        else:
            self.misses += 1
        missed = sum(1 for a in self._recent if not a)
        if self.healthy and missed >= MIN_MISSES and missed >= MISS_SHARE * len(self._recent):
            if not self._warned:
                self._warned = True
                log.warning(
                    "webhook: %d of the last %d finished jobs were found by polling, not "
                    "announced by APIMart's callback; check %s (it must reach this "
                    "process's /callback from the internet). Polling at the normal pace "
                    "until callbacks arrive.",
                    missed,
                    len(self._recent),
                    self.url_hint,
                )
            self._switch(False)
        elif (
            not self.healthy
            and len(self._recent) >= WINDOW // 2
            and missed < MISS_SHARE * len(self._recent) / 2
        ):
            self._switch(True)
            log.info("webhook: callbacks are arriving again; polling as a safety net only")

    def _switch(self, healthy: bool) -> None:
        # Judge the new mode on its own jobs: in normal polling a poll may beat a callback.
        self._recent.clear()
        self.healthy = healthy
        self.schedule.webhook = healthy
        if self.on_change is not None:
            self.on_change(healthy)
