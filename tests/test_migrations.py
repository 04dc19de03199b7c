"""Schema migrations as an operator meets them: old installs upgrade, new ones are created,
a database from a newer reelbot is refused, `reelbot db upgrade` works on its own, and the
revisions always produce exactly the tables the code declares."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from bot.core import migrations
from bot.core.job import JobState
from bot.core.migrations import SchemaTooNew
from bot.core.schema import metadata
from bot.core.store import Store

#: The jobs table exactly as `create_all` made it before migrations existed (frozen here on
#: purpose: `bot/core/schema.py` will move on, databases made by old releases will not).
OLD_METADATA = sa.MetaData()
sa.Table(
    "jobs",
    OLD_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("origin", sa.JSON, nullable=False),
    sa.Column("requester", sa.String(64), index=True),
    sa.Column("guild_id", sa.String(64), index=True),
    sa.Column("task_id", sa.String(128), index=True),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
    sa.Column("estimated_time", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("submitted_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("run_seconds", sa.Float),
    sa.Column("cost", sa.Float),
    sa.Column("credits_cost", sa.Float),
    sa.Column("video_urls", sa.JSON, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("delivered", sa.Boolean, nullable=False, default=False, index=True),
)

FUTURE = "9999_from_a_newer_reelbot"


async def _execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run SQL on the database outside the store (as an old release or an operator would)."""
    engine = create_async_engine(url)
    rows: list[tuple[object, ...]] = []
    try:
        async with engine.begin() as conn:
            for statement in statements:
                result = await conn.execute(sa.text(statement))
                if result.returns_rows:
                    rows = [tuple(row) for row in result.all()]
    finally:
        await engine.dispose()
    return rows


async def _make_old_database(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(OLD_METADATA.create_all)
        await conn.execute(
            OLD_METADATA.tables["jobs"]
            .insert()
            .values(
                state="running",
                model="sora-2",
                request={"model": "sora-2", "prompt": "a red fox in snow", "duration": 10},
                origin={"channel_id": 42},
                requester="7",
                task_id="task_old",
                progress=40,
                created_at=1_800_000_000.0,
                video_urls=[],
                delivered=False,
            )
        )
    await engine.dispose()


async def test_a_database_made_before_migrations_is_upgraded_and_its_jobs_still_read(
    database_url: str,
) -> None:
    await _make_old_database(database_url)

    store = await Store.open(database_url)
    try:
        job = await store.get(1)
        unfinished = await store.unfinished()
        # And it still takes new jobs after the old one.
        assert job is not None
        fresh = await store.create(job.request, now=1.0)
        revisions = await migrations.current(store.engine)
    finally:
        await store.close()

    assert job is not None
    assert (job.state, job.task_id, job.progress) == (JobState.RUNNING, "task_old", 40)
    assert job.request.prompt == "a red fox in snow"
    assert job.origin == {"channel_id": 42}
    assert [j.id for j in unfinished] == [1]
    assert fresh.id == 2
    assert revisions == (migrations.head(),)


async def test_a_new_database_is_created_at_the_newest_revision(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        assert await migrations.current(store.engine) == (migrations.head(),)
        assert await store.recent() == []
    finally:
        await store.close()
    # Opening again finds nothing to do and keeps the data.
    again = await Store.open(database_url)
    await again.close()
    assert await _execute(database_url, "SELECT version_num FROM alembic_version") == [
        (migrations.head(),)
    ]


async def test_a_database_from_a_newer_reelbot_is_refused_untouched(database_url: str) -> None:
    await (await Store.open(database_url)).close()
    await _execute(database_url, f"UPDATE alembic_version SET version_num = '{FUTURE}'")

    with pytest.raises(SchemaTooNew) as caught:
        await Store.open(database_url)

    message = str(caught.value)
    assert "\n" not in message
    assert FUTURE in message
    assert "older" in message and "upgrade reelbot" in message
    assert await _execute(database_url, "SELECT version_num FROM alembic_version") == [(FUTURE,)]


async def test_the_revisions_build_exactly_the_declared_tables(database_url: str) -> None:
    """A table or column added to schema.py without its revision fails here, not in a deploy."""
    store = await Store.open(database_url)

    def differences(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    try:
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(differences)
    finally:
        await store.close()
    assert diff == []


async def test_two_workers_starting_at_once_migrate_once(database_url: str) -> None:
    """On PostgreSQL the advisory lock makes the second wait, then find the schema at head."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite is the single-process engine")
    engines = [create_async_engine(database_url) for _ in range(4)]
    try:
        # Without the lock they collide (or wait on each other for good): bounded, so it fails.
        async with asyncio.timeout(30):
            results = await asyncio.gather(*(migrations.upgrade(e) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert results == [(migrations.head(),)] * 4
    assert await _execute(database_url, "SELECT count(*) FROM alembic_version") == [(1,)]


async def _reelbot_db(action: str, url: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIMART_", "DISCORD_"))}
    env["DATABASE_URL"] = url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "db",
        action,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_reelbot_db_upgrade_migrates_and_refuses_a_newer_database(
    database_url: str, tmp_path: Path
) -> None:
    await _make_old_database(database_url)

    code, out, err = await _reelbot_db("upgrade", database_url, tmp_path)
    assert (code, err) == (0, "")
    assert f"revision {migrations.head()} (head)" in out

    code, out, _ = await _reelbot_db("current", database_url, tmp_path)
    assert code == 0 and f"revision {migrations.head()} (head)" in out

    await _execute(database_url, f"UPDATE alembic_version SET version_num = '{FUTURE}'")
    code, out, err = await _reelbot_db("upgrade", database_url, tmp_path)
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert FUTURE in err and "upgrade reelbot" in err
