"""A local fake Discord (gateway + REST + CDN) for end-to-end tests.

:class:`FakeDiscord` is an :mod:`aiohttp.web` application that speaks enough of Discord's
gateway (v10, JSON, optional ``zlib-stream``/``zstd-stream`` transport compression) and
REST API (``/api/v10``) for an unmodified :mod:`discord.py` 2.x client to log in, connect,
sync application commands, receive interactions and answer them, post channel messages
with files and download attachments from the CDN.

Typical use::

    fake = FakeDiscord()
    guild = fake.add_guild("Test Guild")
    channel = fake.add_text_channel(guild["id"], "general")
    await fake.start()
    point_discord_py_at(fake.rest_base, fake.gateway_url)   # or env vars for a subprocess
    ... start the bot ...
    await fake.wait_connected()
    await fake.dispatch("INTERACTION_CREATE", fake.slash_interaction(...))
    req = await fake.wait_for(lambda r: r.method == "POST" and r.path.endswith("/callback"))

Everything the bot does over REST is recorded in :attr:`FakeDiscord.requests`; unknown routes
answer 404 with a JSON error naming the route (and are recorded, see
:attr:`FakeDiscord.unhandled_requests`) so gaps are loud.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import mimetypes
import re
import secrets
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

from bot.discord.endpoints import point_discord_py_at

__all__ = [
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "PERMISSIONS",
    "FakeDiscord",
    "RecordedRequest",
    "discord_py_pointed_at",
    "point_discord_py_at",
]

DISCORD_EPOCH_MS = 1420070400000
API_VERSION = 10

# --------------------------------------------------------------------------- permissions

PERMISSIONS: dict[str, int] = {
    "CREATE_INSTANT_INVITE": 1 << 0,
    "KICK_MEMBERS": 1 << 1,
    "BAN_MEMBERS": 1 << 2,
    "ADMINISTRATOR": 1 << 3,
    "MANAGE_CHANNELS": 1 << 4,
    "MANAGE_GUILD": 1 << 5,
    "ADD_REACTIONS": 1 << 6,
    "VIEW_AUDIT_LOG": 1 << 7,
    "PRIORITY_SPEAKER": 1 << 8,
    "STREAM": 1 << 9,
    "VIEW_CHANNEL": 1 << 10,
    "SEND_MESSAGES": 1 << 11,
    "SEND_TTS_MESSAGES": 1 << 12,
    "MANAGE_MESSAGES": 1 << 13,
    "EMBED_LINKS": 1 << 14,
    "ATTACH_FILES": 1 << 15,
    "READ_MESSAGE_HISTORY": 1 << 16,
    "MENTION_EVERYONE": 1 << 17,
    "USE_EXTERNAL_EMOJIS": 1 << 18,
    "CONNECT": 1 << 20,
    "SPEAK": 1 << 21,
    "CHANGE_NICKNAME": 1 << 26,
    "MANAGE_ROLES": 1 << 28,
    "MANAGE_WEBHOOKS": 1 << 29,
    "USE_APPLICATION_COMMANDS": 1 << 31,
    "SEND_MESSAGES_IN_THREADS": 1 << 38,
    "USE_EXTERNAL_APPS": 1 << 50,
}
_P = PERMISSIONS
ALL_PERMISSIONS = (1 << 51) - 1

DEFAULT_EVERYONE_PERMISSIONS = (
    _P["CREATE_INSTANT_INVITE"]
    | _P["ADD_REACTIONS"]
    | _P["STREAM"]
    | _P["VIEW_CHANNEL"]
    | _P["SEND_MESSAGES"]
    | _P["EMBED_LINKS"]
    | _P["ATTACH_FILES"]
    | _P["READ_MESSAGE_HISTORY"]
    | _P["USE_EXTERNAL_EMOJIS"]
    | _P["CONNECT"]
    | _P["SPEAK"]
    | _P["CHANGE_NICKNAME"]
    | _P["USE_APPLICATION_COMMANDS"]
    | _P["SEND_MESSAGES_IN_THREADS"]
    | _P["USE_EXTERNAL_APPS"]
)
DEFAULT_BOT_PERMISSIONS = (
    _P["VIEW_CHANNEL"]
    | _P["SEND_MESSAGES"]
    | _P["EMBED_LINKS"]
    | _P["ATTACH_FILES"]
    | _P["READ_MESSAGE_HISTORY"]
    | _P["USE_EXTERNAL_EMOJIS"]
    | _P["ADD_REACTIONS"]
    | _P["SEND_MESSAGES_IN_THREADS"]
)

# Gateway intents we care about.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT
# Application flags: GATEWAY_PRESENCE_LIMITED, GATEWAY_GUILD_MEMBERS_LIMITED,
# GATEWAY_MESSAGE_CONTENT_LIMITED (the "enabled in the developer portal" bits for small bots).
APP_FLAGS_ALL_PRIVILEGED = (1 << 13) | (1 << 15) | (1 << 19)

# Upload limits by guild premium tier (per file).
UPLOAD_LIMITS = {
    0: 10 * 1024 * 1024,
    1: 10 * 1024 * 1024,
    2: 50 * 1024 * 1024,
    3: 100 * 1024 * 1024,
}

MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7

# Gateway opcodes
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_VOICE_STATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11


# --------------------------------------------------------------------------- discord.py plumbing


@contextlib.contextmanager
def discord_py_pointed_at(
    rest_base: str, gateway_url: str, cdn_base: str | None = None
) -> Iterator[None]:
    """Context manager version of :func:`point_discord_py_at` that restores the originals."""
    import discord.asset
    import discord.gateway
    import discord.http

    saved = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        discord.asset.Asset.BASE,
    )
    point_discord_py_at(rest_base, gateway_url, cdn_base)
    try:
        yield
    finally:
        (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        ) = saved


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (REST or CDN).

    ``path`` is relative to the API base for REST calls (``/channels/1/messages``) and the raw
    URL path for CDN downloads (``/attachments/...``). ``json`` is the parsed JSON body, or the
    ``payload_json`` part for multipart bodies. ``files`` lists ``(filename, size, content_type)``
    of uploaded files (bytes in ``file_data``). ``headers`` exclude ``Authorization``.
    ``status``/``response`` are what the fake answered; ``route`` is the matched route template
    (``None`` if unhandled).
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, int, str]]
    headers: dict[str, str]
    at: float
    kind: str = "api"  # "api" or "cdn"
    raw_path: str = ""
    route: str | None = None
    status: int = 0
    response: Any = None
    injected: bool = False  # answered by a fail_next() rule
    error: str | None = None  # traceback if the fake itself crashed handling this request
    file_data: list[bytes] = field(default_factory=list, repr=False)


@dataclass
class _FaultRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    remaining: int
    retry_after: float
    errors: dict[str, Any] | None
    is_global: bool
    #: Handle the request first (the message exists!), then answer with the fault.
    after_processing: bool = False
    #: Close the connection instead of answering.
    drop: bool = False
    #: Hold the answer this long (seconds) before giving it.
    delay: float = 0.0


@dataclass
class _Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


class _HTTPError(Exception):
    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors


@dataclass
class _Interaction:
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


@dataclass(eq=False)
class _Session:
    session_id: str
    intents: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    conn: _Connection | None = None
    ready: bool = False


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    compress: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    encoder: Any = None
    zstd: Any = None

    async def send_locked(self, payload: dict[str, Any]) -> None:
        """Send one payload; caller holds ``self.lock``."""
        if self.ws.closed:
            return
        text = json.dumps(payload, separators=(",", ":"))
        try:
            if self.compress == "zlib-stream":
                if self.encoder is None:
                    self.encoder = zlib.compressobj()
                data = self.encoder.compress(text.encode()) + self.encoder.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            elif self.compress == "zstd-stream" and self.zstd is not None:
                import zstandard  # type: ignore[import-not-found]

                if self.encoder is None:
                    self.encoder = self.zstd.compressobj()
                data = self.encoder.compress(text.encode()) + self.encoder.flush(
                    zstandard.COMPRESSOBJ_FLUSH_BLOCK
                )
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)
        except ConnectionError:
            pass

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.lock:
            await self.send_locked(payload)


def _json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # discord.py compares Content-Type to exactly "application/json" (no charset).
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def _sf(value: Any) -> int:
    return int(value)


def _snowflake_time(snowflake: Any) -> float:
    """When a snowflake was made (unix seconds)."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000


def _without_nonce(msg: dict[str, Any]) -> dict[str, Any]:
    """A message as GET returns it: Discord echoes a nonce only when the message is created."""
    return {k: v for k, v in msg.items() if k != "nonce"}


_Handler = Callable[["_Ctx"], Awaitable[web.StreamResponse]]


