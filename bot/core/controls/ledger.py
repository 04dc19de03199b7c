"""The money ledger: locks, per-day usage rows, and settling a job's reservation.

Admission adds a job's estimate to `reserved_micros` of its usage row; when the job ends,
`settle` moves it to `spent_micros` as the actual cost (0 for a failed job: APIMart refunds
those; the reservation itself when a completed job reports no cost). A job whose outcome is
`unknown` is not settled: it may have been billed, so its reservation keeps counting. The
`settled` flag on the job makes settlement happen once, however often the end is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core.controls import prices
from bot.core.controls.limits import GuildControls
from bot.core.controls.money import from_api
from bot.core.controls.tables import NO_GUILD, guild_controls, usage_daily
from bot.core.job import JobState
from bot.core.request import VideoRequest
from bot.core.store import jobs_table

#: States whose money is final. `unknown` is absent on purpose: its reservation stays.
SETTLED_STATES = frozenset(
    {JobState.COMPLETED.value, JobState.FAILED.value, JobState.CANCELLED.value}
)


def insert_ignore(conn: AsyncConnection, table: sa.Table, **values: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on either engine (no aborted transaction on PG)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).values(**values).on_conflict_do_nothing()


async def lock(conn: AsyncConnection, guild_id: str) -> GuildControls:
    """Take the server's lock for the rest of the transaction and read its settings.

    The UPDATE is the lock (a row lock on PostgreSQL, the write lock on SQLite); the row is
    created on first use. Under READ COMMITTED every later statement of the transaction
    sees what the previous lock holder committed.
    """
    bump = (
        guild_controls.update()
        .where(guild_controls.c.guild_id == guild_id)
        .values(seq=guild_controls.c.seq + 1)
    )
    if (await conn.execute(bump)).rowcount == 0:
        await conn.execute(insert_ignore(conn, guild_controls, guild_id=guild_id, doc={}, seq=0))
        await conn.execute(bump)
    doc = (
        await conn.execute(
            sa.select(guild_controls.c.doc).where(guild_controls.c.guild_id == guild_id)
        )
    ).scalar_one()
    return GuildControls.from_doc(doc)


async def save(conn: AsyncConnection, guild_id: str, controls: GuildControls) -> None:
    await conn.execute(
        guild_controls.update()
        .where(guild_controls.c.guild_id == guild_id)
        .values(doc=controls.to_doc())
    )


async def read(conn: AsyncConnection, guild_id: str) -> GuildControls:
    """The settings without the lock (for reports and the settings embed)."""
    doc = (
        await conn.execute(
            sa.select(guild_controls.c.doc).where(guild_controls.c.guild_id == guild_id)
        )
    ).scalar_one_or_none()
    return GuildControls.from_doc(doc)


async def bump_usage(
    conn: AsyncConnection,
    *,
    day: str,
    guild_id: str,
    member_id: str,
    model: str,
    jobs: int = 0,
    failures: int = 0,
    spent: int = 0,
    reserved: int = 0,
) -> None:
    """Add to one usage row (created at zero on first use)."""
    await conn.execute(
        insert_ignore(
            conn,
            usage_daily,
            day=day,
            guild_id=guild_id,
            member_id=member_id,
            model=model,
            jobs=0,
            failures=0,
            spent_micros=0,
            reserved_micros=0,
        )
    )
    c = usage_daily.c
    await conn.execute(
        usage_daily.update()
        .where(c.day == day, c.guild_id == guild_id, c.member_id == member_id, c.model == model)
        .values(
            jobs=c.jobs + jobs,
            failures=c.failures + failures,
            spent_micros=c.spent_micros + spent,
            reserved_micros=c.reserved_micros + reserved,
        )
    )


async def used(
    conn: AsyncConnection,
    *,
    since_day: str,
    guild_id: str | None = None,
    member_id: str | None = None,
) -> tuple[int, int]:
    """(micro-dollars spent or reserved, jobs) since a day; `guild_id=None`: every server."""
    c = usage_daily.c
    query = sa.select(
        sa.func.coalesce(sa.func.sum(c.spent_micros + c.reserved_micros), 0),
        sa.func.coalesce(sa.func.sum(c.jobs), 0),
    ).where(c.day >= since_day)
    if guild_id is not None:
        query = query.where(c.guild_id == guild_id)
    if member_id is not None:
        query = query.where(c.member_id == member_id)
    money, jobs = (await conn.execute(query)).one()
    return int(money), int(jobs)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a job's end did to the books (for alerts and the queue)."""

    job_id: int
    guild_id: str
    member_id: str
    state: str
    actual: int
    error_code: str | None


async def settle(conn: AsyncConnection, job_id: int, *, now: float) -> Settlement | None:
    """Turn the job's reservation into its actual cost, once; learn its price."""
    j = jobs_table.c
    row = (
        await conn.execute(
            sa.select(
                j.state,
                j.settled,
                j.usage_day,
                j.guild_id,
                j.requester,
                j.model,
                j.request,
                j.cost,
                j.reserved_micros,
                j.error_code,
            ).where(j.id == job_id)
        )
    ).first()
    if row is None or row.settled or row.state not in SETTLED_STATES:
        return None
    claimed = await conn.execute(
        jobs_table.update()
        .where(j.id == job_id, j.settled.is_(False))
        .values(settled=True, reserved_micros=0)
    )
    if claimed.rowcount != 1:
        return None
    reserved = int(row.reserved_micros or 0)
    reported = from_api(row.cost)
    if row.state == JobState.COMPLETED.value:
        actual = reserved if reported is None else reported
    else:
        actual = 0
    guild_id = row.guild_id or NO_GUILD
    member_id = row.requester or ""
    if row.usage_day is not None:  # jobs from before the controls were never reserved
        await bump_usage(
            conn,
            day=row.usage_day,
            guild_id=guild_id,
            member_id=member_id,
            model=row.model,
            jobs=-1 if row.state == JobState.CANCELLED.value else 0,
            failures=1 if row.state == JobState.FAILED.value else 0,
            spent=actual,
            reserved=-reserved,
        )
    if row.state == JobState.COMPLETED.value and reported:
        request = row.request
        if isinstance(request, str):  # some drivers hand JSON back as text
            request = json.loads(request)
        await prices.learn(conn, VideoRequest.model_construct(**request), reported, now=now)
    return Settlement(job_id, guild_id, member_id, row.state, actual, row.error_code)
