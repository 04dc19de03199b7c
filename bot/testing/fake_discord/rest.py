"""The fake REST API: routing, body parsing, auth, and the non-interaction routes.

Unknown routes answer 404 naming the route (and are listed in `unhandled_requests`), so a gap
in the fake is loud. A crash inside a handler answers 400 (discord.py retries 5xx for
seconds) and is kept in `errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from bot.testing.fake_discord.gateway import Gateway
from bot.testing.fake_discord.protocol import (
    APP_FLAGS_ALL_PRIVILEGED,
    DISCORD_EPOCH_MS,
    PERMISSIONS,
    HTTPError,
    error_response,
    json_response,
    require_content,
)
from bot.testing.fake_discord.records import Ctx, RecordedRequest, Upload

Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


def _snowflake_time(snowflake: Any) -> float:
    """When a snowflake was made (unix seconds)."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000


def _without_nonce(msg: dict[str, Any]) -> dict[str, Any]:
    """A message as GET returns it: Discord echoes a nonce only when the message is created."""
    return {k: v for k, v in msg.items() if k != "nonce"}


class Rest(Gateway):
    """`/api/v10/...`: users, application, gateway URL, commands and channel messages."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.registered_commands: list[dict[str, Any]] = []
        #: How long (seconds) an ``enforce_nonce`` nonce is remembered: Discord's "few minutes".
        self.nonce_window = 300.0
        #: Posts answered with an existing message because their nonce was seen (de-duplicated).
        self.nonce_repeats = 0
        self._routes: list[tuple[str, re.Pattern[str], str, Handler, bool]] = []
        self._setup_routes()

    def _setup_routes(self) -> None:
        r = self._route
        r("GET", "/users/@me", self._get_me)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        r("GET", "/gateway", self._get_gateway, auth=False)
        r("PUT", "/applications/{app_id}/commands", self._put_commands)
        r("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        r("GET", "/channels/{channel_id}/messages", self._get_messages)
        r("POST", "/channels/{channel_id}/messages", self._post_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message)

    def _route(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self._routes.append(
            (method, re.compile(f"^{pattern}$"), f"{method} {template}", handler, auth)
        )

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Upload]]:
        ctype = request.content_type
        uploads: list[Upload] = []
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
                        Upload(
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
                raise HTTPError(400, 50109, "The request body contains invalid JSON.") from None
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
                resp = json_response(
                    {
                        "message": f"fake discord: no route for {request.method} {path}",
                        "code": 0,
                    },
                    404,
                )
            else:
                name, handler, auth, params = matched
                if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise HTTPError(401, 0, "401: Unauthorized")
                resp = await handler(Ctx(request, params, body, uploads, record))
            if rule is not None and rule.after_processing:
                record.injected = True
                processed = resp
                if isinstance(processed, web.Response) and isinstance(processed.body, bytes):
                    with contextlib.suppress(ValueError):
                        record.response = json.loads(processed.body)
                self._record(record)  # the work is done and visible before the answer
                resp = await self._apply_fault(rule, request, processed)
                record.status = resp.status
                return resp
        except HTTPError as exc:
            resp = error_response(exc)
        except Exception as exc:  # a bug in the fake (or a payload it can't handle)
            # Answer 400, not 500: discord.py retries 5xx with multi-second sleeps.
            record.error = traceback.format_exc()
            self.errors.append(record.error)
            resp = json_response(
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

    def _check_app(self, ctx: Ctx) -> None:
        if ctx.params.get("app_id") != str(self.application_id):
            raise HTTPError(404, 10002, "Unknown Application")

    def _channel(self, ctx: Ctx) -> dict[str, Any]:
        try:
            cid = int(ctx.params["channel_id"])
        except ValueError:
            raise HTTPError(404, 10003, "Unknown Channel") from None
        channel = self.channels.get(cid)
        if channel is None:
            raise HTTPError(404, 10003, "Unknown Channel")
        return channel

    def _need(self, channel: dict[str, Any], *perms: str) -> None:
        have = self.permissions_for(int(channel["id"]), self.bot_user_id)
        if not have & PERMISSIONS["VIEW_CHANNEL"]:
            raise HTTPError(403, 50001, "Missing Access")
        for p in perms:
            if not have & PERMISSIONS[p]:
                raise HTTPError(403, 50013, "Missing Permissions")

    async def _get_me(self, ctx: Ctx) -> web.StreamResponse:
        return json_response(
            {
                **self.bot_user,
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
            }
        )

    async def _get_application(self, ctx: Ctx) -> web.StreamResponse:
        owner = next((u for uid, u in self.users.items() if uid != self.bot_user_id), self.bot_user)
        return json_response(
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

    async def _get_gateway(self, ctx: Ctx) -> web.StreamResponse:
        return json_response({"url": self.gateway_url.rstrip("/")})

    def _commands_scope(self, ctx: Ctx) -> str | None:
        self._check_app(ctx)
        gid = ctx.params.get("guild_id")
        if gid is not None and (not gid.isdigit() or int(gid) not in self.guilds):
            raise HTTPError(404, 10004, "Unknown Guild")
        return gid

    def _normalize_command(
        self, data: dict[str, Any], guild_id: str | None, existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if not isinstance(data, dict) or not data.get("name"):
            raise HTTPError(400, 50035, "Invalid Form Body")
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

    async def _put_commands(self, ctx: Ctx) -> web.StreamResponse:
        gid = self._commands_scope(ctx)
        if not isinstance(ctx.json, list):
            raise HTTPError(400, 50035, "Invalid Form Body")
        existing = [c for c in self.registered_commands if c.get("guild_id") == gid]
        new = [self._normalize_command(d, gid, existing) for d in ctx.json]
        self.registered_commands = [
            c for c in self.registered_commands if c.get("guild_id") != gid
        ] + new
        return json_response(new)

    def _message_in(self, channel: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
        mid = ctx.params["message_id"]
        msg = self._all_messages.get(int(mid)) if mid.isdigit() else None
        if (
            msg is None
            or msg["channel_id"] != channel["id"]
            or msg not in self.messages.get(int(channel["id"]), [])
        ):
            raise HTTPError(404, 10008, "Unknown Message")
        return msg

    async def _get_messages(self, ctx: Ctx) -> web.StreamResponse:
        """The channel's latest messages, newest first (the bot reads them before re-posting)."""
        channel = self._channel(ctx)
        self._need(channel, "READ_MESSAGE_HISTORY")
        limit = max(1, min(100, int(ctx.request.query.get("limit", 50))))
        msgs = list(reversed(self.messages.get(int(channel["id"]), [])))
        if "before" in ctx.request.query:
            msgs = [m for m in msgs if int(m["id"]) < int(ctx.request.query["before"])]
        return json_response([_without_nonce(m) for m in msgs[:limit]])

    def _nonce_repeat(self, channel: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
        """Discord's de-duplication: with ``enforce_nonce``, a nonce the same author used in
        this channel within :attr:`nonce_window` seconds returns that message again."""
        nonce = body.get("nonce")
        if nonce is None or not body.get("enforce_nonce"):
            return None
        if len(str(nonce)) > 25:
            raise HTTPError(400, 50035, "Invalid Form Body (nonce longer than 25)")
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

    async def _post_message(self, ctx: Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        body = ctx.json if isinstance(ctx.json, dict) else {}
        self._need(channel, "SEND_MESSAGES")
        if ctx.uploads:
            self._need(channel, "ATTACH_FILES")
        require_content(body, bool(ctx.uploads))
        repeat = self._nonce_repeat(channel, body)
        if repeat is not None:
            return json_response(repeat)
        gid = int(channel["guild_id"]) if channel.get("guild_id") else None
        msg = self._build_message(
            channel_id=int(channel["id"]),
            body=body,
            uploads=ctx.uploads,
            size_limit=self.upload_limit(gid),
        )
        self._store_message(msg)
        return json_response(msg)

    async def _patch_message(self, ctx: Ctx) -> web.StreamResponse:
        channel = self._channel(ctx)
        self._need(channel)
        msg = self._message_in(channel, ctx)
        body = ctx.json if isinstance(ctx.json, dict) else {}
        if msg["author"]["id"] != str(self.bot_user_id):
            if set(body) - {"flags"}:
                raise HTTPError(403, 50005, "Cannot edit a message authored by another user")
            self._need(channel, "MANAGE_MESSAGES")
        if ctx.uploads:
            self._need(channel, "ATTACH_FILES")
        gid = int(channel["guild_id"]) if channel.get("guild_id") else None
        return json_response(self._edit_message(msg, body, ctx.uploads, self.upload_limit(gid)))
