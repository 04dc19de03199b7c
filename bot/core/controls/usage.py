"""Usage reports from the per-day aggregates: exact, and unchanged when old jobs are pruned.

`spent` is what the API charged for finished jobs; `reserved` is what jobs still in flight
(or of unknown outcome) hold against the caps. A report's total is their sum, and the CSV
holds the same rows, so its sums equal the embed's totals to the micro-dollar.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core.controls.money import csv_amount
from bot.core.controls.periods import day_key, days_ago_key, month_start_key
from bot.core.controls.tables import usage_daily

PERIODS = ("today", "7d", "30d", "month")


def since(period: str, now: float) -> str:
    if period == "today":
        return day_key(now)
    if period == "7d":
        return days_ago_key(now, 7)
    if period == "30d":
        return days_ago_key(now, 30)
    if period == "month":
        return month_start_key(now)
    raise ValueError(f"period: use one of {', '.join(PERIODS)}")


@dataclass(frozen=True, slots=True)
class Row:
    member_id: str
    model: str
    jobs: int
    failures: int
    spent: int
    reserved: int

    @property
    def total(self) -> int:
        return self.spent + self.reserved


@dataclass(slots=True)
class Report:
    period: str
    since_day: str
    rows: list[Row] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return sum(r.jobs for r in self.rows)

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.rows)

    @property
    def spent(self) -> int:
        return sum(r.spent for r in self.rows)

    @property
    def reserved(self) -> int:
        return sum(r.reserved for r in self.rows)

    @property
    def total(self) -> int:
        return self.spent + self.reserved

    def by_member(self) -> list[tuple[str, int, int]]:
        """(member, total money, jobs), biggest spender first."""
        sums: dict[str, list[int]] = {}
        for r in self.rows:
            acc = sums.setdefault(r.member_id, [0, 0])
            acc[0] += r.total
            acc[1] += r.jobs
        return sorted(((m, v[0], v[1]) for m, v in sums.items()), key=lambda t: (-t[1], t[0]))

    def by_model(self) -> list[tuple[str, int, int, int]]:
        """(model, total money, jobs, failures), biggest first."""
        sums: dict[str, list[int]] = {}
        for r in self.rows:
            acc = sums.setdefault(r.model, [0] * 3)
            acc[0] += r.total
            acc[1] += r.jobs
            acc[2] += r.failures
        return sorted(((m, v[0], v[1], v[2]) for m, v in sums.items()), key=lambda t: (-t[1], t[0]))

    def csv(self) -> str:
        """One line per member and model; amounts in USD with six decimals (exact)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["member_id", "model", "jobs", "failures", "spent_usd", "reserved_usd", "total_usd"]
        )
        for r in sorted(self.rows, key=lambda r: (r.member_id, r.model)):
            writer.writerow(
                [
                    r.member_id,
                    r.model,
                    r.jobs,
                    r.failures,
                    csv_amount(r.spent),
                    csv_amount(r.reserved),
                    csv_amount(r.total),
                ]
            )
        return out.getvalue()


async def report(
    conn: AsyncConnection,
    *,
    period: str,
    now: float,
    guild_id: str | None,
    member_id: str | None = None,
) -> Report:
    start = since(period, now)
    c = usage_daily.c
    query = (
        sa.select(
            c.member_id,
            c.model,
            sa.func.sum(c.jobs),
            sa.func.sum(c.failures),
            sa.func.sum(c.spent_micros),
            sa.func.sum(c.reserved_micros),
        )
        .where(c.day >= start)
        .group_by(c.member_id, c.model)
    )
    if guild_id is not None:
        query = query.where(c.guild_id == guild_id)
    if member_id is not None:
        query = query.where(c.member_id == member_id)
    rows = (await conn.execute(query)).all()
    return Report(
        period,
        start,
        [
            Row(r[0], r[1], int(r[2] or 0), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0))
            for r in rows
            if r[2] or r[4] or r[5]
        ],
    )
