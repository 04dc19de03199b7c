"""Jobs on disk: SQLite by default (aiosqlite), PostgreSQL through the same code (asyncpg).

The store is the truth and memory is a cache: a job is written before anything is sent to the
API and after every state change, so a restart (or a SIGKILL) loses nothing. SQLAlchemy Core
keeps the SQL portable; JSON columns hold the request and the front end's `origin` data so the
core never needs to know what a Discord channel is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from bot.core import migrations
from bot.core.job import TERMINAL, Job, JobState, plausible_money, plausible_time
from bot.core.request import VideoRequest
from bot.core.schema import LEASE_COLUMNS, jobs_table, metadata, workers_table

__all__ = ["UPDATABLE", "LeaseLost", "Store", "jobs_table", "metadata", "workers_table"]

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The database cannot be opened; the text names DATABASE_URL but never echoes it."""


def _reason(exc: BaseException, url: str) -> str:
    """Why opening failed, in a few words, with nothing of the URL (it may hold a password)."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, FileExistsError | NotADirectoryError):
        return "a part of the database file's path is a file, not a folder"
    if isinstance(orig, OSError) and orig.strerror:
        text = orig.strerror
    else:
        text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    try:
        parsed = sa.engine.make_url(url)
        for secret in (parsed.password, url, parsed.render_as_string(hide_password=False)):
            if secret:
                text = text.replace(str(secret), "…")
    except Exception:
        text = type(orig).__name__
    return text[:200]


async def open_store(url: str) -> Store:
    """`Store.open`, creating a SQLite file's folder; any failure is one `StoreUnavailable`.

    A read-only file system, a path under a file, a full disk, PostgreSQL unreachable or a
    wrong password all end here, so every command can say so in one line and exit 2.
    """
    try:
        if url.startswith("sqlite") and (path := _sqlite_path(url)) is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return await Store.open(url)
    except migrations.SchemaTooNew:
        raise  # its own message: a newer reelbot migrated this database
    except Exception as exc:
        raise StoreUnavailable(
            f"reelbot cannot open the database named by DATABASE_URL: {_reason(exc, url)}"
        ) from None


def _sqlite_path(url: str) -> Path | None:
    _, _, path = url.partition(":///")
    return Path(path) if path and path != ":memory:" else None


#: Fields a caller may change through `Store.update` (money and queue columns belong to
#: bot.core.controls, which writes them in its own transactions).
#: The largest id the jobs table can hold (`sa.Integer`: int4 on PostgreSQL).
MAX_JOB_ID = 2**31 - 1
UPDATABLE = frozenset(
    c.name
    for c in jobs_table.columns
    if c.name
    not in {
        "id",
        "model",
        "request",
        "created_at",
        "estimate_micros",
        "reserved_micros",
        "usage_day",
        "settled",
        "queue_round",
        "member_slots",
    }
    | LEASE_COLUMNS
)

#: Runs inside the transaction that moves a job to a terminal state (the ledger's settlement).
TerminalHook = Callable[[AsyncConnection, int], Awaitable[Any]]
#: Runs after that transaction committed, with what the in-transaction hook returned.
AfterTerminal = Callable[[Job, Any], None]


class LeaseLost(Exception):
    """A conditional write matched no row: another worker took the job over (or it is gone).

    The worker that gets this drops the job from memory and says nothing: the new owner
    carries on from what the store holds.
    """

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: lease lost")


def held_by(job: Job) -> sa.ColumnElement[bool]:
    """The condition of every write of `job`: same row, same owner, same claim (fence)."""
    return sa.and_(
        jobs_table.c.id == job.id,
        jobs_table.c.owner.is_(None) if job.owner is None else jobs_table.c.owner == job.owner,
        jobs_table.c.fence == job.fence,
    )


def _rows_to_jobs(rows: Iterable[sa.Row[Any]]) -> list[Job]:
    """Every readable row; one that is not (a corrupt value) is logged, not fatal to the rest."""
    jobs = []
    for row in rows:
        try:
            jobs.append(_row_to_job(row))
        except Exception:
            log.exception("job %s: its stored row cannot be read; skipped", row._mapping["id"])
    return jobs


#: For core modules that read job rows with statements of their own (leases).
rows_to_jobs = _rows_to_jobs


def _row_to_job(row: sa.Row[Any]) -> Job:
    m = row._mapping
    request = m["request"]
    if isinstance(request, str):  # some drivers hand JSON back as text
        request = json.loads(request)
    return Job(
        id=m["id"],
        state=JobState(m["state"]),
        # Stored as it was accepted: not re-checked against today's catalog, so a model renamed
        # or a rule tightened in a later release cannot make an old job unreadable.
        request=VideoRequest.model_construct(
            **{**request, "images": tuple(request.get("images") or ())}
        ),
        created_at=m["created_at"],
        origin=dict(m["origin"] or {}),
        requester=m["requester"],
        guild_id=m["guild_id"],
        task_id=m["task_id"],
        progress=m["progress"] or 0,
        estimated_time=m["estimated_time"],
        submitted_at=m["submitted_at"],
        finished_at=m["finished_at"],
        run_seconds=m["run_seconds"],
        # A broken figure stored by an older release is unknown, never money or a date.
        cost=plausible_money(m["cost"]),
        credits_cost=plausible_money(m["credits_cost"]),
        video_urls=list(m["video_urls"] or []),
        expires_at=plausible_time(m["expires_at"]),
        error_code=m["error_code"],
        error_message=m["error_message"],
        delivered=bool(m["delivered"]),
        estimate=m["estimate_micros"],
        reserved=m["reserved_micros"] or 0,
        held=bool(m["held"]),
        owner=m["owner"],
        fence=m["fence"] or 0,
        lease_until=m["lease_until"],
        next_poll_at=m["next_poll_at"],
    )


def make_engine(url: str) -> AsyncEngine:
    """The engine for `url`, set up as the store needs it (also for `reelbot db`)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite") and (":memory:" in url or url.endswith("://")):
        # An in-memory database lives in one connection: share it.
        kwargs["poolclass"] = StaticPool
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


