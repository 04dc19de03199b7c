"""The fake's world: users, guilds, roles, channels, members and their permissions.

Also the bookkeeping every other part shares: snowflake ids, the record of requests and the
"something changed" signal tests wait on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.testing.fake_discord.protocol import (
    ALL_PERMISSIONS,
    API_VERSION,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    DISCORD_EPOCH_MS,
    PERMISSIONS,
    UPLOAD_LIMITS,
    now_iso,
    sf,
)
from bot.testing.fake_discord.records import RecordedRequest


class World:
    """State and world building; the gateway, REST and CDN parts build on it."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        application_id: int = 1100000000000000001,
        bot_user_id: int = 1100000000000000002,
        guild_premium_tier: int = 0,
        bot_username: str = "reelbot",
        heartbeat_interval: int = 41250,
        privileged_intents: bool = False,
        echo_message_events: bool = True,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.guild_premium_tier = guild_premium_tier
        self.heartbeat_interval = heartbeat_interval
        self.privileged_intents = privileged_intents
        self.echo_message_events = echo_message_events
        self.host = "127.0.0.1"
        self.port = 0

        self._last_id = 0
        self.users: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, dict[str, Any]] = {}  # guild_id -> guild (no channels/members)
        self.channels: dict[int, dict[str, Any]] = {}  # channel_id -> channel
        self.roles: dict[int, dict[int, dict[str, Any]]] = {}  # guild -> role_id -> role
        self.members: dict[int, dict[int, dict[str, Any]]] = {}  # guild -> user_id -> member
        self.messages: dict[int, list[dict[str, Any]]] = {}  # channel -> its messages
        self.bot_user = self.add_user(bot_username, user_id=bot_user_id, bot=True)

        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of crashes inside the fake's handlers
        self._changed: asyncio.Event | None = None
        self._bg_tasks: set[asyncio.Task[Any]] = set()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def cdn_base(self) -> str:
        return self.base_url

    # ------------------------------------------------------------------ ids, records, waiting

    def next_id(self) -> int:
        """A new snowflake: time-based and strictly increasing."""
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(self._last_id + 1, candidate)
        return self._last_id

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_until(
        self,
        check: Callable[[], Any],
        timeout: float,
        what: Callable[[], str],
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = check()
                    if result is not None:
                        return result
                    if self._changed is None:
                        self._changed = asyncio.Event()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"FakeDiscord: timed out after {timeout}s {what()}") from None

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def runner() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(runner())
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)

    def _spawn_dispatch(self, event: str, data: dict[str, Any], intent: int = 0) -> None:
        """Tell connected bots about a change; the gateway part does (a bare world has none)."""

    def _record(self, record: RecordedRequest) -> None:
        self.requests.append(record)
        self._notify()

    @property
    def unhandled_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "api" and r.route is None]

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> RecordedRequest:
        """First recorded request (from index ``since``; already-recorded ones count) matching."""

        def check() -> RecordedRequest | None:
            for r in self.requests[since:]:
                if predicate(r):
                    return r
            return None

        def what() -> str:
            recent = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[-15:]]
            return "waiting for a matching request; recent: " + "; ".join(recent)

        result: RecordedRequest = await self._wait_until(check, timeout, what)
        return result

    # ------------------------------------------------------------------ world building

    def add_user(
        self,
        username: str,
        *,
        user_id: int | None = None,
        bot: bool = False,
        global_name: str | None = None,
    ) -> dict[str, Any]:
        uid = user_id if user_id is not None else self.next_id()
        self._last_id = max(self._last_id, uid)
        user = {
            "id": str(uid),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "bot": bot,
            "system": False,
            "primary_guild": None,
            "collectibles": None,
        }
        self.users[uid] = user
        return user

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        guild_id: int | None = None,
        owner_id: int | None = None,
        premium_tier: int | None = None,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        preferred_locale: str = "en-US",
    ) -> dict[str, Any]:
        """Create a guild with an @everyone role, the bot's managed role and the bot member.

        If ``owner_id`` is not given an owner user ("guild-owner") is created and added.
        """
        gid = guild_id if guild_id is not None else self.next_id()
        self._last_id = max(self._last_id, gid)
        if owner_id is None:
            owner_id = int(self.add_user("guild-owner")["id"])
        guild: dict[str, Any] = {
            "id": str(gid),
            "name": name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "max_presences": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "vanity_url_code": None,
            "premium_tier": self.guild_premium_tier if premium_tier is None else premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": preferred_locale,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_progress_bar_enabled": False,
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
            "joined_at": now_iso(),
        }
        self.guilds[gid] = guild
        self.roles[gid] = {}
        self.members[gid] = {}
        self._add_role(gid, "@everyone", everyone_permissions, role_id=gid, position=0)
        bot_role = self._add_role(
            gid,
            str(self.bot_user["username"]),
            bot_permissions,
            position=1,
            managed=True,
            tags={"bot_id": str(self.bot_user_id)},
        )
        self.add_member(gid, self.bot_user_id, role_ids=[int(bot_role["id"])])
        if owner_id not in self.members[gid]:
            if owner_id not in self.users:
                self.add_user(f"user-{owner_id}", user_id=owner_id)
            self.add_member(gid, owner_id)
        return guild

    def _add_role(
        self,
        guild_id: int,
        name: str,
        permissions: int,
        *,
        role_id: int | None = None,
        position: int | None = None,
        managed: bool = False,
        tags: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        rid = role_id if role_id is not None else self.next_id()
        role: dict[str, Any] = {
            "id": str(rid),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position if position is not None else len(self.roles[guild_id]),
            "permissions": str(permissions),
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }
        if tags is not None:
            role["tags"] = tags
        self.roles[guild_id][rid] = role
        return role

    def add_text_channel(
        self,
        guild_id: int,
        name: str,
        *,
        channel_id: int | None = None,
        topic: str | None = None,
        parent_id: int | None = None,
        nsfw: bool = False,
    ) -> dict[str, Any]:
        gid = sf(guild_id)
        if gid not in self.guilds:
            raise KeyError(f"unknown guild {guild_id}")
        cid = channel_id if channel_id is not None else self.next_id()
        self._last_id = max(self._last_id, cid)
        position = sum(1 for c in self.channels.values() if c.get("guild_id") == str(gid))
        channel = {
            "id": str(cid),
            "type": 0,
            "guild_id": str(gid),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "parent_id": str(parent_id) if parent_id is not None else None,
            "topic": topic,
            "nsfw": nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "last_pin_timestamp": None,
            "flags": 0,
            "icon_emoji": None,
            "theme_color": None,
        }
        self.channels[cid] = channel
        self.messages.setdefault(cid, [])
        if self.guilds[gid]["system_channel_id"] is None:
            self.guilds[gid]["system_channel_id"] = str(cid)
        self._spawn_dispatch("CHANNEL_CREATE", channel)
        return channel

    def add_member(
        self,
        guild_id: int,
        user: int | dict[str, Any] | None = None,
        *,
        username: str | None = None,
        role_ids: list[int] | tuple[int, ...] = (),
        nick: str | None = None,
    ) -> dict[str, Any]:
        """Add a member; ``user`` is a user id, a user dict or ``None`` (creates a user)."""
        gid = sf(guild_id)
        if user is None:
            user_obj = self.add_user(username or f"user{len(self.users)}")
        elif isinstance(user, dict):
            user_obj = user
            self.users.setdefault(int(user["id"]), user)
        else:
            user_obj = self.users.get(int(user)) or self.add_user(
                username or f"user-{user}", user_id=int(user)
            )
        member = {
            "user": user_obj,
            "nick": nick,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in role_ids],
            "joined_at": now_iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        self.members[gid][int(user_obj["id"])] = member
        return member

    def set_channel_overwrite(
        self,
        channel_id: int,
        target_id: int,
        *,
        allow: int = 0,
        deny: int = 0,
        type: int = 1,
    ) -> None:
        """Set a permission overwrite (``type`` 0 = role, 1 = member) and tell connected bots."""
        channel = self.channels[sf(channel_id)]
        ows = [o for o in channel["permission_overwrites"] if o["id"] != str(target_id)]
        ows.append({"id": str(target_id), "type": type, "allow": str(allow), "deny": str(deny)})
        channel["permission_overwrites"] = ows
        self._spawn_dispatch("CHANNEL_UPDATE", channel)

    def set_bot_channel_permissions(
        self, channel_id: int, *, allow: int = 0, deny: int = 0
    ) -> None:
        """E.g. ``deny=PERMISSIONS["ATTACH_FILES"]`` → uploads there answer 403/50013."""
        self.set_channel_overwrite(channel_id, self.bot_user_id, allow=allow, deny=deny, type=1)

    def permissions_for(self, channel_id: int, user_id: int) -> int:
        """Effective permissions of ``user_id`` in a guild channel (Discord's algorithm)."""
        channel = self.channels[sf(channel_id)]
        gid = int(channel["guild_id"])
        guild = self.guilds[gid]
        if str(user_id) == guild["owner_id"]:
            return ALL_PERMISSIONS
        member = self.members[gid].get(sf(user_id))
        roles = self.roles[gid]
        perms = int(roles[gid]["permissions"])
        member_roles = set(member["roles"]) if member else set()
        for rid in member_roles:
            role = roles.get(int(rid))
            if role:
                perms |= int(role["permissions"])
        if perms & PERMISSIONS["ADMINISTRATOR"]:
            return ALL_PERMISSIONS
        ows = {o["id"]: o for o in channel.get("permission_overwrites", [])}
        if str(gid) in ows:
            perms &= ~int(ows[str(gid)]["deny"])
            perms |= int(ows[str(gid)]["allow"])
        allow = deny = 0
        for rid in member_roles:
            o = ows.get(rid)
            if o and o["type"] == 0:
                allow |= int(o["allow"])
                deny |= int(o["deny"])
        perms = (perms & ~deny) | allow
        o = ows.get(str(user_id))
        if o and o["type"] == 1:
            perms = (perms & ~int(o["deny"])) | int(o["allow"])
        if not perms & PERMISSIONS["VIEW_CHANNEL"]:
            return 0
        return perms

    def upload_limit(self, guild_id: int | None) -> int:
        if guild_id is None or sf(guild_id) not in self.guilds:
            return UPLOAD_LIMITS[0]
        return UPLOAD_LIMITS.get(int(self.guilds[sf(guild_id)]["premium_tier"]), UPLOAD_LIMITS[0])
