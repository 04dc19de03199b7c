"""A sliding window of sends shared by every worker: at most `limit` per `per` seconds per key.

Discord's per-channel message bucket belongs to the bot token, not to a process: two workers
posting results into one channel, each keeping its own 5-per-5-s window, together sent ~10 in
5 s and met 429s. On PostgreSQL the window lives in the database instead.

Shape: `limit` slot rows per key (`send_slots`), each holding the time it was last taken. A
send takes a slot whose time is at least `per` old, in one statement:

    UPDATE send_slots SET sent_at = now
    WHERE key = k AND slot = (SELECT slot … WHERE sent_at <= now - per
                              ORDER BY sent_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING slot

A slot is only ever retaken once its last send left the window, so every send of the last
`per` seconds still occupies a slot of its own: no window holds more than `limit`, however
many workers send. Two workers taking at once lock different slots (SKIP LOCKED) and never
wait on each other. Autocommit: one round trip when a slot is free. The slot rows of a key
are created on first use (`INSERT … ON CONFLICT DO NOTHING`, then the take is tried again);
rows untouched for an hour are pruned (only free slots are old, so pruning never frees a
slot early; a key missing rows is seeded again on its next refusal).

Times are each worker's clock (epoch seconds): workers must keep their clocks in sync (NTP,
as for leases); a skew of `s` seconds narrows the window by `s`, which the caller's window
(a little wider than Discord's) absorbs for small skews.

Core, and free of Discord: a key is an integer. The priority order among one worker's
waiters and what to do when the database fails are the caller's (bot/discord/channel_budget).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from bot.core.clock import Clock
from bot.core.schema import send_slots
from bot.core.store import Store

log = logging.getLogger(__name__)

#: Slot rows not taken for this long are deleted by the retention pass.
KEEP_SECONDS = 3600.0
#: The shortest wait hinted after a refusal (seconds): a slot freeing "now" is retried soon,
#: not in a busy loop.
MIN_HINT = 0.02


class SharedWindow:
    """`take` a slot of a key's window in the shared database (PostgreSQL)."""

    def __init__(self, store: Store, clock: Clock, *, limit: int, per: float) -> None:
        if store.engine.dialect.name != "postgresql":
            raise ValueError("a shared send window needs PostgreSQL (SQLite: one process)")
        self.store = store
        self.clock = clock
        self.limit = limit
        self.per = per
        self._engine = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        #: Database round trips, for the tests and the curious.
        self.round_trips = 0

    def _take_statement(self, key: int, now: float, keep_free: int) -> sa.Update:
        c = send_slots.c
        free = sa.and_(c.key == key, c.slot < self.limit, c.sent_at <= now - self.per)
        oldest_free = (
            sa.select(c.slot)
            .where(free)
            .order_by(c.sent_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            send_slots.update()
            .where(c.key == key, c.slot == oldest_free)
            .values(sent_at=now)
            .returning(c.slot)
        )
        if keep_free:
            # Progress edits: only while more than `keep_free` slots are free (a soft rule:
            # the count is not locked, the slot itself is).
            free_count = sa.select(sa.func.count()).where(free).scalar_subquery()
            statement = statement.where(free_count > keep_free)
        return statement

    async def take(self, key: int, *, keep_free: int = 0) -> float | None:
        """Take a slot now: None if taken, else seconds until one may be free (a hint).

        `keep_free`: take one only if more than this many are free (never waits for it).
        Database errors propagate; the caller falls back to its own window.
        """
        now = self.clock.now()
        async with self._engine.connect() as conn:
            taken = (await conn.execute(self._take_statement(key, now, keep_free))).first()
            self.round_trips += 1
            if taken is not None:
                return None
            seeded = await conn.execute(
                postgresql.insert(send_slots)
                .values([{"key": key, "slot": n, "sent_at": 0.0} for n in range(self.limit)])
                .on_conflict_do_nothing(index_elements=["key", "slot"])
            )
            self.round_trips += 1
            if seeded.rowcount:
                taken = (await conn.execute(self._take_statement(key, now, keep_free))).first()
                self.round_trips += 1
                if taken is not None:
                    return None
            c = send_slots.c
            oldest = (
                await conn.execute(
                    sa.select(sa.func.min(c.sent_at)).where(c.key == key, c.slot < self.limit)
                )
            ).scalar()
            self.round_trips += 1
        free_at = (oldest or 0.0) + self.per
        return min(self.per, max(MIN_HINT, free_at - now))

    async def take_at(self, key: int) -> float | None:
        """Take a slot now and return its time (for `give_back`), or None if none is free."""
        now = self.clock.now()
        return now if await self._take_now(key, now) else None

    async def _take_now(self, key: int, now: float) -> bool:
        async with self._engine.connect() as conn:
            taken = (await conn.execute(self._take_statement(key, now, 0))).first()
            if taken is None:
                await conn.execute(
                    postgresql.insert(send_slots)
                    .values([{"key": key, "slot": n, "sent_at": 0.0} for n in range(self.limit)])
                    .on_conflict_do_nothing(index_elements=["key", "slot"])
                )
                taken = (await conn.execute(self._take_statement(key, now, 0))).first()
        return taken is not None

    async def give_back(self, key: int, taken_at: float) -> None:
        """Free the slot taken at `taken_at` (an action that was not done after all)."""
        c = send_slots.c
        async with self._engine.connect() as conn:
            await conn.execute(
                send_slots.update().where(c.key == key, c.sent_at == taken_at).values(sent_at=0.0)
            )


async def prune(store: Store, *, older_than: float) -> int:
    """Delete slot rows last taken before `older_than` (free for long); returns how many."""
    async with store.transaction() as conn:
        result = await conn.execute(send_slots.delete().where(send_slots.c.sent_at < older_than))
    return int(result.rowcount or 0)
