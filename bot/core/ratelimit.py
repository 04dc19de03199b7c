"""Request budgets: one token bucket, and the API rate limiter built on it.

The same refill arithmetic paces two things: polls of APIMart (`RateLimiter`, here) and
Discord progress edits (`bot.discord.notifier.EditThrottle`). It lives in one place so a fix
to it (clock skew, rounding) reaches both. Time comes from an injected `Clock`, so tests and
the benchmark move it by hand.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from bot.core.clock import Clock

log = logging.getLogger(__name__)

#: A 429's Retry-After pauses every poll; a huge value must not freeze the bot for hours. The
#: runtime passes POLL_MAX_INTERVAL instead (a job is still polled within it, even paused).
MAX_PAUSE = 60.0


class TokenBucket:
    """`rate` tokens a second up to `burst`; starts full. `rate` may be changed on the fly."""

    def __init__(self, clock: Clock, rate: float, burst: float | None = None) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.updated = clock.now()

    def refill(self, now: float | None = None) -> float:
        """Add what the time since the last refill earned; the seconds that passed."""
        now = self.clock.now() if now is None else now
        elapsed = max(0.0, now - self.updated)  # a clock stepping back earns nothing
        self.updated = max(self.updated, now)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        return elapsed

    def take(self) -> bool:
        """Spend one token if there is one (after refilling)."""
        self.refill()
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def wait(self) -> float:
        """Seconds until one token is there (0 if one is)."""
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def drain(self) -> None:
        self.tokens = 0.0


class RateLimiter:
    """A request budget shared by every poll: `rate` per second, paused after a 429.

    A 429 halves the rate and pauses everyone for Retry-After (or a second); each quiet second
    after that wins back a tenth of the configured rate, so the bot slows down together and
    recovers by itself. The 429s of one burst (every request in flight gets one, and both the
    API client's hook and the poller report it) halve the rate once, not once each.
    """

    #: 429s closer together than this (seconds) count as one burst.
    BURST_WINDOW = 1.0

    def __init__(
        self,
        clock: Clock,
        rate: float,
        burst: float | None = None,
        *,
        max_pause: float = MAX_PAUSE,
    ) -> None:
        self.clock = clock
        self.max_rate = rate
        #: No pause, whoever asks for it (a 429, another worker's 429, a joining worker), lasts
        #: longer than this (seconds) from the moment it is asked for.
        self.max_pause = max_pause
        self.bucket = TokenBucket(clock, rate, burst)
        self._paused_until = 0.0
        self._last_cut = float("-inf")
        self._lock = asyncio.Lock()
        self.throttled = 0
        #: The last 429's effect, (paused until, rate as a fraction of the maximum): what a
        #: shared budget (bot/core/workers.py) publishes so that other workers slow down too.
        self.last_penalty: tuple[float, float] | None = None
        #: Called after every `penalize` (the shared budget publishes at once).
        self.on_penalty: Callable[[], None] | None = None

    @property
    def rate(self) -> float:
        return self.bucket.rate

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def set_max_rate(self, rate: float, burst: float | None = None) -> None:
        """This worker's share of a budget shared with others changed (workers came or went).

        The current rate keeps its fraction of the maximum (a slow-down in progress stays).
        """
        if rate != self.max_rate:
            self.bucket.refill()
            self.bucket.rate = rate * (self.bucket.rate / self.max_rate)
            self.max_rate = rate
        self.bucket.burst = burst if burst is not None else max(1.0, rate)
        self.bucket.tokens = min(self.bucket.tokens, self.bucket.burst)

    def _pause_until(self, until: float) -> None:
        """Pause until `until`, at most `max_pause` from now (NaN is no pause)."""
        now = self.clock.now()
        if not until > now:  # also False for NaN
            return
        self._paused_until = max(self._paused_until, min(until, now + self.max_pause))

    def hold_until(self, until: float) -> None:
        """Send nothing before `until` (a joining worker waits until the others make room).

        Our own bounded wait (one heartbeat and a little), not an outside value: not capped
        by `max_pause`, which may be shorter (a test's POLL_MAX_INTERVAL of 0.5 s).
        """
        if until > self._paused_until:  # also False for NaN
            self._paused_until = until

    def slow_down(self, until: float, factor: float) -> None:
        """Another worker saw a 429: pause until `until`, then go on at `factor` of the max.

        `until` comes from the shared database (another process's clock and its Retry-After):
        capped like our own pauses.
        """
        if not until > self.clock.now():
            return
        if not math.isfinite(factor) or factor <= 0:
            factor = 0.5
        self._pause_until(until)
        self.bucket.rate = min(self.bucket.rate, max(self.max_rate / 32, self.max_rate * factor))
        self.bucket.drain()

    def _refill(self, now: float) -> None:
        # The rate recovers first, so the quiet time is paid at the recovered rate.
        elapsed = max(0.0, now - self.bucket.updated)
        if self.bucket.rate < self.max_rate and now >= self._paused_until:
            self.bucket.rate = min(self.max_rate, self.bucket.rate + self.max_rate * 0.1 * elapsed)
        self.bucket.refill(now)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock.now()
                if now < self._paused_until:
                    await self.clock.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self.bucket.tokens >= 1.0:
                    self.bucket.tokens -= 1.0
                    return
                await self.clock.sleep(self.bucket.wait())

    def reserve(self) -> float:
        """Take a token now if one is there (0.0), else the seconds to wait for one.

        The non-blocking form of `acquire` for a caller that picks *what* to spend the token
        on only once it has it (the poller's value-ordered selection).
        """
        now = self.clock.now()
        if now < self._paused_until:
            return self._paused_until - now
        if self._lock.locked():  # someone is waiting in `acquire`: let them go first
            return max(1e-3, self.bucket.wait())
        self._refill(now)
        if self.bucket.tokens >= 1.0:
            self.bucket.tokens -= 1.0
            return 0.0
        return max(1e-3, self.bucket.wait())

    def penalize(self, retry_after: float | None = None) -> None:
        """Called on every 429, from the poller or straight from the API client."""
        now = self.clock.now()
        self.throttled += 1
        if now - self._last_cut >= self.BURST_WINDOW:
            self._last_cut = now
            self.bucket.rate = max(self.max_rate / 32, self.bucket.rate / 2)
        self.bucket.drain()
        # Retry-After is an outside value: missing, zero, negative or not a number is a second.
        pause = retry_after if retry_after is not None and retry_after > 0 else 1.0
        if not pause <= self.max_pause:  # also catches NaN and infinity
            log.warning(
                "429 asked for a %.0f s pause; pausing all polls %.0f s", pause, self.max_pause
            )
            pause = self.max_pause
        self._pause_until(now + pause)
        self.last_penalty = (self._paused_until, self.bucket.rate / self.max_rate)
        if self.on_penalty is not None:
            self.on_penalty()
