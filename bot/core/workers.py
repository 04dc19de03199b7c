"""Processes sharing one database: who is alive, and the API request budget they share.

Each process (`reelbot run` = kind `bot`, `reelbot generate` = kind `cli`) has a row in
`workers` with a heartbeat every `HEARTBEAT_EVERY` seconds. From the rows with a fresh
heartbeat every worker derives:

* its share of `API_REQUESTS_PER_SECOND`: budget / live workers. A joining worker sends
  nothing for `join_grace` (one heartbeat and a little), the time the others need to see it and
  shrink their shares, so the sum never overshoots while the count changes. A worker that
  dies is counted until its heartbeat is `DEAD_AFTER` old: the others under-use the budget
  meanwhile, which is the safe direction.
* a shared slow-down: a 429 seen by one worker is written to its row at once (`slow_until`,
  `slow_factor`); every other worker reads it at its next heartbeat and pauses and slows the
  same way. Staleness is bounded: at most `HEARTBEAT_EVERY` plus one database round trip.
* the number of live bots, for each bot's fair share of the open jobs (bot/core/claimer.py).

SQLite serves one `reelbot run` only: `SqliteLock` is an exclusive `fcntl` lock on a file
beside the database, taken before anything else and held for the life of the process (the
kernel releases it when the process dies, however it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from bot.core.clock import Clock
from bot.core.poller import RateLimiter
from bot.core.store import Store, workers_table

log = logging.getLogger(__name__)

#: Seconds between heartbeats (and reads of the others' state).
HEARTBEAT_EVERY = 2.0
#: A worker whose heartbeat is this old is counted as gone.
DEAD_AFTER = 3 * HEARTBEAT_EVERY
#: Rows of workers gone this long are deleted by whoever notices (a crashed worker's row).
FORGET_AFTER = 3600.0
#: Each worker's token bucket holds this many seconds of its share, so that the sum of all
#: workers' bursts stays a small fraction of one 10-second window of the budget.
BURST_SECONDS = 0.25


def new_worker_id() -> str:
    """Readable in logs and rows: host, pid and a random suffix (pids are reused)."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class AlreadyRunning(Exception):
    """A second `reelbot run` on a SQLite file that one is already using."""


class SqliteLock:
    """An exclusive lock on `<database>.lock`, held while `reelbot run` runs."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            log.warning("cannot lock %s on this system; run one reelbot only", self.path)
            return
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise AlreadyRunning(
                f"another `reelbot run` is using {self.path.with_suffix('')}; SQLite serves one "
                "bot process — for several workers use PostgreSQL "
                "(DATABASE_URL=postgresql://user:pass@host/db)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


class WorkerRegistry:
    """This process's row in `workers`, its heartbeat, and the shared request budget."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        clock: Clock,
        *,
        kind: str = "bot",
        limiter: RateLimiter | None = None,
        budget: float | None = None,
        heartbeat_every: float = HEARTBEAT_EVERY,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.clock = clock
        self.kind = kind
        self.limiter = limiter
        self.budget = budget if budget is not None else (limiter.max_rate if limiter else 0.0)
        self.heartbeat_every = heartbeat_every
        self.dead_after = 3 * heartbeat_every
        self.join_grace = heartbeat_every * 1.25
        #: From the last heartbeat: live workers, live bots, live terminal processes.
        self.live = 1
        self.live_bots = 1 if kind == "bot" else 0
        self.live_terminals: list[str] = []
        self.round_trips = 0
        self._seen_slow: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._published: tuple[float, float] | None = None
        if limiter is not None:
            limiter.on_penalty = self._wake.set

    def _insert_row(self, now: float) -> sa.Insert:
        """This worker's row, as registered (and re-registered after being forgotten)."""
        return workers_table.insert().values(
            id=self.worker_id,
            kind=self.kind,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
        )

    async def register(self) -> None:
        """Insert this worker's row; if others are alive, wait for them before using budget."""
        now = self.clock.now()
        async with self.store.transaction() as conn:
            await conn.execute(self._insert_row(now))
        self.round_trips += 1
        await self._read(now)
        if self.limiter is not None:
            self._apply_share()
            if self.live > 1:
                # The others still count without us until their next heartbeat.
                self.limiter.hold_until(now + self.join_grace)
        log.info("worker %s (%s) registered; %d live", self.worker_id, self.kind, self.live)

    async def beat(self) -> None:
        """Refresh our row (publishing a 429 we saw), then read everyone's."""
        now = self.clock.now()
        values: dict[str, float | None] = {"heartbeat_at": now}
        penalty = self.limiter.last_penalty if self.limiter is not None else None
        if penalty is not None and penalty != self._published:
            values["slow_until"], values["slow_factor"] = penalty
            self._published = penalty
        async with self.store.transaction() as conn:
            result = await conn.execute(
                workers_table.update().where(workers_table.c.id == self.worker_id).values(values)
            )
            if result.rowcount == 0:  # deleted as dead (a long pause): come back
                await conn.execute(self._insert_row(now))
            await conn.execute(
                workers_table.delete().where(workers_table.c.heartbeat_at < now - FORGET_AFTER)
            )
        self.round_trips += 1
        await self._read(now)
        if self.limiter is not None:
            self._apply_share()

    async def _read(self, now: float) -> None:
        c = workers_table.c
        query = sa.select(c.id, c.kind, c.slow_until, c.slow_factor).where(
            c.heartbeat_at >= now - self.dead_after
        )
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        self.round_trips += 1
        ids = {r.id for r in rows} | {self.worker_id}
        self.live = len(ids)
        self.live_bots = sum(1 for r in rows if r.kind == "bot" and r.id != self.worker_id) + (
            1 if self.kind == "bot" else 0
        )
        self.live_terminals = [r.id for r in rows if r.kind == "cli"]
        if self.limiter is None:
            return
        for r in rows:
            if r.id == self.worker_id or r.slow_until is None or r.slow_until <= now:
                continue
            if self._seen_slow.get(r.id, 0.0) >= r.slow_until:
                continue  # already applied
            self._seen_slow[r.id] = r.slow_until
            self.limiter.slow_down(r.slow_until, r.slow_factor or 0.5)
            log.info("worker %s saw a 429: slowing down until %.1f", r.id, r.slow_until)

    def _apply_share(self) -> None:
        assert self.limiter is not None
        share = self.budget / max(1, self.live)
        self.limiter.set_max_rate(share, burst=max(1.0, share * BURST_SECONDS))

    async def run(self) -> None:
        """Heartbeat until cancelled; a 429 seen here is published without waiting."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_every):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.beat()
            except Exception:
                log.exception("worker heartbeat failed; retrying")

    async def unregister(self) -> None:
        """Remove our row (a clean stop): the others take our share at their next heartbeat."""
        async with self.store.transaction() as conn:
            await conn.execute(workers_table.delete().where(workers_table.c.id == self.worker_id))
        self.round_trips += 1
