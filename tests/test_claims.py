"""One replica answers each interaction: the claim in the database, and what the member sees.

The two-worker run on PostgreSQL is tests/test_replicas_e2e.py; here the claim itself (both
engines), and through simcord what a worker does when another one took the interaction, when
the database fails, and when Discord says the interaction was already answered.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from bot.core.interaction_claims import KEEP_SECONDS, InteractionClaims, prune
from bot.core.schema import interaction_claims, usage_daily
from bot.core.store import Store
from bot.discord import claims
from bot.discord.bot import ReelBot, ReelTree
from bot.discord.views import DYNAMIC_ITEMS
from bot.testing.clock import ManualClock
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)

SNOWFLAKE = 1_576_939_710_138_286_080  # beyond int4 and int53: a real interaction id


async def test_the_first_claim_wins_and_every_later_one_loses(database_url: str) -> None:
    store = await Store.open(database_url)
    clock = ManualClock()
    try:
        a = InteractionClaims(store, "worker-a", clock)
        b = InteractionClaims(store, "worker-b", clock)
        assert await a.claim(SNOWFLAKE) is True
        assert await b.claim(SNOWFLAKE) is False
        assert await a.claim(SNOWFLAKE) is False  # a second delivery to the same worker too
        assert await b.claim(SNOWFLAKE + 1) is True
        await clock.advance(KEEP_SECONDS + 1)
        assert await a.claim(SNOWFLAKE + 2) is True
        assert await prune(store, older_than=clock.now() - KEEP_SECONDS) == 2
        async with store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(interaction_claims))).all()
    finally:
        await store.close()
    assert [(r.interaction_id, r.worker) for r in rows] == [(SNOWFLAKE + 2, "worker-a")]


async def test_a_stopping_worker_claims_only_when_it_is_alone(database_url: str) -> None:
    store = await Store.open(database_url)
    others = [True]
    try:
        a = InteractionClaims(store, "worker-a", ManualClock(), others_live=lambda: others[0])
        b = InteractionClaims(store, "worker-b", ManualClock())
        a.step_aside()
        assert await a.claim(SNOWFLAKE) is False  # B is live: it is B's
        assert await b.claim(SNOWFLAKE) is True
        others[0] = False
        assert await a.claim(SNOWFLAKE + 1) is True  # alone: answered rather than dropped
    finally:
        await store.close()


def test_every_route_of_an_interaction_passes_the_claim() -> None:
    """Commands and autocomplete go through the tree, clicks through the dynamic items; a new
    button class without `Claimed` would be answered by every replica."""
    assert all(issubclass(item, claims.Claimed) for item in DYNAMIC_ITEMS)
    for item in DYNAMIC_ITEMS:
        assert item.interaction_check is claims.Claimed.interaction_check, item
    bot = ReelBot(runtime=None)
    assert isinstance(bot.tree, ReelTree)
    assert not bot._connection._view_store._modals  # no modal routes around the claim


class Elsewhere:
    """Another replica already holds every interaction."""

    async def claim(self, interaction_id: int) -> bool:
        return False


class Unreachable:
    """The database is down."""

    async def claim(self, interaction_id: int) -> bool:
        raise OSError("connection refused")


def callbacks(reel: Reel) -> list[object]:
    return [r for r in reel.env.http_requests if r.path.endswith("/callback")]


async def test_an_interaction_another_replica_took_is_left_alone(reel: Reel) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
    (message,) = await reel.wait_results()
    job = (await reel.runtime.store.recent())[0]
    before = len(callbacks(reel))
    reel.runtime.interaction_claims = Elsewhere()  # type: ignore[assignment]

    await reel.alice.slash(reel.channel, "video sora", prompt="a blue kite")
    await reel.alice.click(message, custom_id=f"reelbot:reroll:{job.id}")
    await reel.alice.slash(reel.channel, "video models")

    assert len(callbacks(reel)) == before  # nothing answered: the other replica does
    assert len(await reel.runtime.store.recent()) == 1
    assert len(reel.fake.submits) == 1
    won, lost = (
        reel.runtime.metrics.interaction_claims.labels(outcome=o)._value.get()
        for o in ("won", "lost")
    )
    assert (won, lost) == (0, 3)  # SQLite claimed nothing before; three dropped now


async def test_a_database_failure_asks_the_member_to_try_again(reel: Reel) -> None:
    reel.runtime.interaction_claims = Unreachable()  # type: ignore[assignment]
    result = await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
    assert result.ephemeral
    assert result.response is not None and result.response.content == claims.TRY_AGAIN
    assert await reel.runtime.store.recent() == []
    assert reel.fake.submit_attempts == []


async def test_a_real_claim_on_the_store_lets_the_command_run(reel: Reel) -> None:
    runtime = reel.runtime
    runtime.interaction_claims = InteractionClaims(runtime.store, "me", runtime.clock)
    await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
    (message,) = await reel.wait_results()
    job = (await runtime.store.recent())[0]
    await reel.alice.click(message, custom_id=f"reelbot:details:{job.id}")
    async with runtime.store.engine.connect() as conn:
        workers = (await conn.execute(sa.select(interaction_claims.c.worker))).scalars().all()
    assert workers == ["me", "me"]


async def test_already_acknowledged_is_one_quiet_line_and_leaves_no_job_half_made(
    reel: Reel, caplog: pytest.LogCaptureFixture
) -> None:
    """Another replica (one that did not claim: an old release in a rolling deploy) answered
    first: the defer meets 40060. One INFO line, no traceback, no reply attempt, and the job
    admitted for it is ended with its reservation released."""
    reel.env.inject_error(
        "POST",
        "/interactions/*/callback",
        status=400,
        code=40060,
        message="Interaction has already been acknowledged.",
    )
    with caplog.at_level(logging.INFO):
        await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
        await reel.env.settle()
    assert len(callbacks(reel)) == 1  # the refused defer, and no "something went wrong"
    assert reel.env.errors  # the tree's on_error saw it (simcord records it); acknowledged
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert [r.getMessage() for r in caplog.records if "already answered" in r.getMessage()]
    (job,) = await reel.runtime.store.recent()
    assert job.state.terminal and job.task_id is None
    assert reel.fake.submit_attempts == []
    async with reel.runtime.store.engine.connect() as conn:
        reserved = await conn.execute(sa.select(sa.func.sum(usage_daily.c.reserved_micros)))
        assert not reserved.scalar()
