"""Schema migrations (Alembic), run at start-up or by `reelbot db upgrade`.

Why it is built this way:

* Configured in code, not by an `alembic.ini`: the revisions ship inside the package, so an
  installed reelbot (a wheel, the Docker image) can migrate its database with nothing beside it.
* Every start runs `upgrade head`. An operator who migrates separately (a compose one-shot
  before the workers) runs `reelbot db upgrade`; the workers then find nothing to do.
* A database made before migrations existed (the `jobs` table, no `alembic_version`) is
  stamped at the baseline, which is exactly that schema, and then upgraded like any other.
* A database at a revision this code does not know was migrated by a newer reelbot. Running
  on it would write rows the newer code cannot read, so start-up refuses (`SchemaTooNew`).
* On PostgreSQL several workers may start at once: the upgrade runs inside one transaction
  holding an advisory lock, so the second waits, then finds the schema at head. PostgreSQL's
  DDL is transactional, so a failed migration leaves the database as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

HERE = Path(__file__).parent
#: The revision equal to the schema of every reelbot before migrations (`create_all` days).
BASELINE = "0001"
#: Key of the PostgreSQL advisory lock held while migrating ("reelbot" in ASCII, as an int).
ADVISORY_LOCK_KEY = 0x7265656C626F74


class SchemaTooNew(Exception):
    """The database was migrated by a newer reelbot; this one must not write to it."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        super().__init__(
            f"reelbot cannot start: the database is at schema revision {revision}, which this "
            "reelbot does not know (it is older than the database); upgrade reelbot"
        )


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here rather than read from a file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this code knows."""
    revision = scripts().get_current_head()
    assert revision is not None
    return revision


def _current(conn: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(conn).get_current_heads()


def _check_known(revisions: tuple[str, ...]) -> None:
    known = scripts()
    for revision in revisions:
        try:
            found = known.get_revision(revision)
        except CommandError:
            found = None
        if found is None:
            raise SchemaTooNew(revision)


def _upgrade(conn: Connection) -> tuple[str, ...]:
    """Bring the schema to head on `conn`, inside the caller's transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    current = _current(conn)
    _check_known(current)
    cfg = config(conn)
    if not current and sa.inspect(conn).has_table("jobs"):
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")
    return _current(conn)


async def _run(engine: AsyncEngine, step: Callable[[Connection], Any]) -> Any:
    async with engine.begin() as conn:
        return await conn.run_sync(step)


async def upgrade(engine: AsyncEngine) -> tuple[str, ...]:
    """Migrate to head (or raise `SchemaTooNew`); the revisions the database is at after."""
    result: tuple[str, ...] = await _run(engine, _upgrade)
    return result


async def current(engine: AsyncEngine) -> tuple[str, ...]:
    """The revisions the database is at (empty: none recorded yet)."""

    def read(conn: Connection) -> tuple[str, ...]:
        return _current(conn)

    result: tuple[str, ...] = await _run(engine, read)
    return result


def write_revision(message: str) -> Path:
    """Write the next revision from the difference between `schema.py` and head (developers).

    The difference is taken against a scratch in-memory SQLite database migrated to head, so
    no real database is needed; read the generated file, it is a draft (Alembic cannot tell
    a rename from a drop and an add).
    """
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            _upgrade(conn)
            number = len(list(scripts().walk_revisions())) + 1
            slug = "_".join(message.lower().split())[:40] or "revision"
            script = command.revision(
                config(conn), message, autogenerate=True, rev_id=f"{number:04d}"
            )
    finally:
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    target = path.with_name(f"{number:04d}_{slug}.py")
    path.rename(target)
    return target
