"""Who changed which setting, when, from what to what: written in the change's transaction."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core.controls.tables import audit_log

MAX_TEXT = 500


@dataclass(frozen=True, slots=True)
class Change:
    actor_id: str
    at: float
    setting: str
    old: str | None
    new: str | None


async def record(
    conn: AsyncConnection,
    guild_id: str,
    actor_id: str,
    setting: str,
    old: str | None,
    new: str | None,
    *,
    at: float,
) -> None:
    await conn.execute(
        audit_log.insert().values(
            guild_id=guild_id,
            actor_id=actor_id,
            at=at,
            setting=setting[:200],
            old=None if old is None else old[:MAX_TEXT],
            new=None if new is None else new[:MAX_TEXT],
        )
    )


async def recent(conn: AsyncConnection, guild_id: str, limit: int = 10) -> list[Change]:
    a = audit_log.c
    query = (
        sa.select(a.actor_id, a.at, a.setting, a.old, a.new)
        .where(a.guild_id == guild_id)
        .order_by(a.id.desc())
        .limit(limit)
    )
    rows = (await conn.execute(query)).all()
    return [Change(r.actor_id, r.at, r.setting, r.old, r.new) for r in rows]