class Store:
    """Async access to the jobs table. One instance per process, opened in `__main__`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite allows one writer at a time; concurrent write transactions from the pool's
        # connections would fight over the file lock and fail with "database is locked" under
        # load. Queue them here instead (reads stay concurrent: WAL). PostgreSQL needs no lock.
        self._write_lock: asyncio.Lock | None = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else None
        )
        #: Set by bot.core.controls: settle a job's money in the same transaction as its end.
        self.on_terminal: TerminalHook | None = None
        self.after_terminal: AfterTerminal | None = None

    def transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """One write transaction for callers with several statements to keep together."""
        return self._writing()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (serialised on SQLite)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect and migrate the schema to head (SQLite in WAL mode for concurrent reads).

        Raises `migrations.SchemaTooNew` when a newer reelbot has migrated the database.
        """
        engine = make_engine(url)
        try:
            await migrations.upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def create(
        self,
        request: VideoRequest,
        *,
        now: float,
        origin: dict[str, Any] | None = None,
        requester: str | None = None,
        guild_id: str | None = None,
        owner: str | None = None,
        lease_until: float | None = None,
    ) -> Job:
        """Insert a job; with `owner`, already leased to that worker (first claim: fence 1)."""
        fence = 1 if owner is not None else 0
        values: dict[str, Any] = {
            "state": JobState.CREATED.value,
            "model": request.model,
            "request": request.model_dump(mode="json", exclude_none=True),
            "origin": origin or {},
            "requester": requester,
            "guild_id": guild_id,
            "progress": 0,
            "created_at": now,
            "video_urls": [],
            "delivered": False,
            "owner": owner,
            "lease_until": lease_until if owner is not None else None,
            "fence": fence,
        }
        async with self._writing() as conn:
            result = await conn.execute(jobs_table.insert().values(**values))
            job_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        assert job_id is not None
        return Job(
            id=int(job_id),
            state=JobState.CREATED,
            request=request,
            created_at=now,
            origin=dict(origin or {}),
            requester=requester,
            guild_id=guild_id,
            owner=owner,
            fence=fence,
            lease_until=values["lease_until"],
        )

    async def update(self, job: Job, **fields: Any) -> Job:
        """Write `fields` and apply them to the cached `job` (one transaction).

        Conditional on the lease the cached job was read or claimed with (`held_by`): raises
        `LeaseLost`, writing nothing, when another worker has claimed the job since.
        """
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {k: (v.value if isinstance(v, JobState) else v) for k, v in fields.items()}
        ending = "state" in fields and JobState(fields["state"]).terminal
        settled: Any = None
        async with self._writing() as conn:
            result = await conn.execute(jobs_table.update().where(held_by(job)).values(**values))
            if result.rowcount == 0:
                raise LeaseLost(job.id)  # (the transaction is rolled back: nothing written)
            if ending and self.on_terminal is not None:
                settled = await self.on_terminal(conn, job.id)
        for name, value in fields.items():
            setattr(job, name, JobState(value) if name == "state" else value)
        if ending and self.after_terminal is not None:
            try:
                self.after_terminal(job, settled)
            except Exception:
                log.exception("job %s: after-end hook failed", job.id)
        return job

    async def replace_request(self, job: Job, request: VideoRequest) -> None:
        """Store the request with uploaded image URLs in place of the local files."""
        async with self._writing() as conn:
            result = await conn.execute(
                jobs_table.update()
                .where(held_by(job))
                .values(request=request.model_dump(mode="json", exclude_none=True))
            )
        if result.rowcount == 0:
            raise LeaseLost(job.id)
        job.request = request

    async def update_many(self, changes: Iterable[tuple[Job, dict[str, Any]]]) -> list[Job]:
        """Several small cosmetic updates (progress from a batch of polls) in one round trip.

        Each is conditional on its job's lease, as in `update`; a job whose lease was lost
        is simply not written (its renewal reports the loss). Nothing is returned as lost.
        """
        # In id order, as every multi-row write does (no lock cycles between workers).
        changes = sorted(changes, key=lambda change: change[0].id)
        if not changes:
            return []
        by_fields: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for job, fields in changes:
            params = {f"v_{k}": v for k, v in fields.items()}
            params.update(b_id=job.id, b_owner=job.owner, b_fence=job.fence)
            by_fields.setdefault(tuple(sorted(fields)), []).append(params)
        c = jobs_table.c
        async with self._writing() as conn:
            for names, rows in by_fields.items():
                stmt = (
                    jobs_table.update()
                    .where(
                        c.id == sa.bindparam("b_id"),
                        sa.or_(
                            c.owner == sa.bindparam("b_owner"),
                            sa.and_(c.owner.is_(None), sa.bindparam("b_owner").is_(None)),
                        ),
                        c.fence == sa.bindparam("b_fence"),
                    )
                    .values({name: sa.bindparam(f"v_{name}") for name in names})
                )
                await conn.execute(stmt, rows)  # executemany: one pipelined round trip
        for job, fields in changes:
            for name, value in fields.items():
                setattr(job, name, value)
        return []

    async def get(self, job_id: int) -> Job | None:
        """The job, or None; also for an id no job can have (a button's id is the member's
        to send, and one beyond the id column's range is a driver error, not "no such job")."""
        if not 0 < job_id <= MAX_JOB_ID:
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(jobs_table.select().where(jobs_table.c.id == job_id))).first()
        return None if row is None else _row_to_job(row)

    async def get_by_task(self, task_id: str) -> Job | None:
        async with self.engine.connect() as conn:
            query = jobs_table.select().where(jobs_table.c.task_id == task_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _row_to_job(row)

    async def unfinished(self) -> list[Job]:
        """Jobs a restart must pick up: not terminal, or terminal but not yet delivered."""
        terminal = [s.value for s in TERMINAL]
        query = (
            jobs_table.select()
            .where(
                sa.or_(
                    jobs_table.c.state.not_in(terminal),
                    jobs_table.c.delivered.is_(False),
                )
            )
            .order_by(jobs_table.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _rows_to_jobs(rows)

    async def unknown_with_task(self, *, since: float) -> list[Job]:
        """`unknown` jobs with a task id created after `since`: their end can still be learned."""
        query = (
            jobs_table.select()
            .where(
                jobs_table.c.state == JobState.UNKNOWN.value,
                jobs_table.c.task_id.is_not(None),
                jobs_table.c.created_at >= since,
            )
            .order_by(jobs_table.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _rows_to_jobs(rows)

    async def recent(
        self, *, requester: str | None = None, guild_id: str | None = None, limit: int = 10
    ) -> list[Job]:
        query = jobs_table.select().order_by(jobs_table.c.id.desc()).limit(limit)
        if requester is not None:
            query = query.where(jobs_table.c.requester == requester)
        if guild_id is not None:
            query = query.where(jobs_table.c.guild_id == guild_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _rows_to_jobs(rows)

    async def spent(self, *, guild_id: str | None = None, since: float = 0.0) -> float:
        """Money reported by the API for finished jobs (for budgets and `/video jobs`)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(jobs_table.c.cost), 0.0)).where(
            jobs_table.c.created_at >= since
        )
        if guild_id is not None:
            query = query.where(jobs_table.c.guild_id == guild_id)
        async with self.engine.connect() as conn:
            return float((await conn.execute(query)).scalar_one())

    # -- operations: readiness and metrics -------------------------------------------------

    async def ping(self) -> None:
        """One `SELECT 1`: raises if the database cannot be reached (for `/readyz`)."""
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (one grouped query, for the metrics gauges)."""
        query = sa.select(jobs_table.c.state, sa.func.count()).group_by(jobs_table.c.state)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(state): int(count) for state, count in rows}

    async def spend_by_guild(self, *, since: float) -> dict[str | None, float]:
        """Cost reported by the API per server for jobs created since `since`."""
        total = sa.func.sum(jobs_table.c.cost)
        query = (
            sa.select(jobs_table.c.guild_id, total)
            .where(jobs_table.c.created_at >= since, jobs_table.c.cost.is_not(None))
            .group_by(jobs_table.c.guild_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {guild: float(amount or 0) for guild, amount in rows}
