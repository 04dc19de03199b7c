"""Alembic's entry point, loaded by Alembic itself (never imported by reelbot).

It only ever runs on a connection handed over by `bot.core.migrations` (`config(connection)`),
already inside the transaction that holds the migration lock; there is no offline (SQL
script) mode and no URL to read.
"""

from __future__ import annotations

from alembic import context

from bot.core.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `reelbot db upgrade` (bot.core.migrations)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
