"""`Controls`: the community controls of one store, as every front end uses them.

It binds the ledger to the store (a job's money is settled in the same transaction as its
end, and the queue is woken after), runs admissions, cancels queued jobs, and answers the
usage questions. Alerts (80 %/100 % of a server cap, the API's 402) go to an `AlertSink` the
front end provides; without one they are logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core.clock import Clock
from bot.core.controls import admission, ledger, prices, usage
from bot.core.controls.admission import Admission, Refused, Requester
from bot.core.controls.changes import Changes
from bot.core.controls.ledger import Settlement
from bot.core.controls.limits import GuildControls
from bot.core.controls.money import usd
from bot.core.controls.periods import day_key, month_start_key, next_day, next_month
from bot.core.controls.queue import Dispatcher
from bot.core.controls.tables import NO_GUILD
from bot.core.job import Job, JobState
from bot.core.request import VideoRequest
from bot.core.store import Store, _rows_to_jobs, jobs_table

if TYPE_CHECKING:
    from bot.core.leases import Leases

log = logging.getLogger(__name__)

#: The balance warning is repeated at most this often (seconds) while 402s keep coming.
BALANCE_ALERT_EVERY = 3600.0
BALANCE_ALERT = (
    "⚠️ APIMart refused a video because the balance is empty or too low (402). "
    "Nothing was charged; top up the APIMart balance (`/videoadmin balance` shows it)."
)
NOT_QUEUED = (
    "This job was already sent to APIMart, which has no way to cancel a video: it will finish "
    "(and be billed) as usual."
)


class AlertSink(Protocol):
    async def alert(self, channel_id: str, text: str) -> None: ...


@dataclass(slots=True)
class Allowance:
    """One member's spend and what is left, today and this month."""

    today: int
    month: int
    jobs_today: int
    daily_spend: int | None
    monthly_spend: int | None
    daily_jobs: int | None
    day_resets: float
    month_resets: float
    open_jobs: list[Job] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def left(cap: int | None, used: int) -> int | None:
        return None if cap is None else max(0, cap - used)


