"""Admission: refuse, queue or go — decided and reserved in one database transaction.

Under the server's lock (and the operator's, when operator caps are set) the request is
checked against blocks, banned words, model rules and the cooldown, its cost is estimated,
the estimate is checked against every spend cap that applies (member with role tiers,
server, operator), and then either the job is written as `created` (a slot is free) or as
`queued` (only a concurrency limit stands in the way), with the estimate reserved in the
day's usage row. Ten members pressing Enter together against a cap that fits three jobs are
serialised by the lock: exactly three are admitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core.catalog import CATALOG
from bot.core.controls import ledger, prices
from bot.core.controls.limits import GuildControls
from bot.core.controls.money import usd
from bot.core.controls.periods import day_key, month_start_key, next_day, next_month
from bot.core.controls.tables import NO_GUILD, OPERATOR
from bot.core.controls.words import first_banned
from bot.core.job import Job, JobState
from bot.core.request import VideoRequest
from bot.core.store import jobs_table

#: Jobs holding a slot (a concurrency limit counts these).
ACTIVE = (JobState.CREATED.value, JobState.SUBMITTING.value, JobState.RUNNING.value)
#: Jobs whose money is not settled yet and that may still be billed at an unknown price.
IN_FLIGHT = (JobState.QUEUED.value, *ACTIVE)
#: A member's queued jobs at most: a queue is for a slot to free, not a backlog of spam that
#: would all be billed later.
MAX_QUEUED_PER_MEMBER = 10
#: A server's queued jobs at most (the queue is read in order, `SCAN` rows at a time).
MAX_QUEUED_PER_SERVER = 500
#: Alerts go out at these percentages of a server spend cap.
THRESHOLDS = (80, 100)
BANNED = "Your prompt contains a word or phrase that is not allowed on this server."


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: their server (None from the terminal), member id and role ids."""

    guild_id: str | None
    member_id: str | None
    role_ids: tuple[str, ...] = ()


