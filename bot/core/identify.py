"""Discord's IDENTIFY limit, kept across processes through the database.

Discord lets a bot start `max_concurrency` gateway sessions per 5 seconds: shards fall into
buckets (`shard_id % max_concurrency`) and each bucket may IDENTIFY once per 5 s, whichever
process the shard runs in. A process alone can pace itself (discord.py sleeps 5 s between its
own shards); several workers on one PostgreSQL take a session-level advisory lock per bucket
before each IDENTIFY and keep it `HOLD` seconds, so workers starting together (a deploy, a
`docker compose up --scale`) queue up instead of being refused by Discord. A worker that dies
mid-hold loses its session and with it the lock: nobody waits for a corpse.

On SQLite (one process by design) the gate is a no-op and discord.py's own pacing applies.
The core knows no gateway: the Discord front end calls `wait()` from its
`before_identify_hook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

#: Discord's window for one bucket's IDENTIFY (seconds), plus a little margin.
HOLD = 5.5
#: How long a shard waits for its bucket before it identifies anyway (Discord then answers
#: with a rate limit that discord.py retries): a bound, never expected to be reached.
WAIT_LIMIT = 300.0
#: Between two tries of a busy bucket (seconds).
RETRY_EVERY = 0.25
#: First key of the two-part advisory lock: "reel" in ASCII, so it collides with nothing else.
LOCK_NAMESPACE = 0x7265656C


class IdentifyGate:
    """`await gate.wait(shard_id, max_concurrency)` before every IDENTIFY."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        hold: float = HOLD,
        wait_limit: float = WAIT_LIMIT,
        retry_every: float = RETRY_EVERY,
    ) -> None:
        self.engine = engine
        self.hold = hold
        self.wait_limit = wait_limit
        self.retry_every = retry_every
        self._holds: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        """True when several processes can share the database (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    async def wait(self, shard_id: int, max_concurrency: int) -> bool:
        """Block until this shard's bucket is free, then keep it for `hold` seconds.

        Returns False when there is nothing to coordinate (SQLite): the caller then paces
        itself as a single process does.
        """
        if not self.shared:
            return False
        bucket = shard_id % max(1, max_concurrency)
        try:
            return await self._wait(shard_id, bucket)
        except Exception as exc:
            # The database is unreachable: connecting to Discord must not depend on it (an
            # exception here would end discord.py's connect loop). Pace alone, as one
            # process would, and go ahead.
            log.warning(
                "shard %s: cannot coordinate IDENTIFY through the database (%s); "
                "waiting %.1f s instead",
                shard_id,
                type(exc).__name__,
                self.hold,
            )
            await asyncio.sleep(self.hold)
            return True

    async def _wait(self, shard_id: int, bucket: int) -> bool:
        conn = await self.engine.connect()
        try:
            deadline = time.monotonic() + self.wait_limit
            waited = False
            while True:
                query = sa.text("SELECT pg_try_advisory_lock(:ns, :bucket)")
                got = (await conn.execute(query, {"ns": LOCK_NAMESPACE, "bucket": bucket})).scalar()
                await conn.commit()  # the lock is session-level: it outlives this transaction
                if got:
                    break
                if time.monotonic() >= deadline:
                    log.warning(
                        "shard %s: IDENTIFY bucket %s busy for %.0f s; identifying anyway",
                        shard_id,
                        bucket,
                        self.wait_limit,
                    )
                    await conn.close()
                    return True
                if not waited:
                    log.info("shard %s: waiting for IDENTIFY bucket %s", shard_id, bucket)
                    waited = True
                await asyncio.sleep(self.retry_every)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        task = asyncio.create_task(self._release_later(conn, bucket), name="reelbot-identify")
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)
        return True

    async def _release_later(self, conn: AsyncConnection, bucket: int) -> None:
        try:
            await asyncio.sleep(self.hold)
            query = sa.text("SELECT pg_advisory_unlock(:ns, :bucket)")
            await conn.execute(query, {"ns": LOCK_NAMESPACE, "bucket": bucket})
            await conn.commit()
        except BaseException as exc:
            # Never hand a connection that may still hold the lock back to the pool:
            # discarding it ends its session, and that releases the lock.
            log.debug("IDENTIFY bucket %s: unlock failed: %r", bucket, exc)
            with contextlib.suppress(Exception):
                await conn.invalidate()
            if not isinstance(exc, Exception):
                raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())

    async def close(self) -> None:
        """Release what is held now (closing the sessions drops their locks)."""
        holds = list(self._holds)
        for task in holds:
            task.cancel()
        await asyncio.gather(*holds, return_exceptions=True)