class Controls:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        operator_daily: int | None = None,
        operator_monthly: int | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.operator_daily = operator_daily
        self.operator_monthly = operator_monthly
        self.changes = Changes(store, clock.now)
        self.alert_sink: AlertSink | None = None
        self.dispatcher: Dispatcher | None = None
        #: This worker's leases: admitted jobs are born leased to it (None: no leases).
        self.leases: Leases | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        store.on_terminal = self._settle
        store.after_terminal = self._ended

    # -- admission -----------------------------------------------------------------------

    async def admit(
        self, request: VideoRequest, who: Requester, *, origin: dict[str, Any] | None = None
    ) -> Admission:
        """Refuse (raises `Refused`), queue, or admit; the job is written either way but the
        first."""
        try:
            async with self.store.transaction() as conn:
                result = await admission.admit(
                    conn,
                    request,
                    who,
                    now=self.clock.now(),
                    origin=dict(origin or {}),
                    operator_daily=self.operator_daily,
                    operator_monthly=self.operator_monthly,
                    lease=(
                        (self.leases.worker_id, self.leases.until())
                        if self.leases is not None
                        else None
                    ),
                )
        except Refused as refusal:
            log.info(
                "refused for %s in %s: %s (%s)",
                who.member_id,
                who.guild_id,
                refusal.limit,
                refusal.message,
            )
            if refusal.limit.startswith("server_") and who.guild_id is not None:
                await self._cap_reached(who.guild_id, refusal.limit)
            raise
        if self.leases is not None:
            self.leases.hold(result.job)
        for channel_id, text in result.alerts:
            self._alert(channel_id, text)
        if result.job.state is JobState.QUEUED:
            log.info("job %s: queued at position %s", result.job.id, result.position)
        return result

    async def _cap_reached(self, guild_id: str, limit: str) -> None:
        """A refusal by a server cap is the 100 % alert (once per period)."""
        now = self.clock.now()
        period = day_key(now) if "daily" in limit else month_start_key(now)
        key = f"{limit}:{period}"
        async with self.store.transaction() as conn:
            controls = await ledger.lock(conn, guild_id)
            if controls.alerts_channel is None or controls.alerted.get(key, 0) >= 100:
                return
            controls.alerted[key] = 100
            await ledger.save(conn, guild_id, controls)
            channel = controls.alerts_channel
        self._alert(
            channel,
            f"⛔ This server reached 100 % of `{limit}` "
            f"({usd(controls.server_limit(limit))}): members are being refused until it resets.",
        )

    # -- the end of a job ----------------------------------------------------------------

    async def _settle(self, conn: AsyncConnection, job_id: int) -> Settlement | None:
        return await ledger.settle(conn, job_id, now=self.clock.now())

    def _ended(self, job: Job, settlement: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if not isinstance(settlement, Settlement) or settlement.guild_id == NO_GUILD:
            return
        if settlement.error_code == "payment_required":
            self._spawn(self._balance_alert(settlement.guild_id))
        elif settlement.actual:
            self._spawn(self._spend_alerts(settlement.guild_id))

    async def _spend_alerts(self, guild_id: str) -> None:
        """A job's actual cost may cross 80 % / 100 % of a server cap (its estimate did not,
        or no price was known when it was admitted)."""
        async with self.store.engine.connect() as conn:
            if (await ledger.read(conn, guild_id)).alerts_channel is None:
                return
        now = self.clock.now()
        async with self.store.transaction() as conn:
            controls = await ledger.lock(conn, guild_id)
            caps = admission.spend_caps(controls, Requester(guild_id, None), now, None, None)
            alerts = await admission.threshold_alerts(conn, controls, caps, guild_id, now)
        for channel_id, text in alerts:
            await self._send(channel_id, text)

    async def _balance_alert(self, guild_id: str) -> None:
        """Once an hour per server at most: every job meeting an empty balance ends with a
        402 (a draining queue meets it many times), and one warning says all there is."""
        if guild_id == NO_GUILD:
            return
        key = f"balance:{int(self.clock.now() // BALANCE_ALERT_EVERY)}"
        async with self.store.transaction() as conn:
            controls = await ledger.lock(conn, guild_id)
            if not controls.alerts_channel or key in controls.alerted:
                return
            # Only the current hour's key is kept: the document is read on every admission.
            for old in [k for k in controls.alerted if k.startswith("balance:")]:
                del controls.alerted[old]
            controls.alerted[key] = 100
            await ledger.save(conn, guild_id, controls)
            channel = controls.alerts_channel
        await self._send(channel, BALANCE_ALERT)

    def _alert(self, channel_id: str, text: str) -> None:
        self._spawn(self._send(channel_id, text))

    async def _send(self, channel_id: str, text: str) -> None:
        if self.alert_sink is None:
            log.warning("alert for channel %s: %s", channel_id, text)
            return
        try:
            await self.alert_sink.alert(channel_id, text)
        except Exception:
            log.exception("could not post an alert to channel %s", channel_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle_alerts(self) -> None:
        """Wait for alerts under way (tests; shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    # -- cancel --------------------------------------------------------------------------

    async def cancel(
        self, job_id: int, actor_id: str, *, manager: bool, guild_id: str | None = None
    ) -> tuple[bool, str]:
        """Cancel a queued job (its requester, or a member with Manage Server in its server).

        `manager` counts only where `guild_id` (the server the click came from) is the job's:
        a button's id names just the job, and Manage Server elsewhere is no right to it.
        """
        j = jobs_table.c
        now = self.clock.now()
        if not 0 < job_id < 2**31:  # a forged button: no such job (and no int4 overflow)
            return False, "That job is no longer known."
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(j.guild_id, j.requester).where(j.id == job_id))
            ).first()
        if row is None:
            return False, "That job is no longer known."
        manages_it = manager and guild_id is not None and guild_id == row.guild_id
        if row.requester != actor_id and not manages_it:
            return False, "Only the member who asked for this video (or a moderator) can cancel it."
        async with self.store.transaction() as conn:
            await ledger.lock(conn, row.guild_id or NO_GUILD)
            done = await conn.execute(
                jobs_table.update()
                .where(j.id == job_id, j.state == JobState.QUEUED.value)
                .values(
                    state=JobState.CANCELLED.value,
                    finished_at=now,
                    error_code="cancelled",
                    error_message=f"Cancelled by <@{actor_id}> before it was sent to APIMart. "
                    "Nothing was charged.",
                    delivered=True,
                )
            )
            if done.rowcount != 1:
                state = (await conn.execute(sa.select(j.state).where(j.id == job_id))).scalar_one()
                if state == JobState.CANCELLED.value:
                    return False, "This job was already cancelled."
                if state in (JobState.COMPLETED.value, JobState.FAILED.value):
                    return False, "This job has already ended."
                return False, NOT_QUEUED
            await ledger.settle(conn, job_id, now=now)
        log.info("job %s: cancelled by %s while queued", job_id, actor_id)
        if self.dispatcher is not None:
            self.dispatcher.wake()
            self.dispatcher.moved(row.guild_id or NO_GUILD)
        return True, "Cancelled. Nothing was sent to APIMart or charged."

    # -- questions -----------------------------------------------------------------------

    async def allowance(
        self, guild_id: str, member_id: str, role_ids: tuple[str, ...]
    ) -> Allowance:
        now = self.clock.now()
        j = jobs_table.c
        async with self.store.engine.connect() as conn:
            controls = await ledger.read(conn, guild_id)
            today, jobs_today = await ledger.used(
                conn, since_day=day_key(now), guild_id=guild_id, member_id=member_id
            )
            month, _ = await ledger.used(
                conn, since_day=month_start_key(now), guild_id=guild_id, member_id=member_id
            )
            rows = (
                await conn.execute(
                    jobs_table.select()
                    .where(
                        j.guild_id == guild_id,
                        j.requester == member_id,
                        j.state.in_(admission.IN_FLIGHT),
                    )
                    .order_by(j.id)
                    .limit(20)
                )
            ).all()
            positions = {}
            for row in rows:
                m = row._mapping
                if m["state"] == JobState.QUEUED.value:
                    positions[m["id"]] = await admission.position(
                        conn, guild_id, m["queue_round"], m["id"]
                    )
        return Allowance(
            today=today,
            month=month,
            jobs_today=jobs_today,
            daily_spend=controls.member_limit("member_daily_spend", role_ids),
            monthly_spend=controls.member_limit("member_monthly_spend", role_ids),
            daily_jobs=controls.member_limit("member_daily_jobs", role_ids),
            day_resets=next_day(now),
            month_resets=next_month(now),
            open_jobs=_rows_to_jobs(rows),
            positions=positions,
        )

    async def report(self, guild_id: str | None, period: str) -> usage.Report:
        async with self.store.engine.connect() as conn:
            return await usage.report(conn, period=period, now=self.clock.now(), guild_id=guild_id)

    async def position(self, job: Job) -> int | None:
        if job.state is not JobState.QUEUED:
            return None
        j = jobs_table.c
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(j.queue_round, j.guild_id).where(j.id == job.id))
            ).first()
            if row is None:
                return None
            return await admission.position(conn, row.guild_id or NO_GUILD, row.queue_round, job.id)

    async def settings(self, guild_id: str) -> tuple[GuildControls, list[Any]]:
        return await self.changes.settings(guild_id)

    async def seed_prices(self, table: dict[tuple[str, str], int]) -> None:
        async with self.store.transaction() as conn:
            await prices.seed(conn, table, now=self.clock.now())

    async def prices(self) -> list[dict[str, Any]]:
        async with self.store.engine.connect() as conn:
            return await prices.all_prices(conn)


__all__ = ["Admission", "AlertSink", "Allowance", "Controls", "Refused", "Requester"]