class Refused(Exception):
    """The request may not run now; `message` is for the requester (one or two lines)."""

    def __init__(self, limit: str, message: str, *, estimate: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.estimate = estimate


@dataclass(slots=True)
class Admission:
    job: Job
    #: 1-based place in the server's queue when the job was queued, else None.
    position: int | None = None
    alerts: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Cap:
    name: str
    what: str
    value: int
    since_day: str
    resets_at: float
    guild_id: str | None
    member_id: str | None


def _timestamp(unix: float) -> str:
    return f"<t:{int(unix)}:R>"


def check_rules(controls: GuildControls, request: VideoRequest, member_id: str) -> None:
    """Blocks, banned words and model rules: refused at once, whatever the slots."""
    block = controls.blocked.get(member_id)
    if block is not None:
        reason = block.get("reason")
        raise Refused(
            "blocked",
            "You are blocked from making videos on this server"
            + (f": {reason}" if reason else "."),
        )
    text = " ".join(filter(None, (request.prompt, request.negative_prompt)))
    if controls.words and first_banned(text, controls.words) is not None:
        raise Refused("banned_words", BANNED)
    spec = CATALOG[request.model]
    rule = controls.model_rule(request.model)
    if not rule.enabled:
        enabled = [m for m in CATALOG if controls.model_rule(m).enabled]
        raise Refused(
            "model",
            f"{spec.label} ({spec.id}) is disabled on this server."
            + (f" Enabled: {', '.join(enabled)}." if enabled else ""),
        )
    if rule.max_resolution is not None:
        order = [r.lower() for r in spec.resolutions]
        asked = request.effective_resolution.lower()
        if asked in order and order.index(asked) > order.index(rule.max_resolution.lower()):
            raise Refused(
                "max_resolution",
                f"resolution: this server allows {spec.id} up to {rule.max_resolution}.",
            )
    if rule.max_duration is not None:
        seconds = prices.units(request) // (request.sample_count or 1)
        if seconds > rule.max_duration:
            raise Refused(
                "max_duration",
                f"duration: this server allows {spec.id} videos up to {rule.max_duration} s.",
            )


def spend_caps(
    controls: GuildControls,
    who: Requester,
    now: float,
    operator_daily: int | None,
    operator_monthly: int | None,
) -> list[Cap]:
    today, month = day_key(now), month_start_key(now)
    day_end, month_end = next_day(now), next_month(now)
    guild = who.guild_id or NO_GUILD
    caps: list[Cap] = []
    if who.guild_id is not None:
        member = who.member_id or ""
        for name, what, since, resets in (
            ("member_daily_spend", "your daily spending limit", today, day_end),
            ("member_monthly_spend", "your monthly spending limit", month, month_end),
        ):
            value = controls.member_limit(name, who.role_ids)
            if value is not None:
                caps.append(Cap(name, what, value, since, resets, guild, member))
        for name, what, since, resets in (
            ("server_daily_spend", "this server's daily spending limit", today, day_end),
            ("server_monthly_spend", "this server's monthly spending limit", month, month_end),
        ):
            value = controls.server_limit(name)
            if value is not None:
                caps.append(Cap(name, what, value, since, resets, guild, None))
    for name, what, since, resets, value in (
        ("operator_daily_spend", "the bot's daily spending limit", today, day_end, operator_daily),
        (
            "operator_monthly_spend",
            "the bot's monthly spending limit",
            month,
            month_end,
            operator_monthly,
        ),
    ):
        if value is not None:
            caps.append(Cap(name, what, value, since, resets, None, None))
    return caps


async def _count(conn: AsyncConnection, *where: Any) -> int:
    query = sa.select(sa.func.count()).select_from(jobs_table).where(*where)
    return int((await conn.execute(query)).scalar_one())


async def check_money(
    conn: AsyncConnection, caps: list[Cap], estimate: int | None, guild_id: str
) -> None:
    """Every cap must still fit the estimate; with no price known, one unpriced job at a time."""
    j = jobs_table.c
    unpriced_checked = False
    for cap in caps:
        spent, _ = await ledger.used(
            conn, since_day=cap.since_day, guild_id=cap.guild_id, member_id=cap.member_id
        )
        left = max(0, cap.value - spent)
        resets = f"Resets {_timestamp(cap.resets_at)}."
        if estimate is None:
            if left == 0:
                raise Refused(
                    cap.name,
                    f"This would go over {cap.what} ({usd(cap.value)}): nothing left. " + resets,
                )
            if not unpriced_checked:
                unpriced_checked = True
                where: list[Any] = [j.estimate_micros.is_(None), j.state.in_(IN_FLIGHT)]
                if cap.guild_id is not None:
                    where.append(j.guild_id == guild_id)
                if await _count(conn, *where):
                    raise Refused(
                        "unpriced",
                        "reelbot does not know this video's price yet and a spending limit "
                        "applies; one such job is already running to learn it. Try again in a "
                        "few minutes.",
                    )
        elif spent + estimate > cap.value:
            raise Refused(
                cap.name,
                f"This video (≈ {usd(estimate)}) would go over {cap.what} ({usd(cap.value)}): "
                f"{usd(left)} left. {resets}",
                estimate=estimate,
            )


async def admit(
    conn: AsyncConnection,
    request: VideoRequest,
    who: Requester,
    *,
    now: float,
    origin: dict[str, Any],
    operator_daily: int | None,
    operator_monthly: int | None,
    lease: tuple[str, float] | None = None,
) -> Admission:
    """Decide and write the job (the caller holds the transaction; raises `Refused`)."""
    guild = who.guild_id or NO_GUILD
    member = who.member_id or ""
    controls = await ledger.lock(conn, guild)
    if operator_daily is not None or operator_monthly is not None:
        await ledger.lock(conn, OPERATOR)
    j = jobs_table.c
    if who.guild_id is not None:
        check_rules(controls, request, member)
        cooldown = controls.member_limit("member_cooldown_seconds", who.role_ids)
        if cooldown:
            last = (
                await conn.execute(
                    sa.select(sa.func.max(j.created_at)).where(
                        j.guild_id == guild, j.requester == member
                    )
                )
            ).scalar_one_or_none()
            if last is not None and now - last < cooldown:
                raise Refused(
                    "member_cooldown_seconds",
                    f"Please wait between videos ({cooldown} s on this server): you can start "
                    f"another {_timestamp(last + cooldown)}.",
                )
        daily_jobs = controls.member_limit("member_daily_jobs", who.role_ids)
        if daily_jobs is not None:
            _, started = await ledger.used(
                conn, since_day=day_key(now), guild_id=guild, member_id=member
            )
            if started >= daily_jobs:
                raise Refused(
                    "member_daily_jobs",
                    f"You have started your {daily_jobs} videos for today: 0 left. "
                    f"Resets {_timestamp(next_day(now))}.",
                )
    estimate = await prices.estimate(conn, request)
    caps = spend_caps(controls, who, now, operator_daily, operator_monthly)
    await check_money(conn, caps, estimate, guild)

    queued = False
    member_slots: int | None = None
    queue_round = 0
    if who.guild_id is not None:
        server_slots = controls.server_limit("server_concurrent")
        member_slots = controls.member_limit("member_concurrent", who.role_ids)
        mine = (j.guild_id == guild, j.requester == member)
        member_queued = await _count(conn, *mine, j.state == JobState.QUEUED.value)
        queue_round = member_queued
        if member_queued >= MAX_QUEUED_PER_MEMBER:
            raise Refused(
                "queue",
                f"You already have {member_queued} videos waiting in the queue; start more "
                "once they are under way.",
            )
        if member_queued:
            queued = True
        elif member_slots is not None and (
            await _count(conn, *mine, j.state.in_(ACTIVE)) >= member_slots
        ):
            queued = True
        elif server_slots is not None and (
            await _count(conn, j.guild_id == guild, j.state.in_(ACTIVE)) >= server_slots
        ):
            queued = True

    if queued and (
        await _count(conn, j.guild_id == guild, j.state == JobState.QUEUED.value)
        >= MAX_QUEUED_PER_SERVER
    ):
        raise Refused(
            "queue", "This server's video queue is full. Please try again in a few minutes."
        )
    state = JobState.QUEUED if queued else JobState.CREATED
    reserved = estimate or 0
    today = day_key(now)
    values: dict[str, Any] = {
        "state": state.value,
        "model": request.model,
        "request": request.model_dump(mode="json", exclude_none=True),
        "origin": origin,
        "requester": who.member_id,
        "guild_id": who.guild_id,
        "progress": 0,
        "created_at": now,
        "video_urls": [],
        "delivered": False,
        "estimate_micros": estimate,
        "reserved_micros": reserved,
        "usage_day": today,
        "settled": False,
        "queue_round": queue_round,
        "member_slots": member_slots,
        "held": queued,
    }
    if lease is not None:
        # Leased to the admitting worker from its first row (bot/core/leases.py): no other
        # worker settles it while this one submits it, or prepares it for the queue.
        values.update(owner=lease[0], lease_until=lease[1], fence=1)
    result = await conn.execute(jobs_table.insert().values(**values))
    job_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    await ledger.bump_usage(
        conn,
        day=today,
        guild_id=guild,
        member_id=member,
        model=request.model,
        jobs=1,
        reserved=reserved,
    )
    admission = Admission(
        Job(
            id=job_id,
            state=state,
            request=request,
            created_at=now,
            origin=dict(origin),
            requester=who.member_id,
            guild_id=who.guild_id,
            estimate=estimate,
            reserved=reserved,
            held=queued,
            owner=lease[0] if lease is not None else None,
            fence=1 if lease is not None else 0,
            lease_until=lease[1] if lease is not None else None,
        )
    )
    if queued:
        admission.position = await position(conn, guild, queue_round, job_id)
    if who.guild_id is not None:
        admission.alerts = await threshold_alerts(conn, controls, caps, guild, now)
    return admission


async def position(conn: AsyncConnection, guild_id: str, queue_round: int, job_id: int) -> int:
    """1 + the queued jobs of this server that go before (round, id) in the fair order."""
    j = jobs_table.c
    ahead = await _count(
        conn,
        j.guild_id == guild_id,
        j.state == JobState.QUEUED.value,
        sa.or_(j.queue_round < queue_round, sa.and_(j.queue_round == queue_round, j.id < job_id)),
    )
    return ahead + 1


async def threshold_alerts(
    conn: AsyncConnection, controls: GuildControls, caps: list[Cap], guild_id: str, now: float
) -> list[tuple[str, str]]:
    """(channel id, text) for each server cap that just crossed 80 % or 100 % (once each)."""
    if controls.alerts_channel is None:
        return []
    out: list[tuple[str, str]] = []
    period_keys = {day_key(now), month_start_key(now)}
    kept = {
        k: v
        for k, v in controls.alerted.items()
        # The balance warning's key is the service's to expire (it is not a cap's period).
        if k.startswith("balance:") or k.rsplit(":", 1)[-1] in period_keys
    }
    changed = kept != controls.alerted
    for cap in caps:
        if cap.member_id is not None or cap.guild_id is None or cap.value <= 0:
            continue
        spent, _ = await ledger.used(conn, since_day=cap.since_day, guild_id=guild_id)
        percent = spent * 100 // cap.value
        reached = max((t for t in THRESHOLDS if percent >= t), default=0)
        key = f"{cap.name}:{cap.since_day}"
        if reached and reached > kept.get(key, 0):
            kept[key] = reached
            changed = True
            out.append(
                (
                    controls.alerts_channel,
                    f"⚠️ This server has used {reached} % of `{cap.name}`: "
                    f"{usd(spent)} of {usd(cap.value)} (resets {_timestamp(cap.resets_at)}).",
                )
            )
    if changed:
        controls.alerted = kept
        await ledger.save(conn, guild_id, controls)
    return out
