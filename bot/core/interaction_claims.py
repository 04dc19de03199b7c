"""One worker per front-end interaction: a claim row per interaction id, first INSERT wins.

Discord sends every INTERACTION_CREATE to every session identified for the shard that holds
the guild: two unsharded replicas (or the old and new container of a rolling deploy) both
receive each slash command and each click. Without a claim both ran admission (two jobs, two
reservations) and raced to acknowledge; the slower one met 40060 "already acknowledged". The
front end claims an interaction here before doing anything with it; the worker whose INSERT
lands answers, the others drop it.

One statement, one round trip: `INSERT … ON CONFLICT DO NOTHING` in autocommit on PostgreSQL
(no BEGIN and COMMIT around it); the same statement works on SQLite (where `reelbot run`
does not use it: one process, nobody to race). A row is needed only while the interaction
can still be answered (its token lives 15 minutes); `prune` removes rows older than
`KEEP_SECONDS`, from the retention pass.

The core knows nothing of Discord: an interaction is an integer id (a snowflake: BigInteger).
Which interactions are claimed, and what a failure to claim means for the member, is the front
end's decision (bot/discord/claims.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.dialects import postgresql, sqlite

from bot.core.clock import Clock
from bot.core.schema import interaction_claims
from bot.core.store import Store

log = logging.getLogger(__name__)

#: Claims older than this are pruned: far beyond an interaction token's 15 minutes, so a
#: late duplicate delivery (a gateway RESUME replaying events) still finds its claim.
KEEP_SECONDS = 3600.0


class InteractionClaims:
    """This worker's claims on interactions, in the shared database."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        clock: Clock,
        *,
        others_live: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.clock = clock
        #: Whether another bot worker is alive (from the heartbeat table): see `step_aside`.
        self.others_live = others_live
        self.stepping_aside = False
        # Autocommit: the INSERT is its own transaction, one round trip (no BEGIN/COMMIT).
        self._engine = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        dialect = store.engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def step_aside(self) -> None:
        """This worker is stopping: leave new interactions to the live ones from now on.

        A stopping worker drains (submits under way, the poller) while still connected, and
        still receives every interaction. Had it claimed them, each new command would be
        acknowledged and then ended at once as interrupted, though another replica (the new
        container of a rolling deploy) was there to run it. Alone, it goes on claiming: a
        member then hears that the job was interrupted rather than nothing at all.
        """
        self.stepping_aside = True

    async def claim(self, interaction_id: int) -> bool:
        """True if this worker takes the interaction; False if another worker already did
        (or should: this one is stopping and another is live).

        Database errors propagate: the caller decides what the member is told.
        """
        if self.stepping_aside and self.others_live():
            log.debug("interaction %s: stopping; left to the other workers", interaction_id)
            return False
        statement = (
            self._insert(interaction_claims)
            .values(
                interaction_id=interaction_id,
                worker=self.worker_id,
                claimed_at=self.clock.now(),
            )
            .on_conflict_do_nothing(index_elements=["interaction_id"])
        )
        if self.store.engine.dialect.name == "sqlite":  # SQLite's writes queue in the store
            async with self.store.transaction() as conn:
                result = await conn.execute(statement)
        else:
            async with self._engine.connect() as conn:
                result = await conn.execute(statement)
        return result.rowcount == 1


async def prune(store: Store, *, older_than: float) -> int:
    """Delete claims made before `older_than` (epoch seconds); returns how many."""
    c = interaction_claims.c
    async with store.transaction() as conn:
        result = await conn.execute(interaction_claims.delete().where(c.claimed_at < older_than))
    if result.rowcount:
        log.info("retention: pruned %d interaction claims", result.rowcount)
    return int(result.rowcount or 0)
