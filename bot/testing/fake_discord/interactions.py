"""Interactions: payloads the tests dispatch (slash commands, button clicks) and the routes the
bot answers them on (callback, followups, @original edits and deletes)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.interaction_state import Interaction
from bot.testing.fake_discord.protocol import (
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    HTTPError,
    json_response,
    require_content,
    sf,
)
from bot.testing.fake_discord.records import Ctx
from bot.testing.fake_discord.rest import Rest

ATTACHMENT = 11  # application command option type


class Interactions(Rest):
    """Interaction tokens, what the bot answered on each, and the routes it answers on."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.interaction_responses: dict[str, list[dict[str, Any]]] = {}
        self._interactions_by_token: dict[str, Interaction] = {}
        self._interactions_by_id: dict[int, Interaction] = {}

    def _setup_routes(self) -> None:
        super()._setup_routes()
        r = self._route
        r("POST", "/interactions/{interaction_id}/{token}/callback", self._callback, auth=False)
        r("POST", "/webhooks/{app_id}/{token}", self._followup, auth=False)
        r("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._wh_patch, auth=False)
        r("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._wh_delete, auth=False)

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

    @staticmethod
    def _typed_option(
        name: str, value: Any, definition: dict[str, Any], resolved: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """One option as Discord sends it: typed by the synced definition, choices checked."""
        otype = int(definition["type"])
        if definition.get("choices"):
            allowed = [c["value"] for c in definition["choices"]]
            if value not in allowed:
                raise ValueError(f"option {name!r}: {value!r} is not one of the choices {allowed}")
        if otype == ATTACHMENT:
            if not isinstance(value, dict):
                raise ValueError(
                    f"option {name!r} is an attachment option: pass an attachment dict"
                )
            resolved.setdefault("attachments", {})[value["id"]] = value
            value = value["id"]
        return {"name": name, "type": otype, "value": value}

    def _new_interaction_token(self) -> str:
        return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)

    def _interaction_common(
        self, itype: int, guild_id: int, channel_id: int, user_id: int, size_limit: int
    ) -> tuple[Interaction, dict[str, Any]]:
        gid, cid, uid = sf(guild_id), sf(channel_id), sf(user_id)
        inter = Interaction(
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

        ``subcommand`` may be ``"sub"`` or ``"group sub"``. The command must have been synced
        (as the bot does at start): option types come from its definition, and unknown options,
        choices and missing required options raise ``ValueError``.
        ``attachments`` maps attachment option names to dicts from :meth:`add_attachment`.
        Unknown ``user_id``s are added to the guild as members.
        """
        gid = sf(guild_id)
        inter, payload = self._interaction_common(
            2, gid, channel_id, user_id, attachment_size_limit
        )
        inter.command_name = command_name
        cmd = self._find_command(command_name, gid)
        if cmd is None:
            raise ValueError(f"command {command_name!r} was never synced to this fake")
        definitions: list[dict[str, Any]] = cmd.get("options", [])
        path = subcommand.split() if subcommand else []
        for part in path:
            sub = next((o for o in definitions if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                raise ValueError(f"command {command_name!r} has no subcommand {part!r}")
            definitions = sub.get("options", [])
        all_options: dict[str, Any] = dict(options or {})
        all_options.update(attachments or {})
        resolved: dict[str, dict[str, Any]] = {}
        typed: list[dict[str, Any]] = []
        for name, value in all_options.items():
            definition = next((o for o in definitions if o["name"] == name), None)
            if definition is None:
                raise ValueError(f"command {command_name!r} {subcommand!r} has no option {name!r}")
            typed.append(self._typed_option(name, value, definition, resolved))
        missing = [
            o["name"] for o in definitions if o.get("required") and o["name"] not in all_options
        ]
        if missing:
            raise ValueError(f"missing required options {missing} for {command_name!r}")
        nested: list[dict[str, Any]] = typed
        for i, part in reversed(list(enumerate(path))):
            nested = [{"type": 1 if i == len(path) - 1 else 2, "name": part, "options": nested}]
        data: dict[str, Any] = {
            "id": cmd["id"],
            "name": command_name,
            "type": 1,
            "options": nested,
        }
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
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
        message = self._all_messages.get(sf(message_id))
        if message is None:
            raise KeyError(f"unknown message {message_id}")
        inter, payload = self._interaction_common(
            3, guild_id, channel_id, user_id, attachment_size_limit
        )
        inter.source_message_id = sf(message_id)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        payload["data"] = data
        payload["message"] = message
        return payload

    def _answered(
        self,
        inter: Interaction,
        ctx: Ctx,
        kind: str,
        body: Any,
        message: dict[str, Any] | None,
        **extra: Any,
    ) -> None:
        """Note one answer the bot gave on an interaction (see `interaction_responses`)."""
        files = ctx.record.files if body is not None else []
        entry = {"kind": kind, "body": body, "files": files, "message": message, **extra}
        self.interaction_responses.setdefault(inter.token, []).append(
            {**entry, "at": ctx.record.at}
        )

    async def _callback(self, ctx: Ctx) -> web.StreamResponse:
        iid = ctx.params["interaction_id"]
        inter = self._interactions_by_id.get(int(iid)) if iid.isdigit() else None
        if inter is None or inter.token != ctx.params["token"]:
            raise HTTPError(404, 10062, "Unknown interaction")
        if inter.callback_type is not None:
            raise HTTPError(400, 40060, "Interaction has already been acknowledged.")
        body = ctx.json if isinstance(ctx.json, dict) else None
        if body is None or "type" not in body:
            raise HTTPError(400, 50035, "Invalid Form Body")
        ctype = int(body["type"])
        data = body.get("data") or {}
        valid = {2: {4, 5, 8, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}.get(
            inter.type, set()
        )
        if ctype not in valid:
            raise HTTPError(400, 40043, f"Interaction callback type {ctype} is not valid here")
        message: dict[str, Any] | None = None
        mtype = 20 if inter.type == 2 else 0
        if ctype == 4:
            require_content(data, bool(ctx.uploads))
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
        self._answered(inter, ctx, "callback", body, message, type=ctype)
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
        return json_response(resp)

    def _webhook_interaction(self, ctx: Ctx) -> Interaction:
        if ctx.params["app_id"] != str(self.application_id):
            raise HTTPError(404, 10015, "Unknown Webhook")
        inter = self._interactions_by_token.get(ctx.params["token"])
        if inter is None:
            raise HTTPError(401, 50027, "Invalid Webhook Token")
        return inter

    def _webhook_message(self, inter: Interaction, message_id: str) -> dict[str, Any]:
        if message_id == "@original":
            if inter.original_message_id is None:
                raise HTTPError(404, 10008, "Unknown Message")
            msg = self._all_messages.get(inter.original_message_id)
        else:
            msg = self._all_messages.get(int(message_id)) if message_id.isdigit() else None
            if msg is not None and (msg.get("interaction_metadata") or {}).get("id") != str(
                inter.id
            ):
                msg = None
        if msg is None:
            raise HTTPError(404, 10008, "Unknown Message")
        return msg

    async def _followup(self, ctx: Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        if inter.callback_type is None:
            raise HTTPError(404, 10015, "Unknown Webhook")
        body = ctx.json if isinstance(ctx.json, dict) else {}
        require_content(body, bool(ctx.uploads))
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
        self._answered(inter, ctx, kind, body, msg)
        if ctx.request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(msg)
        return web.Response(status=204)

    async def _wh_patch(self, ctx: Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        msg = self._webhook_message(inter, ctx.params["message_id"])
        body = ctx.json if isinstance(ctx.json, dict) else {}
        self._edit_message(msg, body, ctx.uploads, inter.size_limit)
        kind = "edit_original" if ctx.params["message_id"] == "@original" else "edit_followup"
        self._answered(inter, ctx, kind, body, msg)
        return json_response(msg)

    async def _wh_delete(self, ctx: Ctx) -> web.StreamResponse:
        inter = self._webhook_interaction(ctx)
        msg = self._webhook_message(inter, ctx.params["message_id"])
        self._delete_message(msg)
        kind = "delete_original" if ctx.params["message_id"] == "@original" else "delete_followup"
        self._answered(inter, ctx, kind, None, msg)
        return web.Response(status=204)
