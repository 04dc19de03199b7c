"""The controls' tables (declared in `bot.core.schema`, the one place for the schema) and the
keys of their special rows.

Money columns are BigInteger micro-dollars: exact on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from bot.core.schema import audit_log, guild_controls, prices, usage_daily

#: The key of the row that carries operator-wide caps (all servers together).
OPERATOR = "*"
#: The guild key of jobs that come from no server (the terminal's `generate`).
NO_GUILD = ""

__all__ = ["NO_GUILD", "OPERATOR", "audit_log", "guild_controls", "prices", "usage_daily"]