@dataclass
class _Ctx:
    request: web.Request
    params: dict[str, str]
    json: Any
    uploads: list[_Upload]
    record: RecordedRequest


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """An in-process fake of Discord's gateway, REST API and CDN. See module docstring."""

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

        self._last_id = 0
        self.users: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, dict[str, Any]] = {}  # guild_id -> guild (no channels/members)
        self.channels: dict[int, dict[str, Any]] = {}  # channel_id -> channel
        self.roles: dict[int, dict[int, dict[str, Any]]] = {}  # guild -> role_id -> role
        self.members: dict[int, dict[int, dict[str, Any]]] = {}  # guild -> user_id -> member
        self.bot_user = self.add_user(bot_username, user_id=bot_user_id, bot=True)

        self.requests: list[RecordedRequest] = []
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.interaction_responses: dict[str, list[dict[str, Any]]] = {}
        self.registered_commands: list[dict[str, Any]] = []
        self.gateway_received: list[dict[str, Any]] = []  # every payload clients sent
        self.gateway_queries: list[dict[str, str]] = []  # query string of every gateway connect
        self.ready_count = 0
        self.errors: list[str] = []  # tracebacks of crashes inside the fake's handlers
        #: How long (seconds) an ``enforce_nonce`` nonce is remembered, as Discord's "few minutes".
        self.nonce_window = 300.0
        #: Posts answered with an existing message because their nonce was seen (de-duplicated).
        self.nonce_repeats = 0

        self._all_messages: dict[int, dict[str, Any]] = {}
        self._cdn: dict[str, tuple[bytes, str]] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._interactions_by_id: dict[int, _Interaction] = {}
        self._unsynced_command_ids: dict[str, int] = {}
        self._faults: list[_FaultRule] = []
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._changed: asyncio.Event | None = None
        self._bg_tasks: set[asyncio.Task[Any]] = set()

        self._routes: list[tuple[str, re.Pattern[str], str, _Handler, bool]] = []
        self._setup_routes()
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        self.app.router.add_route("GET", "/", self._gateway_handler)
        self.app.router.add_route("*", "/api/{tail:.*}", self._api_handler)
        self.app.router.add_route("GET", "/attachments/{tail:.*}", self._cdn_handler)
        self.app.router.add_route("GET", "/ephemeral-attachments/{tail:.*}", self._cdn_handler)
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def close(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake discord shutting down")
        for task in list(self._bg_tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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

    # ------------------------------------------------------------------ ids & notification

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
        if not any(s.conn is not None and s.ready for s in self._sessions.values()):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._spawn(self.dispatch(event, data, intent=intent))

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
            "joined_at": _now_iso(),
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
        if any(s.conn is not None and s.ready for s in self._sessions.values()):
            self._spawn_dispatch("GUILD_CREATE", self._guild_create_payload(gid, 0))
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

    def add_role(self, guild_id: int, name: str, permissions: int = 0) -> dict[str, Any]:
        role = self._add_role(_sf(guild_id), name, permissions)
        self._spawn_dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role})
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
        gid = _sf(guild_id)
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
        gid = _sf(guild_id)
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
            "joined_at": _now_iso(),
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
        channel = self.channels[_sf(channel_id)]
        ows = [o for o in channel["permission_overwrites"] if o["id"] != str(target_id)]
        ows.append({"id": str(target_id), "type": type, "allow": str(allow), "deny": str(deny)})
        channel["permission_overwrites"] = ows
        self._spawn_dispatch("CHANNEL_UPDATE", channel)

    def set_bot_channel_permissions(
        self, channel_id: int, *, allow: int = 0, deny: int = 0
    ) -> None:
        """E.g. ``deny=PERMISSIONS["ATTACH_FILES"]`` → uploads there answer 403/50013."""
        self.set_channel_overwrite(channel_id, self.bot_user_id, allow=allow, deny=deny, type=1)

    def set_role_permissions(self, guild_id: int, role_id: int, permissions: int) -> None:
        role = self.roles[_sf(guild_id)][_sf(role_id)]
        role["permissions"] = str(permissions)
        self._spawn_dispatch("GUILD_ROLE_UPDATE", {"guild_id": str(guild_id), "role": role})

    def permissions_for(self, channel_id: int, user_id: int) -> int:
        """Effective permissions of ``user_id`` in a guild channel (Discord's algorithm)."""
        channel = self.channels[_sf(channel_id)]
        gid = int(channel["guild_id"])
        guild = self.guilds[gid]
        if str(user_id) == guild["owner_id"]:
            return ALL_PERMISSIONS
        member = self.members[gid].get(_sf(user_id))
        roles = self.roles[gid]
        perms = int(roles[gid]["permissions"])
        member_roles = set(member["roles"]) if member else set()
        for rid in member_roles:
            role = roles.get(int(rid))
            if role:
                perms |= int(role["permissions"])
        if perms & _P["ADMINISTRATOR"]:
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
        if not perms & _P["VIEW_CHANNEL"]:
            return 0
        return perms

    def upload_limit(self, guild_id: int | None) -> int:
        if guild_id is None or _sf(guild_id) not in self.guilds:
            return UPLOAD_LIMITS[0]
        return UPLOAD_LIMITS.get(int(self.guilds[_sf(guild_id)]["premium_tier"]), UPLOAD_LIMITS[0])

    # ------------------------------------------------------------------ CDN

    def _cdn_store(
        self,
        path: str,
        attachment_id: int,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        description: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._cdn[path] = (data, content_type)
        now = int(time.time())
        signed = f"?ex={now + 86400:x}&is={now:x}&hm={secrets.token_hex(32)}&"
        att: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": f"{self.cdn_base}{path}{signed}",
            "proxy_url": f"{self.cdn_base}{path}{signed}",
            "content_type": content_type,
            "flags": 0,
        }
        if description is not None:
            att["description"] = description
        if extra:
            att.update(extra)
        return att

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        channel_id: int | None = None,
        description: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_secs: float | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN and return a Discord attachment object for them.

        Without ``channel_id`` the URL is an ``/ephemeral-attachments/...`` URL, like the ones
        Discord gives slash-command attachment options.
        """
        aid = self.next_id()
        if channel_id is None:
            path = f"/ephemeral-attachments/{self.application_id}/{aid}/{filename}"
        else:
            path = f"/attachments/{channel_id}/{aid}/{filename}"
        extra: dict[str, Any] = {}
        if width is not None:
            extra["width"] = width
        if height is not None:
            extra["height"] = height
        if duration_secs is not None:
            extra["duration_secs"] = duration_secs
        if channel_id is None:
            extra["ephemeral"] = True
        return self._cdn_store(
            path, aid, filename, data, content_type, description=description, extra=extra
        )

    def attachment_bytes(self, url_or_attachment: str | dict[str, Any]) -> bytes:
        """The stored bytes behind an attachment URL (or attachment dict)."""
        url = url_or_attachment["url"] if isinstance(url_or_attachment, dict) else url_or_attachment
        path = url.removeprefix(self.cdn_base).split("?", 1)[0]
        return self._cdn[path][0]

    async def _cdn_handler(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_path=request.path,
            query=dict(request.query),
            json=None,
            files=[],
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            at=time.time(),
            kind="cdn",
            route="GET cdn",
        )
        rule = self._match_fault(request.method, request.path)
        if request.path in self._cdn:
            data, ctype = self._cdn[request.path]
            resp: web.StreamResponse = web.Response(body=data, headers={"Content-Type": ctype})
        else:
            resp = web.Response(status=404, text="Not Found")
        if rule is not None:
            record.injected = True
            self._record(record)  # seen now, even if the answer is held
            resp = await self._apply_fault(rule, request, resp)
            record.status = resp.status
            return resp
        record.status = resp.status
        self._record(record)
        return resp

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: int = 0,
        message: str = "",
        times: int = 1,
        *,
        retry_after: float = 0.05,
        errors: dict[str, Any] | None = None,
        is_global: bool = False,
        after_processing: bool = False,
        drop: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` matching requests with an error.

        ``after_processing``: the request is handled first (a message is created, an edit
        applied), as when Discord answers 5xx or the connection drops after doing the work.
        ``drop``: close the connection instead of answering. ``delay``: hold the answer that
        many seconds first (a status of 0 then gives the normal answer, late: see
        :meth:`hold_next`).

        ``path_regex`` is ``re.search``-ed against the API-relative path (e.g.
        ``r"^/channels/\\d+/messages$"``; CDN paths are matched raw). ``method`` may be ``"*"``.
        A 429 gets the ``retry_after`` JSON body plus ``Retry-After``/``X-RateLimit-*`` and
        ``Via`` headers (discord.py treats a 429 without ``Via`` as a Cloudflare ban), so
        discord.py sleeps ``retry_after`` and retries.
        """
        self._faults.append(
            _FaultRule(
                method=method.upper(),
                pattern=re.compile(path_regex),
                status=status,
                code=code,
                message=message or _default_error_message(status),
                remaining=times,
                retry_after=retry_after,
                errors=errors,
                is_global=is_global,
                after_processing=after_processing,
                drop=drop,
                delay=delay,
            )
        )

    def hold_next(
        self,
        method: str,
        path_regex: str,
        seconds: float,
        *,
        times: int = 1,
        processed: bool = True,
    ) -> None:
        """Hold the answers to the next matching requests ``seconds``.

        ``processed``: the request takes effect at once and only the answer waits (the
        message exists while the client waits); False: nothing happens until the hold ends.
        """
        self.fail_next(
            method, path_regex, 0, times=times, after_processing=processed, delay=seconds
        )

    def _match_fault(self, method: str, path: str) -> _FaultRule | None:
        for rule in self._faults:
            if rule.remaining <= 0:
                continue
            if rule.method not in ("*", method.upper()) or not rule.pattern.search(path):
                continue
            rule.remaining -= 1
            return rule
        return None

    async def _apply_fault(
        self, rule: _FaultRule, request: web.Request, normal: web.StreamResponse | None
    ) -> web.StreamResponse:
        """The answer a matched rule gives (after its delay); `normal` if it has no status."""
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.drop:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if rule.status == 0 and normal is not None:
            return normal
        return self._fault_response(rule)

    def _fault_response(self, rule: _FaultRule) -> web.Response:
        if rule.status == 429:
            body: dict[str, Any] = {
                "message": rule.message,
                "retry_after": rule.retry_after,
                "global": rule.is_global,
            }
            if rule.code:
                body["code"] = rule.code
            headers = {
                "Retry-After": str(max(1, int(rule.retry_after + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                "X-RateLimit-Bucket": "fakebucket" + secrets.token_hex(4),
                "X-RateLimit-Scope": "global" if rule.is_global else "user",
                "Via": "1.1 google",
            }
            if rule.is_global:
                headers["X-RateLimit-Global"] = "true"
            return _json_response(body, 429, headers)
        err: dict[str, Any] = {"message": rule.message, "code": rule.code}
        if rule.errors:
            err["errors"] = rule.errors
        return _json_response(err, rule.status)

    # ------------------------------------------------------------------ waiting

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

    async def wait_connected(
        self,
        timeout: float = 10.0,
        *,
        ready_count: int | None = None,
    ) -> str:
        """Wait until a connected gateway session has IDENTIFYed and was sent READY + GUILD_CREATEs.

        With ``ready_count``, wait until that many READYs were sent in total (e.g. 2 for
        "the restarted bot connected again"). Returns the session id.
        """

        def check() -> str | None:
            if ready_count is not None and self.ready_count < ready_count:
                return None
            for s in reversed(list(self._sessions.values())):
                if s.ready and s.conn is not None and not s.conn.ws.closed:
                    return s.session_id
            return None

        result: str = await self._wait_until(
            check,
            timeout,
            lambda: f"waiting for a gateway session (READYs sent: {self.ready_count})",
        )
        return result

    async def wait_disconnected(self, timeout: float = 10.0) -> None:
        """Wait until no gateway connection is open."""
        await self._wait_until(
            lambda: True if not self._connections else None,
            timeout,
            lambda: f"waiting for {len(self._connections)} gateway connection(s) to close",
        )

    @property
    def unhandled_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "api" and r.route is None]

    def _record(self, record: RecordedRequest) -> None:
        self.requests.append(record)
        self._notify()

    # ------------------------------------------------------------------ gateway

    @property
    def connected_sessions(self) -> list[str]:
        return [s.session_id for s in self._sessions.values() if s.conn is not None and s.ready]

    async def dispatch(self, event: str, data: dict[str, Any], *, intent: int = 0) -> None:
        """Send op 0 DISPATCH ``event`` to every connected, READY session.

        ``intent``: only sessions whose IDENTIFY intents include these bits get it.
        """
        for session in list(self._sessions.values()):
            conn = session.conn
            if conn is None or not session.ready:
                continue
            if intent and not session.intents & intent:
                continue
            async with conn.lock:
                await self._dispatch_locked(session, conn, event, data)

    async def _dispatch_locked(
        self, session: _Session, conn: _Connection, event: str, data: Any
    ) -> None:
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.log.append(payload)
        await conn.send_locked(payload)

    async def disconnect_all(self, code: int = 4000, message: str = "fake: disconnect") -> None:
        """Close every gateway connection; discord.py reconnects to ``resume_gateway_url`` and
        RESUMEs (close codes like 4004/4010-4014 are fatal for it instead)."""
        for conn in list(self._connections):
            await conn.ws.close(code=code, message=message.encode())

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT to every connection."""
        for conn in list(self._connections):
            await conn.send({"op": OP_RECONNECT, "d": None})

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=1.0, compress=False, max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return _json_response({"message": "fake discord: gateway expects a websocket"}, 400)
        await ws.prepare(request)
        compress = request.query.get("compress")
        self.gateway_queries.append(dict(request.query))
        conn = _Connection(ws=ws, compress=compress)
        if compress == "zstd-stream":
            try:
                import zstandard

                conn.zstd = zstandard.ZstdCompressor()
            except ImportError:  # send plain text frames, which discord.py also accepts
                conn.compress = None
        elif compress not in (None, "zlib-stream"):
            await ws.close(code=4000, message=b"unknown compression")
            return ws
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"fake discord supports encoding=json only")
            return ws
        self._connections.add(conn)
        try:
            await conn.send(
                {
                    "op": OP_HELLO,
                    "d": {
                        "heartbeat_interval": self.heartbeat_interval,
                        "_trace": ['["fake-gateway",{"micros":0}]'],
                    },
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    try:
                        payload = json.loads(msg.data)
                    except ValueError:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    self.gateway_received.append(payload)
                    await self._handle_gateway_op(conn, payload)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._connections.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            self._notify()
        return ws

    async def _handle_gateway_op(self, conn: _Connection, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == OP_HEARTBEAT:
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            await self._resume(conn, data or {})
        elif op == OP_REQUEST_MEMBERS:
            await self._request_members(conn, data or {})
        elif op in (OP_PRESENCE, OP_VOICE_STATE):
            pass
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        return isinstance(token, str) and token.removeprefix("Bot ") == self.token

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS and not self.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = _Session(session_id=secrets.token_hex(16), intents=intents, conn=conn)
        conn.session = session
        self._sessions[session.session_id] = session
        ready = {
            "v": API_VERSION,
            "user": {
                **self.bot_user,
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
            },
            "user_settings": {},
            "guilds": [{"id": g["id"], "unavailable": True} for g in self.guilds.values()],
            "presences": [],
            "private_channels": [],
            "relationships": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url.rstrip("/"),
            "auth": {},
            "application": {
                "id": str(self.application_id),
                "flags": APP_FLAGS_ALL_PRIVILEGED if self.privileged_intents else 0,
            },
            "_trace": ['["fake-gateway",{"micros":0}]'],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        async with conn.lock:
            await self._dispatch_locked(session, conn, "READY", ready)
            for gid in list(self.guilds):
                if self._guild_in_shard(gid, data.get("shard")):
                    await self._dispatch_locked(
                        session, conn, "GUILD_CREATE", self._guild_create_payload(gid, intents)
                    )
            session.ready = True
        self.ready_count += 1
        self._notify()

    @staticmethod
    def _guild_in_shard(guild_id: int, shard: Any) -> bool:
        if not shard:
            return True
        shard_id, count = shard
        return bool((guild_id >> 22) % count == shard_id)

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not self._token_ok(data.get("token")):
            await conn.send({"op": OP_INVALID_SESSION, "d": False})
            return
        old = session.conn
        if old is not None and old is not conn:
            with contextlib.suppress(Exception):
                await old.ws.close(code=4000, message=b"session resumed elsewhere")
        session.conn = conn
        conn.session = session
        seq = data.get("seq") or 0
        async with conn.lock:
            for payload in session.log:
                if payload["s"] > seq:
                    await conn.send_locked(payload)
            session.ready = True
            await self._dispatch_locked(session, conn, "RESUMED", {"_trace": ["fake-gateway"]})
        self._notify()

    async def _request_members(self, conn: _Connection, data: dict[str, Any]) -> None:
        session = conn.session
        if session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
            return
        gid = int(data.get("guild_id", 0))
        members = list(self.members.get(gid, {}).values())
        if data.get("user_ids"):
            wanted = {str(u) for u in data["user_ids"]}
            members = [m for m in members if m["user"]["id"] in wanted]
        elif data.get("query"):
            q = str(data["query"]).lower()
            members = [m for m in members if m["user"]["username"].lower().startswith(q)]
        if data.get("limit"):
            members = members[: int(data["limit"])]
        chunk: dict[str, Any] = {
            "guild_id": str(gid),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        async with conn.lock:
            await self._dispatch_locked(session, conn, "GUILD_MEMBERS_CHUNK", chunk)

    def _guild_create_payload(self, guild_id: int, intents: int) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        all_members = list(self.members[guild_id].values())
        if intents & INTENT_GUILD_MEMBERS:
            members = all_members
        else:  # without GUILD_MEMBERS only the bot's own member is sent
            members = [m for m in all_members if m["user"]["id"] == str(self.bot_user_id)]
        return {
            **guild,
            "roles": list(self.roles[guild_id].values()),
            "channels": [
                {k: v for k, v in c.items() if k != "guild_id"}
                for c in self.channels.values()
                if c.get("guild_id") == str(guild_id)
            ],
            "members": members,
            "member_count": len(all_members),
            "large": len(all_members) >= 250,
            "unavailable": False,
            "lazy": True,
            "voice_states": [],
            "presences": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "application_command_counts": {},
        }

    # ------------------------------------------------------------------ interactions (payloads)

    def _member_payload(self, guild_id: int, user_id: int, channel_id: int) -> dict[str, Any]:
        if user_id not in self.members[guild_id]:
            self.add_member(guild_id, user_id)
        member = dict(self.members[guild_id][user_id])
        member["permissions"] = str(self.permissions_for(channel_id, user_id))
        return member

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        if guild_id is not None:
            for c in self.registered_commands:
                if c["name"] == name and c.get("guild_id") == str(guild_id) and c["type"] == 1:
                    return c
        for c in self.registered_commands:
            if c["name"] == name and c.get("guild_id") is None and c["type"] == 1:
                return c
        return None

    def _typed_option(
        self,
        name: str,
        value: Any,
        definition: dict[str, Any] | None,
        resolved: dict[str, dict[str, Any]],
        guild_id: int,
        channel_id: int,
    ) -> dict[str, Any]:
        if definition is not None:
            otype = int(definition["type"])
        elif isinstance(value, bool):
            otype = 5
        elif isinstance(value, int):
            otype = 4
        elif isinstance(value, float):
            otype = 10
        elif isinstance(value, dict) and "filename" in value:
            otype = 11
        else:
            otype = 3
        if definition is not None and definition.get("choices"):
            allowed = [c["value"] for c in definition["choices"]]
            if value not in allowed:
                raise ValueError(f"option {name!r}: {value!r} is not one of the choices {allowed}")
        if otype == 11:
            if not isinstance(value, dict):
                raise ValueError(
                    f"option {name!r} is an attachment option: pass an attachment dict"
                )
            resolved.setdefault("attachments", {})[value["id"]] = value
            value = value["id"]
        elif otype in (6, 9) and int(value) in self.users:
            uid = int(value)
            resolved.setdefault("users", {})[str(uid)] = self.users[uid]
            if uid in self.members[guild_id]:
                m = {k: v for k, v in self._member_payload(guild_id, uid, channel_id).items()}
                m.pop("user", None)
                resolved.setdefault("members", {})[str(uid)] = m
            value = str(uid)
        elif otype in (8, 9) and int(value) in self.roles[guild_id]:
            resolved.setdefault("roles", {})[str(value)] = self.roles[guild_id][int(value)]
            value = str(value)
        elif otype == 7:
            ch = self.channels[int(value)]
            resolved.setdefault("channels", {})[str(value)] = {
                "id": ch["id"],
                "name": ch["name"],
                "type": ch["type"],
                "parent_id": ch.get("parent_id"),
                "permissions": str(self.permissions_for(int(value), self.bot_user_id)),
                "guild_id": ch["guild_id"],
            }
            value = str(value)
        if otype in (6, 7, 8, 9):
            value = str(value)
        return {"name": name, "type": otype, "value": value}

    def _new_interaction_token(self) -> str:
        return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)

    def _interaction_common(
        self, itype: int, guild_id: int, channel_id: int, user_id: int, size_limit: int
    ) -> tuple[_Interaction, dict[str, Any]]:
        gid, cid, uid = _sf(guild_id), _sf(channel_id), _sf(user_id)
        inter = _Interaction(
            id=self.next_id(),
            token=self._new_interaction_token(),
            type=itype,
            guild_id=gid,
            channel_id=cid,
            user_id=uid,
            size_limit=size_limit,
        )
        self._interactions_by_token[inter.token] = inter
        self._interactions_by_id[inter.id] = inter
        guild = self.guilds[gid]
        channel = dict(self.channels[cid])
        channel["permissions"] = str(self.permissions_for(cid, uid))
        payload: dict[str, Any] = {
            "id": str(inter.id),
            "application_id": str(self.application_id),
            "type": itype,
            "guild_id": str(gid),
            "guild": {"id": str(gid), "locale": guild["preferred_locale"], "features": []},
            "channel_id": str(cid),
            "channel": channel,
            "member": self._member_payload(gid, uid, cid),
            "token": inter.token,
            "version": 1,
            "app_permissions": str(self.permissions_for(cid, self.bot_user_id)),
            "locale": "en-US",
            "guild_locale": guild["preferred_locale"],
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(gid)},
            "context": 0,
            "attachment_size_limit": size_limit,
        }
        return inter, payload

    def slash_interaction(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        command_name: str,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
        attachments: dict[str, dict[str, Any]] | None = None,
        attachment_size_limit: int = 10 * 1024 * 1024,
    ) -> dict[str, Any]:
        """Build an INTERACTION_CREATE payload (type 2) for a chat-input command.

        ``subcommand`` may be ``"sub"`` or ``"group sub"``. Option types come from the synced
        command definition when there is one (choices and required options are checked, raising
        ``ValueError``), else they are inferred (bool/int/float/str, attachment dicts → 11).
        ``attachments`` maps attachment option names to dicts from :meth:`add_attachment`.
        Unknown ``user_id``s are added to the guild as members.
        """
        gid = _sf(guild_id)
        inter, payload = self._interaction_common(
            2, gid, channel_id, user_id, attachment_size_limit
        )
        inter.command_name = command_name
        cmd = self._find_command(command_name, gid)
        definitions: list[dict[str, Any]] | None = cmd.get("options", []) if cmd else None
        path = subcommand.split() if subcommand else []
        for part in path:
            if definitions is None:
                break
            sub = next((o for o in definitions if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise ValueError(f"command {command_name!r} has no subcommand {part!r}")
            definitions = sub.get("options", [])
        all_options: dict[str, Any] = dict(options or {})
        all_options.update(attachments or {})
        resolved: dict[str, dict[str, Any]] = {}
        typed: list[dict[str, Any]] = []
        for name, value in all_options.items():
            definition = None
            if definitions is not None:
                definition = next((o for o in definitions if o["name"] == name), None)
                if definition is None:
                    raise ValueError(
                        f"command {command_name!r} {subcommand!r} has no option {name!r}"
                    )
            typed.append(self._typed_option(name, value, definition, resolved, gid, channel_id))
        if definitions is not None:
            missing = [
                o["name"] for o in definitions if o.get("required") and o["name"] not in all_options
            ]
            if missing:
                raise ValueError(f"missing required options {missing} for {command_name!r}")
        nested: list[dict[str, Any]] = typed
        for i, part in reversed(list(enumerate(path))):
            nested = [{"type": 1 if i == len(path) - 1 else 2, "name": part, "options": nested}]
        if cmd is not None:
            command_id = int(cmd["id"])
        else:
            command_id = self._unsynced_command_ids.setdefault(command_name, self.next_id())
        data: dict[str, Any] = {
            "id": str(command_id),
            "name": command_name,
            "type": 1,
            "options": nested,
        }
        if resolved:
            data["resolved"] = resolved
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload["data"] = data
        return payload

    def component_interaction(
        self,
        *,
        message_id: int,
        custom_id: str,
        guild_id: int,
        channel_id: int,
        user_id: int,
        component_type: int = 2,
        values: list[str] | None = None,
        attachment_size_limit: int = 10 * 1024 * 1024,
    ) -> dict[str, Any]:
        """Build an INTERACTION_CREATE payload (type 3) for a click on a message component."""
        message = self._all_messages.get(_sf(message_id))
        if message is None:
            raise KeyError(f"unknown message {message_id}")
        inter, payload = self._interaction_common(
            3, guild_id, channel_id, user_id, attachment_size_limit
        )
        inter.source_message_id = _sf(message_id)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        payload["data"] = data
        payload["message"] = message
        return payload

    # ------------------------------------------------------------------ messages

    def _resolve_mentions(
        self, content: str, allowed: dict[str, Any] | None, guild_id: int | None, can_everyone: bool
    ) -> tuple[list[dict[str, Any]], list[str], bool]:
        if allowed is None:
            parse = {"users", "roles", "everyone"}
            users_ok: set[str] = set()
            roles_ok: set[str] = set()
        else:
            parse = set(allowed.get("parse") or [])
            users_ok = {str(u) for u in allowed.get("users") or []}
            roles_ok = {str(r) for r in allowed.get("roles") or []}
        mentions: list[dict[str, Any]] = []
        seen: set[str] = set()
        for uid in re.findall(r"<@!?(\d+)>", content):
            if uid in seen or not ("users" in parse or uid in users_ok):
                continue
            seen.add(uid)
            user = self.users.get(int(uid))
            if user is not None:
                mentions.append(user)
        roles: list[str] = []
        for rid in re.findall(r"<@&(\d+)>", content):
            if rid in roles or not ("roles" in parse or rid in roles_ok):
                continue
            if guild_id is not None and int(rid) in self.roles.get(guild_id, {}):
                roles.append(rid)
        everyone = (
            "everyone" in parse and can_everyone and ("@everyone" in content or "@here" in content)
        )
        return mentions, roles, everyone

    def _fix_components(
        self, components: list[Any], attachments: list[dict[str, Any]]
    ) -> list[Any]:
        counter = [0]
        by_name = {a["filename"]: a for a in attachments}

        def walk(node: Any) -> Any:
            if isinstance(node, list):
                return [walk(n) for n in node]
            if not isinstance(node, dict):
                return node
            out = {k: walk(v) for k, v in node.items()}
            if "type" in out and isinstance(out["type"], int):
                counter[0] += 1
                out.setdefault("id", counter[0])
            url = out.get("url")
            if isinstance(url, str) and url.startswith("attachment://"):
                att = by_name.get(url.removeprefix("attachment://"))
                if att is not None:
                    out.update(
                        url=att["url"],
                        proxy_url=att["proxy_url"],
                        content_type=att.get("content_type"),
                        attachment_id=att["id"],
                        width=None,
                        height=None,
                        flags=0,
                    )
            return out

        return walk(components)

    def _make_attachments(
        self,
        body: dict[str, Any],
        uploads: list[_Upload],
        channel_id: int,
        existing: list[dict[str, Any]] | None,
        size_limit: int,
    ) -> list[dict[str, Any]]:
        for up in uploads:
            if len(up.data) > size_limit:
                raise _HTTPError(413, 40005, "Request entity too large")
        by_index: dict[int, _Upload] = {}
        for up in uploads:
            m = re.fullmatch(r"files\[(\d+)\]", up.field) or re.fullmatch(r"file(\d*)", up.field)
            idx = int(m.group(1) or 0) if m else len(by_index)
            by_index[idx] = up
        result: list[dict[str, Any]] = []
        existing_by_id = {a["id"]: a for a in existing or []}
        specs = body.get("attachments")
        used: set[int] = set()
        if specs is None:
            result.extend(existing or [])
            specs = [{"id": i} for i in sorted(by_index)]
        for spec in specs:
            sid = str(spec.get("id"))
            if sid in existing_by_id:
                result.append(existing_by_id[sid])
                continue
            try:
                idx = int(sid)
            except ValueError:
                raise _HTTPError(400, 50035, "Invalid Form Body") from None
            up_or_none = by_index.get(idx)
            if up_or_none is None:
                if idx in existing_by_id:
                    continue
                raise _HTTPError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "attachments": {
                            "_errors": [
                                {
                                    "code": "ATTACHMENT_NOT_FOUND",
                                    "message": f"attachment {sid} not found",
                                }
                            ]
                        }
                    },
                )
            used.add(idx)
            filename = spec.get("filename") or up_or_none.filename
            ctype = up_or_none.content_type
            if not ctype or ctype == "application/octet-stream":
                ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            aid = self.next_id()
            result.append(
                self._cdn_store(
                    f"/attachments/{channel_id}/{aid}/{filename}",
                    aid,
                    filename,
                    up_or_none.data,
                    ctype,
                    description=spec.get("description"),
                    extra={"title": spec["title"]} if spec.get("title") else None,
                )
            )
        return result

    def _build_message(
        self,
        *,
        channel_id: int,
        body: dict[str, Any],
        uploads: list[_Upload],
        size_limit: int,
        mtype: int = 0,
        interaction: _Interaction | None = None,
        extra_flags: int = 0,
    ) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        guild_id = int(channel["guild_id"]) if channel and channel.get("guild_id") else None
        content = body.get("content") or ""
        if len(content) > 2000:
            raise _HTTPError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "content": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_MAX_LENGTH",
                                "message": "Must be 2000 or fewer in length.",
                            }
                        ]
                    }
                },
            )
        mid = self.next_id()
        attachments = self._make_attachments(body, uploads, channel_id, None, size_limit)
        can_everyone = True
        if interaction is None and channel is not None and guild_id is not None:
            can_everyone = bool(
                self.permissions_for(channel_id, self.bot_user_id) & _P["MENTION_EVERYONE"]
            )
        mentions, mention_roles, everyone = self._resolve_mentions(
            content, body.get("allowed_mentions"), guild_id, can_everyone
        )
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "type": mtype,
            "content": content,
            "author": dict(self.bot_user),
            "attachments": attachments,
            "embeds": [{"type": "rich", **e} for e in body.get("embeds") or []],
            "components": self._fix_components(body.get("components") or [], attachments),
            "mentions": mentions,
            "mention_roles": mention_roles,
            "mention_everyone": everyone,
            "pinned": False,
            "tts": bool(body.get("tts", False)),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "flags": int(body.get("flags") or 0) | extra_flags,
        }
        if guild_id is not None:
            msg["guild_id"] = str(guild_id)
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        if body.get("sticker_ids"):
            msg["sticker_items"] = []
        if body.get("poll"):
            msg["poll"] = body["poll"]
        ref = body.get("message_reference")
        if ref:
            ref_id = int(ref["message_id"])
            referenced = self._all_messages.get(ref_id)
            if referenced is None and ref.get("fail_if_not_exists", True):
                raise _HTTPError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "message_reference": {
                            "_errors": [
                                {
                                    "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                    "message": "Unknown message",
                                }
                            ]
                        }
                    },
                )
            msg["type"] = 19 if mtype == 0 else mtype
            msg["message_reference"] = {
                "type": ref.get("type", 0),
                "message_id": str(ref_id),
                "channel_id": str(ref.get("channel_id", channel_id)),
                **({"guild_id": str(guild_id)} if guild_id else {}),
            }
            msg["referenced_message"] = referenced
            replied = (body.get("allowed_mentions") or {}).get("replied_user", True)
            if referenced is not None and replied and referenced["author"] not in mentions:
                msg["mentions"].append(referenced["author"])
        if interaction is not None:
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
            meta: dict[str, Any] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": self.users[interaction.user_id],
                "authorizing_integration_owners": {"0": str(interaction.guild_id)},
            }
            if interaction.command_name:
                meta["name"] = interaction.command_name
                meta["command_type"] = 1
            if interaction.source_message_id is not None:
                meta["interacted_message_id"] = str(interaction.source_message_id)
            if interaction.original_message_id is not None:
                meta["original_response_message_id"] = str(interaction.original_message_id)
            msg["interaction_metadata"] = meta
        return msg

    def _store_message(self, msg: dict[str, Any]) -> None:
        mid = int(msg["id"])
        self._all_messages[mid] = msg
        if not int(msg.get("flags", 0)) & MESSAGE_FLAG_EPHEMERAL:
            cid = int(msg["channel_id"])
            self.messages.setdefault(cid, []).append(msg)
            if cid in self.channels:
                self.channels[cid]["last_message_id"] = msg["id"]
            self._echo("MESSAGE_CREATE", msg)

    def _echo(self, event: str, msg: dict[str, Any]) -> None:
        if not self.echo_message_events:
            return
        data = dict(msg)
        gid = msg.get("guild_id")
        if gid and int(gid) in self.members:
            member = self.members[int(gid)].get(int(msg["author"]["id"]))
            if member is not None:
                data["member"] = {k: v for k, v in member.items() if k != "user"}
        self._spawn_dispatch(event, data, intent=INTENT_GUILD_MESSAGES)

    def _edit_message(
        self,
        msg: dict[str, Any],
        body: dict[str, Any],
        uploads: list[_Upload],
        size_limit: int,
    ) -> dict[str, Any]:
        if "content" in body:
            content = body["content"] or ""
            if len(content) > 2000:
                raise _HTTPError(400, 50035, "Invalid Form Body")
            msg["content"] = content
        if "embeds" in body:
            msg["embeds"] = [{"type": "rich", **e} for e in body["embeds"] or []]
        if "attachments" in body or uploads:
            msg["attachments"] = self._make_attachments(
                body, uploads, int(msg["channel_id"]), msg["attachments"], size_limit
            )
        if "components" in body:
            msg["components"] = self._fix_components(body["components"] or [], msg["attachments"])
        if "flags" in body and body["flags"] is not None:
            keep = int(msg["flags"]) & (MESSAGE_FLAG_EPHEMERAL | (1 << 15))
            msg["flags"] = int(body["flags"]) | keep
        msg["flags"] = int(msg["flags"]) & ~MESSAGE_FLAG_LOADING
        if "content" in body or "allowed_mentions" in body:
            gid = int(msg["guild_id"]) if msg.get("guild_id") else None
            mentions, roles, everyone = self._resolve_mentions(
                msg["content"], body.get("allowed_mentions"), gid, True
            )
            msg["mentions"], msg["mention_roles"], msg["mention_everyone"] = (
                mentions,
                roles,
                everyone,
            )
        msg["edited_timestamp"] = _now_iso()
        if not int(msg["flags"]) & MESSAGE_FLAG_EPHEMERAL:
            self._echo("MESSAGE_UPDATE", msg)
        return msg

    def _delete_message(self, msg: dict[str, Any]) -> None:
        mid = int(msg["id"])
        self._all_messages.pop(mid, None)
        cid = int(msg["channel_id"])
        lst = self.messages.get(cid, [])
        if msg in lst:
            lst.remove(msg)
            data = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if msg.get("guild_id"):
                data["guild_id"] = msg["guild_id"]
            if self.echo_message_events:
                self._spawn_dispatch("MESSAGE_DELETE", data, intent=INTENT_GUILD_MESSAGES)

    def bot_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Messages the bot posted via ``POST /channels/{id}/messages`` (no interaction replies)."""
        return [
            m for m in self.messages.get(_sf(channel_id), []) if "interaction_metadata" not in m
        ]

    async def user_message(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user posts a message: stored and dispatched as MESSAGE_CREATE (content blanked for
        sessions without the MESSAGE_CONTENT intent unless the bot is mentioned)."""
        cid, uid = _sf(channel_id), _sf(user_id)
        channel = self.channels[cid]
        gid = int(channel["guild_id"])
        if uid not in self.members[gid]:
            self.add_member(gid, uid)
        mentions, roles, everyone = self._resolve_mentions(content, None, gid, True)
        msg: dict[str, Any] = {
            "id": str(self.next_id()),
            "channel_id": str(cid),
            "guild_id": str(gid),
            "type": 0,
            "content": content,
            "author": self.users[uid],
            "attachments": attachments or [],
            "embeds": [],
            "components": [],
            "mentions": mentions,
            "mention_roles": roles,
            "mention_everyone": everyone,
            "pinned": False,
            "tts": False,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "flags": 0,
        }
        self._all_messages[int(msg["id"])] = msg
        self.messages.setdefault(cid, []).append(msg)
        mentioned = any(m["id"] == str(self.bot_user_id) for m in mentions)
        for session in list(self._sessions.values()):
            conn = session.conn
            if conn is None or not session.ready or not session.intents & INTENT_GUILD_MESSAGES:
                continue
            data = dict(msg)
            data["member"] = {k: v for k, v in self.members[gid][uid].items() if k != "user"}
            if not session.intents & INTENT_MESSAGE_CONTENT and not mentioned:
                data.update(content="", embeds=[], attachments=[], components=[])
            async with conn.lock:
                await self._dispatch_locked(session, conn, "MESSAGE_CREATE", data)
        return msg

    # ------------------------------------------------------------------ REST plumbing

    def _setup_routes(self) -> None:
        r = self._route
        r("GET", "/users/@me", self._get_me)
        r("GET", "/users/{user_id}", self._get_user)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        r("GET", "/gateway", self._get_gateway, auth=False)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/applications/{app_id}/commands", self._get_commands)
        r("PUT", "/applications/{app_id}/commands", self._put_commands)
        r("POST", "/applications/{app_id}/commands", self._post_command)
        r("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands)
        r("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        r("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self._post_command)
        r("GET", "/guilds/{guild_id}", self._get_guild)
        r("GET", "/guilds/{guild_id}/channels", self._get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", self._get_guild_roles)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self._get_guild_member)
        r("GET", "/channels/{channel_id}", self._get_channel)
        r("POST", "/channels/{channel_id}/typing", self._typing)
        r("GET", "/channels/{channel_id}/messages", self._get_messages)
        r("POST", "/channels/{channel_id}/messages", self._post_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message_route)
        r("POST", "/interactions/{interaction_id}/{token}/callback", self._callback, auth=False)
        r("POST", "/webhooks/{app_id}/{token}", self._followup, auth=False)
        r("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._wh_get, auth=False)
        r("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._wh_patch, auth=False)
        r("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._wh_delete, auth=False)

    def _route(self, method: str, template: str, handler: _Handler, *, auth: bool = True) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append(
            (method, re.compile(f"^{pattern}$"), f"{method} {template}", handler, auth)
        )

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_Upload]]:
        ctype = request.content_type
        uploads: list[_Upload] = []
        if ctype.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):  # nested multipart: ignore
                    continue
                data = bytes(await part.read(decode=True))
                if part.name == "payload_json":
                    body = json.loads(data or b"null")
                elif part.filename is not None or (part.name or "").startswith("file"):
                    uploads.append(
                        _Upload(
                            field=part.name or "",
                            filename=part.filename or part.name or "file",
                            content_type=part.headers.get(
                                "Content-Type", "application/octet-stream"
                            ),
                            data=data,
                        )
                    )
            return body, uploads
        raw = await request.read()
        if not raw:
            return None, uploads
        if ctype == "application/json":
            try:
                return json.loads(raw), uploads
            except ValueError:
                raise _HTTPError(400, 50109, "The request body contains invalid JSON.") from None
        return raw.decode(errors="replace"), uploads

    async def _api_handler(self, request: web.Request) -> web.StreamResponse:
        m = re.match(r"^/api(?:/v\d+)?(/.*)?$", request.path)
        path = (m.group(1) if m else None) or "/"
        record = RecordedRequest(
            method=request.method,
            path=path,
            raw_path=request.path,
            query=dict(request.query),
            json=None,
            files=[],
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            at=time.time(),
        )
        try:
            body, uploads = await self._read_body(request)
            record.json = body
            record.files = [(u.filename, len(u.data), u.content_type) for u in uploads]
            record.file_data = [u.data for u in uploads]
            matched = None
            for method, pattern, name, handler, auth in self._routes:
                pm = pattern.match(path)
                if pm and method == request.method:
                    matched = (name, handler, auth, pm.groupdict())
                    break
            if matched is not None:
                record.route = matched[0]
            rule = self._match_fault(request.method, path)
            if rule is not None and not rule.after_processing and rule.status == 0:
                await asyncio.sleep(rule.delay)  # held before it takes effect
                rule = None
            if rule is not None and not rule.after_processing:
                record.injected = True
                resp: web.StreamResponse = await self._apply_fault(rule, request, None)
            elif matched is None:
                resp = _json_response(
                    {
                        "message": f"fake discord: no route for {request.method} {path}",
                        "code": 0,
                    },
                    404,
                )
            else:
                name, handler, auth, params = matched
                if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise _HTTPError(401, 0, "401: Unauthorized")
                resp = await handler(_Ctx(request, params, body, uploads, record))
            if rule is not None and rule.after_processing:
                record.injected = True
                processed = resp
                if isinstance(processed, web.Response) and processed.body is not None:
                    with contextlib.suppress(ValueError, TypeError):
                        record.response = json.loads(processed.body)  # type: ignore[arg-type]
                self._record(record)  # the work is done and visible before the answer
                resp = await self._apply_fault(rule, request, processed)
                record.status = resp.status
                return resp
        except _HTTPError as exc:
            err: dict[str, Any] = {"message": exc.message, "code": exc.code}
            if exc.errors:
                err["errors"] = exc.errors
            resp = _json_response(err, exc.status)
        except Exception as exc:  # a bug in the fake (or a payload it can't handle)
            # Answer 400, not 500: discord.py retries 5xx with multi-second sleeps.
            record.error = traceback.format_exc()
            self.errors.append(record.error)
            resp = _json_response(
                {"message": f"fake discord internal error: {exc!r}", "code": 0}, 400
            )
        record.status = resp.status
        if (
            isinstance(resp, web.Response)
            and resp.body is not None
            and resp.content_type == "application/json"
        ):
            body_bytes = resp.body
            if isinstance(body_bytes, bytes):
                record.response = json.loads(body_bytes)
        self._record(record)
        return resp

    # ------------------------------------------------------------------ REST handlers

    def _check_app(self, ctx: _Ctx) -> None:
        if ctx.params.get("app_id") != str(self.application_id):
            raise _HTTPError(404, 10002, "Unknown Application")

    def _channel(self, ctx: _Ctx) -> dict[str, Any]:
        try:
            cid = int(ctx.params["channel_id"])
        except ValueError:
            raise _HTTPError(404, 10003, "Unknown Channel") from None
        channel = self.channels.get(cid)
        if channel is None:
            raise _HTTPError(404, 10003, "Unknown Channel")
        return channel

    def _need(self, channel: dict[str, Any], *perms: str) -> None:
        have = self.permissions_for(int(channel["id"]), self.bot_user_id)
        if not have & _P["VIEW_CHANNEL"]:
            raise _HTTPError(403, 50001, "Missing Access")
        for p in perms:
            if not have & _P[p]:
                raise _HTTPError(403, 50013, "Missing Permissions")

    async def _get_me(self, ctx: _Ctx) -> web.StreamResponse:
        return _json_response(
            {
                **self.bot_user,
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
            }
        )

    async def _get_user(self, ctx: _Ctx) -> web.StreamResponse:
        user = (
            self.users.get(int(ctx.params["user_id"])) if ctx.params["user_id"].isdigit() else None
        )
        if user is None:
            raise _HTTPError(404, 10013, "Unknown User")
        return _json_response(user)

    async def _get_application(self, ctx: _Ctx) -> web.StreamResponse:
        owner = next((u for uid, u in self.users.items() if uid != self.bot_user_id), self.bot_user)
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "fake application",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": APP_FLAGS_ALL_PRIVILEGED if self.privileged_intents else 0,
                "owner": owner,
                "team": None,
                "bot": self.bot_user,
                "rpc_origins": [],
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(self.guilds),
                "interactions_endpoint_url": None,
                "integration_types_config": {"0": {}},
            }
        )

    async def _get_gateway(self, ctx: _Ctx) -> web.StreamResponse:
        return _json_response({"url": self.gateway_url.rstrip("/")})

    async def _get_gateway_bot(self, ctx: _Ctx) -> web.StreamResponse:
        return _json_response(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14400000,
                    "max_concurrency": 1,
                },
            }
        )

    def _commands_scope(self, ctx: _Ctx) -> str | None:
        self._check_app(ctx)
        gid = ctx.params.get("guild_id")
        if gid is not None and (not gid.isdigit() or int(gid) not in self.guilds):
            raise _HTTPError(404, 10004, "Unknown Guild")
        return gid

    def _normalize_command(
        self, data: dict[str, Any], guild_id: str | None, existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if not isinstance(data, dict) or not data.get("name"):
            raise _HTTPError(400, 50035, "Invalid Form Body")
        ctype = int(data.get("type", 1))
        old = next((c for c in existing if c["name"] == data["name"] and c["type"] == ctype), None)
        cmd = {
            "default_member_permissions": None,
            "nsfw": False,
            "description": "",
            "contexts": None,
            "integration_types": [0],
            "options": [],
            **data,
            "type": ctype,
            "id": old["id"] if old else str(self.next_id()),
            "application_id": str(self.application_id),
            "version": str(self.next_id()),
        }
        if guild_id is not None:
            cmd["guild_id"] = guild_id
        else:
            cmd.pop("guild_id", None)
        return cmd

    async def _get_commands(self, ctx: _Ctx) -> web.StreamResponse:
        gid = self._commands_scope(ctx)
        return _json_response([c for c in self.registered_commands if c.get("guild_id") == gid])

    async def _put_commands(self, ctx: _Ctx) -> web.StreamResponse:
        gid = self._commands_scope(ctx)
        if not isinstance(ctx.json, list):
            raise _HTTPError(400, 50035, "Invalid Form Body")
        existing = [c for c in self.registered_commands if c.get("guild_id") == gid]
        new = [self._normalize_command(d, gid, existing) for d in ctx.json]
        self.registered_commands = [
            c for c in self.registered_commands if c.get("guild_id") != gid
        ] + new
        return _json_response(new)

    async def _post_command(self, ctx: _Ctx) -> web.StreamResponse:
        gid = self._commands_scope(ctx)
        existing = [c for c in self.registered_commands if c.get("guild_id") == gid]
        cmd = self._normalize_command(ctx.json, gid, existing)
        self.registered_commands = [c for c in self.registered_commands if c["id"] != cmd["id"]]
        self.registered_commands.append(cmd)
        return _json_response(cmd, 200 if any(c["id"] == cmd["id"] for c in existing) else 201)

    def _guild(self, ctx: _Ctx) -> int:
        gid = ctx.params["guild_id"]
        if not gid.isdigit() or int(gid) not in self.guilds:
            raise _HTTPError(404, 10004, "Unknown Guild")
        return int(gid)

    async def _get_guild(self, ctx: _Ctx) -> web.StreamResponse:
        gid = self._guild(ctx)
        g = {k: v for k, v in self.guilds[gid].items() if k != "joined_at"}
        g["roles"] = list(self.roles[gid].values())
        return _json_response(g)

    async def _get_guild_channels(self, ctx: _Ctx) -> web.StreamResponse:
        gid = self._guild(ctx)
        return _json_response([c for c in self.channels.values() if c.get("guild_id") == str(gid)])

    async def _get_guild_roles(self, ctx: _Ctx) -> web.StreamResponse:
        return _json_response(list(self.roles[self._guild(ctx)].values()))

    async def _get_guild_member(self, ctx: _Ctx) -> web.StreamResponse:
        gid = self._guild(ctx)
        uid = ctx.params["user_id"]
        member = self.members[gid].get(int(uid)) if uid.isdigit() else None
        if member is None:
            raise _HTTPError(404, 10007, "Unknown Member")
        return _json_response(member)

    async def _get_channel(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel)
        return _json_response(channel)

    async def _typing(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel, "SEND_MESSAGES")
        return web.Response(status=204)

    def _message_in(self, channel: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        mid = ctx.params["message_id"]
        msg = self._all_messages.get(int(mid)) if mid.isdigit() else None
        if (
            msg is None
            or msg["channel_id"] != channel["id"]
            or msg not in self.messages.get(int(channel["id"]), [])
        ):
            raise _HTTPError(404, 10008, "Unknown Message")
        return msg

    async def _get_messages(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel, "READ_MESSAGE_HISTORY")
        limit = int(ctx.request.query.get("limit", 50))
        msgs = list(reversed(self.messages.get(int(channel["id"]), [])))
        q = ctx.request.query
        if "before" in q:
            msgs = [m for m in msgs if int(m["id"]) < int(q["before"])]
        if "after" in q:
            msgs = [m for m in msgs if int(m["id"]) > int(q["after"])]
        return _json_response([_without_nonce(m) for m in msgs[:limit]])

    async def _post_message(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        body = ctx.json if isinstance(ctx.json, dict) else {}
        self._need(channel, "SEND_MESSAGES")
        if ctx.uploads:
            self._need(channel, "ATTACH_FILES")
        if not (
            body.get("content")
            or body.get("embeds")
            or ctx.uploads
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise _HTTPError(400, 50006, "Cannot send an empty message")
        repeat = self._nonce_repeat(channel, body)
        if repeat is not None:
            return _json_response(repeat)
        gid = int(channel["guild_id"]) if channel.get("guild_id") else None
        msg = self._build_message(
            channel_id=int(channel["id"]),
            body=body,
            uploads=ctx.uploads,
            size_limit=self.upload_limit(gid),
        )
        self._store_message(msg)
        return _json_response(msg)

    def _nonce_repeat(self, channel: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
        """Discord's de-duplication: with ``enforce_nonce``, a nonce the same author used in
        this channel within :attr:`nonce_window` seconds returns that message again."""
        nonce = body.get("nonce")
        if nonce is None or not body.get("enforce_nonce"):
            return None
        if len(str(nonce)) > 25:
            raise _HTTPError(400, 50035, "Invalid Form Body (nonce longer than 25)")
        now = time.time()
        for msg in reversed(self.messages.get(int(channel["id"]), [])):
            if (
                str(msg.get("nonce")) == str(nonce)
                and msg["author"]["id"] == str(self.bot_user_id)
                and now - _snowflake_time(msg["id"]) <= self.nonce_window
            ):
                self.nonce_repeats += 1
                return msg
        return None

    async def _get_message(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel, "READ_MESSAGE_HISTORY")
        return _json_response(_without_nonce(self._message_in(channel, ctx)))

    async def _patch_message(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel)
        msg = self._message_in(channel, ctx)
        body = ctx.json if isinstance(ctx.json, dict) else {}
        if msg["author"]["id"] != str(self.bot_user_id):
            if set(body) - {"flags"}:
                raise _HTTPError(403, 50005, "Cannot edit a message authored by another user")
            self._need(channel, "MANAGE_MESSAGES")
        if ctx.uploads:
            self._need(channel, "ATTACH_FILES")
        gid = int(channel["guild_id"]) if channel.get("guild_id") else None
        return _json_response(self._edit_message(msg, body, ctx.uploads, self.upload_limit(gid)))

    async def _delete_message_route(self, ctx: _Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel)
        msg = self._message_in(channel, ctx)
        if msg["author"]["id"] != str(self.bot_user_id):
            self._need(channel, "MANAGE_MESSAGES")
        self._delete_message(msg)
        return web.Response(status=204)

    # interactions -------------------------------------------------------

    def _record_interaction(self, token: str, entry: dict[str, Any]) -> None:
        self.interaction_responses.setdefault(token, []).append(entry)

    async def _callback(self, ctx: _Ctx) -> web.StreamResponse:
        iid = ctx.params["interaction_id"]
        inter = self._interactions_by_id.get(int(iid)) if iid.isdigit() else None
        if inter is None or inter.token != ctx.params["token"]:
            raise _HTTPError(404, 10062, "Unknown interaction")
        if inter.callback_type is not None:
            raise _HTTPError(400, 40060, "Interaction has already been acknowledged.")
        body = ctx.json if isinstance(ctx.json, dict) else None
        if body is None or "type" not in body:
            raise _HTTPError(400, 50035, "Invalid Form Body")
        ctype = int(body["type"])
        data = body.get("data") or {}
        valid = {2: {4, 5, 8, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}.get(
            inter.type, set()
        )
        if ctype not in valid:
            raise _HTTPError(400, 40043, f"Interaction callback type {ctype} is not valid here")
        message: dict[str, Any] | None = None
        mtype = 20 if inter.type == 2 else 0
        if ctype == 4:
            if not (
                data.get("content")
                or data.get("embeds")
                or ctx.uploads
                or data.get("components")
                or data.get("poll")
            ):
                raise _HTTPError(400, 50006, "Cannot send an empty message")
            message = self._build_message(
                channel_id=inter.channel_id,
                body=data,
                uploads=ctx.uploads,
                size_limit=inter.size_limit,
                mtype=mtype,
                interaction=inter,
            )
            inter.original_message_id = int(message["id"])
            self._store_message(message)
        elif ctype == 5:
            flags = MESSAGE_FLAG_LOADING | (int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            message = self._build_message(
                channel_id=inter.channel_id,
                body={"content": ""},
                uploads=[],
                size_limit=inter.size_limit,
                mtype=mtype,
                interaction=inter,
                extra_flags=flags,
            )
            inter.original_message_id = int(message["id"])
            self._store_message(message)
        elif ctype in (6, 7):
            assert inter.source_message_id is not None
            inter.original_message_id = inter.source_message_id
            if ctype == 7:
                src = self._all_messages[inter.source_message_id]
                message = self._edit_message(src, data, ctx.uploads, inter.size_limit)
        inter.callback_type = ctype
        self._record_interaction(
            inter.token,
            {
                "kind": "callback",
                "type": ctype,
                "body": body,
                "files": ctx.record.files,
                "message": message,
                "at": ctx.record.at,
            },
        )
        with_response = ctx.request.query.get("with_response", "").lower() in ("1", "true")
        if not with_response:
            return web.Response(status=204)
        resp: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": bool(
                    message and int(message["flags"]) & MESSAGE_FLAG_EPHEMERAL
                ),
                "channel_id": str(inter.channel_id),
                "guild_id": str(inter.guild_id),
            }
        }
        if inter.original_message_id is not None and ctype in (4, 5, 7):
            resp["interaction"]["response_message_id"] = str(inter.original_message_id)
        if ctype in (4, 7) and message is not None:
            resp["resource"] = {"type": ctype, "message": message}
        return _json_response(resp)

    def _webhook_interaction(self, ctx: _Ctx) -> _Interaction:
        if ctx.params["app_id"] != str(self.application_id):
            raise _HTTPError(404, 10015, "Unknown Webhook")
        inter = self._interactions_by_token.get(ctx.params["token"])
        if inter is None:
            raise _HTTPError(401, 50027, "Invalid Webhook Token")
        return inter

    def _webhook_message(self, inter: _Interaction, message_id: str) -> dict[str, Any]:
        if message_id == "@original":
            if inter.original_message_id is None:
                raise _HTTPError(404, 10008, "Unknown Message")
            msg = self._all_messages.get(inter.original_message_id)
        else:
            msg = self._all_messages.get(int(message_id)) if message_id.isdigit() else None
            if msg is not None and (msg.get("interaction_metadata") or {}).get("id") != str(
                inter.id
            ):
                msg = None
        if msg is None:
            raise _HTTPError(404, 10008, "Unknown Message")
        return msg

    async def _followup(self, ctx: _Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        if inter.callback_type is None:
            raise _HTTPError(404, 10015, "Unknown Webhook")
        body = ctx.json if isinstance(ctx.json, dict) else {}
        if not (
            body.get("content")
            or body.get("embeds")
            or ctx.uploads
            or body.get("components")
            or body.get("poll")
        ):
            raise _HTTPError(400, 50006, "Cannot send an empty message")
        # A followup right after a deferral edits the loading message, like Discord does.
        original = (
            self._all_messages.get(inter.original_message_id)
            if inter.original_message_id is not None
            else None
        )
        if original is not None and int(original["flags"]) & MESSAGE_FLAG_LOADING:
            msg = self._edit_message(original, body, ctx.uploads, inter.size_limit)
            kind = "followup(edited loading original)"
        else:
            msg = self._build_message(
                channel_id=inter.channel_id,
                body=body,
                uploads=ctx.uploads,
                size_limit=inter.size_limit,
                mtype=20 if inter.type == 2 else 0,
                interaction=inter,
            )
            self._store_message(msg)
            kind = "followup"
        self._record_interaction(
            inter.token,
            {
                "kind": kind,
                "body": body,
                "files": ctx.record.files,
                "message": msg,
                "at": ctx.record.at,
            },
        )
        if ctx.request.query.get("wait", "").lower() in ("1", "true"):
            return _json_response(msg)
        return web.Response(status=204)

    async def _wh_get(self, ctx: _Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        return _json_response(self._webhook_message(inter, ctx.params["message_id"]))

    async def _wh_patch(self, ctx: _Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        msg = self._webhook_message(inter, ctx.params["message_id"])
        body = ctx.json if isinstance(ctx.json, dict) else {}
        self._edit_message(msg, body, ctx.uploads, inter.size_limit)
        kind = "edit_original" if ctx.params["message_id"] == "@original" else "edit_followup"
        self._record_interaction(
            inter.token,
            {
                "kind": kind,
                "body": body,
                "files": ctx.record.files,
                "message": msg,
                "at": ctx.record.at,
            },
        )
        return _json_response(msg)

    async def _wh_delete(self, ctx: _Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        msg = self._webhook_message(inter, ctx.params["message_id"])
        self._delete_message(msg)
        kind = "delete_original" if ctx.params["message_id"] == "@original" else "delete_followup"
        self._record_interaction(
            inter.token,
            {"kind": kind, "body": None, "files": [], "message": msg, "at": ctx.record.at},
        )
        return web.Response(status=204)


def _default_error_message(status: int) -> str:
    return {
        400: "Invalid Form Body",
        401: "401: Unauthorized",
        403: "Missing Permissions",
        404: "Not Found",
        413: "Request entity too large",
        429: "You are being rate limited.",
        500: "Internal Server Error",
    }.get(status, f"HTTP {status}")


def main(argv: list[str] | None = None) -> None:
    """Run a fake with a one-guild world: ``python -m bot.testing.fake_discord --port 8765``."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a local fake Discord.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="fake-bot-token")
    parser.add_argument("--premium-tier", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        fake = FakeDiscord(token=args.token, guild_premium_tier=args.premium_tier)
        guild = fake.add_guild("Fake Guild")
        channel = fake.add_text_channel(int(guild["id"]), "general")
        await fake.start(args.host, args.port)
        info = {
            "rest_base": fake.rest_base,
            "gateway_url": fake.gateway_url,
            "cdn_base": fake.cdn_base,
            "token": fake.token,
            "application_id": fake.application_id,
            "guild_id": guild["id"],
            "channel_id": channel["id"],
        }
        print(json.dumps(info), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
