"""Discord's wire vocabulary as the fake speaks it: permission bits, intents, opcodes, limits,
and the JSON error answer every part of the fake gives."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from aiohttp import web

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
    PERMISSIONS["CREATE_INSTANT_INVITE"]
    | PERMISSIONS["ADD_REACTIONS"]
    | PERMISSIONS["STREAM"]
    | PERMISSIONS["VIEW_CHANNEL"]
    | PERMISSIONS["SEND_MESSAGES"]
    | PERMISSIONS["EMBED_LINKS"]
    | PERMISSIONS["ATTACH_FILES"]
    | PERMISSIONS["READ_MESSAGE_HISTORY"]
    | PERMISSIONS["USE_EXTERNAL_EMOJIS"]
    | PERMISSIONS["CONNECT"]
    | PERMISSIONS["SPEAK"]
    | PERMISSIONS["CHANGE_NICKNAME"]
    | PERMISSIONS["USE_APPLICATION_COMMANDS"]
    | PERMISSIONS["SEND_MESSAGES_IN_THREADS"]
    | PERMISSIONS["USE_EXTERNAL_APPS"]
)
DEFAULT_BOT_PERMISSIONS = (
    PERMISSIONS["VIEW_CHANNEL"]
    | PERMISSIONS["SEND_MESSAGES"]
    | PERMISSIONS["EMBED_LINKS"]
    | PERMISSIONS["ATTACH_FILES"]
    | PERMISSIONS["READ_MESSAGE_HISTORY"]
    | PERMISSIONS["USE_EXTERNAL_EMOJIS"]
    | PERMISSIONS["ADD_REACTIONS"]
    | PERMISSIONS["SEND_MESSAGES_IN_THREADS"]
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


class HTTPError(Exception):
    """Raised by a handler to answer with Discord's JSON error body."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors


def form_error(field: str, code: str, message: str) -> HTTPError:
    """Discord's 400/50035 "Invalid Form Body" naming the field at fault."""
    return HTTPError(
        400, 50035, "Invalid Form Body", {field: {"_errors": [{"code": code, "message": message}]}}
    )


def require_content(body: dict[str, Any], has_files: bool) -> None:
    """Discord refuses a message with nothing in it (400/50006), whichever route sends it."""
    if not (has_files or any(body.get(k) for k in ("content", "embeds", "components", "poll"))):
        raise HTTPError(400, 50006, "Cannot send an empty message")


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # discord.py compares Content-Type to exactly "application/json" (no charset).
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)


def error_response(exc: HTTPError) -> web.Response:
    body: dict[str, Any] = {"message": exc.message, "code": exc.code}
    if exc.errors:
        body["errors"] = exc.errors
    return json_response(body, exc.status)


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def sf(value: Any) -> int:
    """A snowflake given as int or str."""
    return int(value)


def default_error_message(status: int) -> str:
    return {
        400: "Invalid Form Body",
        401: "401: Unauthorized",
        403: "Missing Permissions",
        404: "Not Found",
        413: "Request entity too large",
        429: "You are being rate limited.",
        500: "Internal Server Error",
    }.get(status, f"HTTP {status}")
