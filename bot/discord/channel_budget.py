"""One request budget per Discord channel, shared by every message the bot sends or edits there.

Discord allows about 5 message requests per channel per 5 s (posts and edits together; the
exact bucket is learned from headers, but this is what it is for messages). The progress
throttle (`EditThrottle`) kept edits under it, but final status edits and result posts went
around it: with a dozen jobs ending together one channel saw 16 requests in 5 s, and on the
real service that means 429s and results held back behind them.

Here every request to a channel takes a slot of a sliding window (`limit` per `per` s, a
little wider than Discord's to absorb network jitter), so no 5-second window ever holds
more than `limit`. Requests that must go out wait in line by priority — results first
(they are what the member waits for), then the final status edits; progress edits never
wait: they go out only while at least `progress_reserve` slots are free and nobody waits,
otherwise they are dropped (the next one, or the final edit, shows the latest state).

Several workers on PostgreSQL share one bot token, so one Discord bucket per channel: with
`shared` (bot/core/send_window.py) each slot is also taken in the database, atomically, so
all workers together stay under the limit. The local window stays in front of it (our own
sends count in both; a full local window needs no query) and the priority order above is
kept per worker. Bounded: a query that fails or takes over `SHARED_TIMEOUT` falls back to the
local window with a warning, and a waiter the shared window has refused for `SHARED_MAX_WAIT`
goes on the local window alone, so a result is never held back forever.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from bot.core.clock import Clock
from bot.core.send_window import SharedWindow

log = logging.getLogger(__name__)

#: Discord's per-channel message bucket: 5 requests per 5 s.
CHANNEL_LIMIT = 5
#: The window measured on our side: a little wider, so requests delayed on the way (one
#: sent at t, the next at t + 5.0 arriving first) still never meet 6 in 5 s at Discord.
CHANNEL_WINDOW = 5.5
#: Slots a progress edit must leave free (a result and its final edit may come any moment).
PROGRESS_RESERVE = 2
#: Quiet channels are forgotten once this many are remembered.
MAX_CHANNELS = 1024
#: Longest a shared-window query may take before the local window decides alone (seconds).
SHARED_TIMEOUT = 1.0
#: Longest the shared window may keep refusing a waiting request before it goes on the
#: local window alone (seconds): many workers flooding one channel delay a result, never
#: bury it.
SHARED_MAX_WAIT = 30.0
#: At most one warning per this many seconds about the shared window failing.
WARN_EVERY = 60.0


class Priority(IntEnum):
    """Who goes first when a channel's slots are short (lower first)."""

    RESULT = 0  # the result message, or its follow-up through the interaction
    FINAL_STATUS = 1  # the status message's last edit


@dataclass
class _Channel:
    sent: deque[float] = field(default_factory=deque)
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None
    #: Since when the shared window has refused the waiting requests (None: it has not).
    refused_since: float | None = None


class ChannelBudget:
    """Slots per channel; `acquire` waits in priority order, `try_progress` never waits."""

    def __init__(
        self,
        clock: Clock,
        *,
        limit: int = CHANNEL_LIMIT,
        per: float = CHANNEL_WINDOW,
        progress_reserve: int = PROGRESS_RESERVE,
        shared: SharedWindow | None = None,
    ) -> None:
        self.clock = clock
        self.shared = shared
        self._warned_at: float | None = None
        self.limit = limit
        self.per = per
        self.progress_reserve = progress_reserve
        self._channels: dict[int, _Channel] = {}
        self._seq = itertools.count()
        #: Progress edits dropped for want of a slot (for the benchmark and the curious).
        self.dropped = 0

    def _channel(self, channel_id: int) -> _Channel:
        state = self._channels.get(channel_id)
        if state is None:
            if len(self._channels) >= MAX_CHANNELS:
                self._forget_quiet()
            state = self._channels[channel_id] = _Channel()
        return state

    def _forget_quiet(self) -> None:
        now = self.clock.now()
        for cid, state in list(self._channels.items()):
            self._prune(state, now)
            if not state.sent and not state.waiters:
                del self._channels[cid]

    def _prune(self, state: _Channel, now: float) -> None:
        while state.sent and now - state.sent[0] >= self.per:
            state.sent.popleft()

    def free(self, channel_id: int) -> int:
        """Slots open in this channel right now."""
        state = self._channel(channel_id)
        self._prune(state, self.clock.now())
        return self.limit - len(state.sent)

    def try_progress(self, channel_id: int) -> bool:
        """Take a slot for a progress edit if it leaves room for what matters; else drop it."""
        state = self._channel(channel_id)
        now = self.clock.now()
        self._prune(state, now)
        if state.waiters or self.limit - len(state.sent) <= self.progress_reserve:
            self.dropped += 1
            return False
        state.sent.append(now)
        return True

    async def confirm_progress(self, channel_id: int) -> bool:
        """After `try_progress`: take the slot in the shared window too (never waits).

        False drops the edit (and gives back the local slot); without `shared`, True."""
        if self.shared is None:
            return True
        hint = await self._take_shared(channel_id, keep_free=self.progress_reserve)
        if hint is None:
            return True
        state = self._channel(channel_id)
        if state.sent:
            state.sent.pop()  # the slot `try_progress` noted locally goes back
        self.dropped += 1
        return False

    async def _take_shared(self, channel_id: int, *, keep_free: int = 0) -> float | None:
        """A slot of the shared window: None if taken (or no shared window, or it failed:
        the local window decides), else seconds until one may free."""
        if self.shared is None:
            return None
        try:
            async with asyncio.timeout(SHARED_TIMEOUT):
                return await self.shared.take(channel_id, keep_free=keep_free)
        except Exception as exc:
            now = self.clock.now()
            if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "the shared Discord channel budget is unavailable (%s); each worker keeps "
                    "its own window meanwhile",
                    type(exc).__name__,
                )
            return None

    async def acquire(self, channel_id: int, priority: Priority) -> None:
        """Wait for a slot in this channel, behind anything of higher priority."""
        state = self._channel(channel_id)
        now = self.clock.now()
        self._prune(state, now)
        if not state.waiters and len(state.sent) < self.limit and state.pump is None:
            if await self._take_shared(channel_id) is None:
                state.sent.append(self.clock.now())
                return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(state.waiters, (int(priority), next(self._seq), future))
        if state.pump is None or state.pump.done():
            state.pump = asyncio.create_task(self._pump(state, channel_id))
        await future  # a cancelled waiter is skipped by the pump

    async def _pump(self, state: _Channel, channel_id: int) -> None:
        """Hand out slots as the window frees them, best waiter first."""
        try:
            while state.waiters:
                now = self.clock.now()
                self._prune(state, now)
                if len(state.sent) >= self.limit:
                    await self.clock.sleep(max(1e-3, state.sent[0] + self.per - now))
                    continue
                if state.waiters[0][2].done():  # cancelled while waiting: skip it
                    heapq.heappop(state.waiters)
                    continue
                hint = await self._take_shared(channel_id)
                if hint is not None:
                    if state.refused_since is None:
                        state.refused_since = now
                    if now - state.refused_since < SHARED_MAX_WAIT:
                        await self.clock.sleep(hint)
                        continue
                    log.warning(
                        "channel %s: the shared budget refused for %.0f s; sending on this "
                        "worker's window alone",
                        channel_id,
                        now - state.refused_since,
                    )
                state.refused_since = None
                _, _, future = heapq.heappop(state.waiters)
                state.sent.append(self.clock.now())
                if future.done():  # cancelled during the query: the slot is spent anyway
                    continue
                future.set_result(None)
        finally:
            state.pump = None
