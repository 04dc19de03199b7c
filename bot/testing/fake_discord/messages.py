"""Messages as Discord builds them: content limits, mentions, attachments, components."""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from bot.testing.fake_discord.cdn import Cdn
from bot.testing.fake_discord.interaction_state import Interaction
from bot.testing.fake_discord.protocol import (
    INTENT_GUILD_MESSAGES,
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    PERMISSIONS,
    HTTPError,
    form_error,
    now_iso,
    sf,
)
from bot.testing.fake_discord.records import Upload


class Messages(Cdn):
    """Every message the bot posted or edited, by channel, as Discord would store it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._all_messages: dict[int, dict[str, Any]] = {}

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
        uploads: list[Upload],
        channel_id: int,
        existing: list[dict[str, Any]] | None,
        size_limit: int,
    ) -> list[dict[str, Any]]:
        for up in uploads:
            if len(up.data) > size_limit:
                raise HTTPError(413, 40005, "Request entity too large")
        by_index: dict[int, Upload] = {}
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
                raise HTTPError(400, 50035, "Invalid Form Body") from None
            up_or_none = by_index.get(idx)
            if up_or_none is None:
                if idx in existing_by_id:
                    continue
                raise form_error(
                    "attachments", "ATTACHMENT_NOT_FOUND", f"attachment {sid} not found"
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
        uploads: list[Upload],
        size_limit: int,
        mtype: int = 0,
        interaction: Interaction | None = None,
        extra_flags: int = 0,
    ) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        guild_id = int(channel["guild_id"]) if channel and channel.get("guild_id") else None
        content = body.get("content") or ""
        if len(content) > 2000:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        mid = self.next_id()
        attachments = self._make_attachments(body, uploads, channel_id, None, size_limit)
        can_everyone = True
        if interaction is None and channel is not None and guild_id is not None:
            can_everyone = bool(
                self.permissions_for(channel_id, self.bot_user_id) & PERMISSIONS["MENTION_EVERYONE"]
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
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "flags": int(body.get("flags") or 0) | extra_flags,
        }
        if guild_id is not None:
            msg["guild_id"] = str(guild_id)
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
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
        uploads: list[Upload],
        size_limit: int,
    ) -> dict[str, Any]:
        if "content" in body:
            content = body["content"] or ""
            if len(content) > 2000:
                raise HTTPError(400, 50035, "Invalid Form Body")
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
        msg["edited_timestamp"] = now_iso()
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
        return [m for m in self.messages.get(sf(channel_id), []) if "interaction_metadata" not in m]
