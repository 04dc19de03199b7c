"""What the fake remembers about one interaction it handed to the bot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Interaction:
    id: int
    token: str
    type: int
    guild_id: int | None
    channel_id: int
    user_id: int
    size_limit: int
    command_name: str | None = None
    source_message_id: int | None = None  # component interactions
    callback_type: int | None = None
    original_message_id: int | None = None
