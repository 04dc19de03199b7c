"""`reelbot db upgrade|current|revision`: the schema, for operators who migrate separately.

Every start migrates by itself; these verbs are for a deploy that migrates once before
starting several workers (a compose one-shot), and for checking where a database stands.
Exit codes as the rest of the CLI: 0 done, 2 the database is newer than this reelbot.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bot.core import migrations
from bot.core.config import load_settings
from bot.core.logs import setup_logging
from bot.core.store import make_engine

EXIT_OK = 0


def add_commands(sub: Any) -> None:
    db = sub.add_parser(
        "db",
        help="the database schema (every start also migrates by itself)",
        description="Migrate or inspect the schema of DATABASE_URL (`reelbot check` shows which "
        "database that is). Every start migrates by itself; `upgrade` is for migrating once "
        "before starting several workers.",
    )
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    actions.add_parser(
        "upgrade",
        help="migrate DATABASE_URL to this reelbot's schema",
        description="Migrate DATABASE_URL to this reelbot's schema; exit 2 when the database "
        "is newer than this reelbot.",
    )
    actions.add_parser(
        "current",
        help="print the schema revision of DATABASE_URL",
        description="Print the schema revision DATABASE_URL is at.",
    )
    revision = actions.add_parser(
        "revision",
        help="(developers) draft a revision from bot/core/schema.py's changes",
        description="(developers) Draft the next Alembic revision from the difference between "
        "bot/core/schema.py and the revisions so far.",
    )
    revision.add_argument("-m", "--message", required=True, help="what the revision changes")


def dispatch(args: argparse.Namespace) -> int:
    if args.db_command == "revision":
        path = migrations.write_revision(args.message)
        print(
            f"wrote {path}; read it, `ruff format` it, run the tests (they compare it with schema.py)"
        )
        return EXIT_OK
    settings = load_settings()
    setup_logging("WARNING")
    if folder := settings.sqlite_path():
        folder.parent.mkdir(parents=True, exist_ok=True)
    step = migrations.upgrade if args.db_command == "upgrade" else migrations.current
    revisions = asyncio.run(_on(settings.DATABASE_URL, step))
    at = ", ".join(revisions) or "none (an empty database)"
    suffix = " (head)" if revisions == (migrations.head(),) else ""
    print(f"database at schema revision {at}{suffix}")
    return EXIT_OK


async def _on(url: str, step: Any) -> tuple[str, ...]:
    engine = make_engine(url)
    try:
        result: tuple[str, ...] = await step(engine)
        return result
    finally:
        await engine.dispose()
