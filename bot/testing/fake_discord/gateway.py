"""The fake gateway: HELLO, IDENTIFY/READY, RESUME, heartbeats and dispatches over a websocket.

Knobs for hostile tests: `disconnect_all` (an abrupt close; discord.py resumes) and
`send_reconnect` (op 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.testing.fake_discord.messages import Messages
from bot.testing.fake_discord.protocol import (
    API_VERSION,
    APP_FLAGS_ALL_PRIVILEGED,
    INTENT_GUILD_MEMBERS,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE,
    OP_RECONNECT,
    OP_REQUEST_MEMBERS,
    OP_RESUME,
    OP_VOICE_STATE,
    PRIVILEGED_INTENTS,
    json_response,
)


@dataclass(eq=False)
class _Session:
    session_id: str
    intents: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    conn: _Connection | None = None
    ready: bool = False
    #: `[shard_id, num_shards]` from IDENTIFY, or None for an unsharded session.
    shard: list[int] | None = None

    def has_guild(self, guild_id: Any) -> bool:
        """Discord's routing: `(guild_id >> 22) % num_shards == shard_id`."""
        if self.shard is None or guild_id is None:
            return True
        shard_id, count = self.shard
        return bool((int(guild_id) >> 22) % count == shard_id)


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    compress: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    encoder: Any = None

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
            else:
                await self.ws.send_str(text)
        except ConnectionError:
            pass

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.lock:
            await self.send_locked(payload)


class Gateway(Messages):
    """Gateway sessions; `dispatch` sends an event to every connected, READY bot."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gateway_received: list[dict[str, Any]] = []  # every payload clients sent
        self.gateway_queries: list[dict[str, str]] = []  # query string of every gateway connect
        self.ready_count = 0
        #: The `shard` of every IDENTIFY, in order (None: unsharded).
        self.identified_shards: list[list[int] | None] = []
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()

    def _spawn_dispatch(self, event: str, data: dict[str, Any], intent: int = 0) -> None:
        if not any(s.conn is not None and s.ready for s in self._sessions.values()):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._spawn(self.dispatch(event, data, intent=intent))

    def add_guild(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        guild = super().add_guild(*args, **kwargs)
        self._spawn_dispatch("GUILD_CREATE", self._guild_create_payload(int(guild["id"]), 0))
        return guild

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
    def connected_sessions(self) -> list[str]:
        return [s.session_id for s in self._sessions.values() if s.conn is not None and s.ready]

    async def dispatch(self, event: str, data: dict[str, Any], *, intent: int = 0) -> None:
        """Send op 0 DISPATCH ``event`` to every connected, READY session.

        ``intent``: only sessions whose IDENTIFY intents include these bits get it. An event
        of a guild goes only to sessions whose shard holds that guild, as on Discord.
        """
        guild_id = None
        if isinstance(data, dict):
            guild_id = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
        for session in list(self._sessions.values()):
            conn = session.conn
            if conn is None or not session.ready:
                continue
            if intent and not session.intents & intent:
                continue
            if not session.has_guild(guild_id):
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
            return json_response({"message": "fake discord: gateway expects a websocket"}, 400)
        await ws.prepare(request)
        compress = request.query.get("compress")
        self.gateway_queries.append(dict(request.query))
        conn = _Connection(ws=ws, compress=compress)
        # zstd-stream is answered with plain text frames, which discord.py also accepts.
        if compress not in (None, "zlib-stream", "zstd-stream"):
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
        elif op in (OP_PRESENCE, OP_VOICE_STATE, OP_REQUEST_MEMBERS):  # nothing to answer
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
        shard = data.get("shard")
        if shard is not None and not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(n, int) for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        self.identified_shards.append(shard)
        session = _Session(
            session_id=secrets.token_hex(16), intents=intents, conn=conn, shard=shard
        )
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
        if shard is not None:
            ready["shard"] = shard
        async with conn.lock:
            await self._dispatch_locked(session, conn, "READY", ready)
            for gid in [g for g in self.guilds if session.has_guild(g)]:
                await self._dispatch_locked(
                    session, conn, "GUILD_CREATE", self._guild_create_payload(gid, intents)
                )
            session.ready = True
        self.ready_count += 1
        self._notify()

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
