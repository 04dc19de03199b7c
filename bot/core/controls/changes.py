"""What an admin may change, each change one transaction under the server's lock, audited.

The front end checks Manage Server; these functions check the values (names, ranges,
models, sizes) so every front end refuses the same bad input with the same words.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.core.controls import audit, ledger
from bot.core.controls.limits import (
    MAX_BLOCKS,
    MAX_REASON,
    MAX_ROLES,
    MAX_WORD_LENGTH,
    MAX_WORDS,
    MEMBER_LIMITS,
    GuildControls,
    ModelRule,
    SettingInvalid,
    check_model_rule,
    parse_value,
    show_value,
)
from bot.core.controls.words import normalise
from bot.core.store import Store


def _rule_text(rule: ModelRule) -> str:
    parts = ["enabled" if rule.enabled else "disabled"]
    if rule.max_resolution:
        parts.append(f"≤ {rule.max_resolution}")
    if rule.max_duration:
        parts.append(f"≤ {rule.max_duration} s")
    return ", ".join(parts)


class Changes:
    """Admin changes to one store; `now` is the injected clock."""

    def __init__(self, store: Store, now: Callable[[], float]) -> None:
        self.store = store
        self.now = now

    async def _apply(
        self,
        guild_id: str,
        actor_id: str,
        setting: str,
        change: Callable[[GuildControls], tuple[str | None, str | None]],
    ) -> tuple[str | None, str | None]:
        async with self.store.transaction() as conn:
            controls = await ledger.lock(conn, guild_id)
            old, new = change(controls)
            if old != new:
                await ledger.save(conn, guild_id, controls)
                await audit.record(conn, guild_id, actor_id, setting, old, new, at=self.now())
        return old, new

    async def set_limit(
        self, guild_id: str, actor_id: str, name: str, value: str
    ) -> tuple[str, str]:
        parsed = parse_value(name, value)

        def change(c: GuildControls) -> tuple[str | None, str | None]:
            old = show_value(name, c.server_limit(name))
            c.limits[name] = parsed
            return old, show_value(name, parsed)

        old, new = await self._apply(guild_id, actor_id, name, change)
        return old or "", new or ""

    async def set_role_limit(
        self, guild_id: str, actor_id: str, role_id: str, role_name: str, name: str, value: str
    ) -> tuple[str, str]:
        if name not in MEMBER_LIMITS:
            raise SettingInvalid(
                f"name: a role tier sets member limits: {', '.join(MEMBER_LIMITS)}"
            )
        parsed = parse_value(name, value)

        def change(c: GuildControls) -> tuple[str | None, str | None]:
            if role_id not in c.roles and len(c.roles) >= MAX_ROLES:
                raise SettingInvalid(f"role: at most {MAX_ROLES} roles can have tiers")
            tier = c.roles.setdefault(role_id, {})
            old = show_value(name, tier[name]) if name in tier else "server default"
            tier[name] = parsed
            c.role_names[role_id] = role_name[:100]
            return old, show_value(name, parsed)

        old, new = await self._apply(guild_id, actor_id, f"role {role_name}: {name}", change)
        return old or "", new or ""

    async def set_model(
        self,
        guild_id: str,
        actor_id: str,
        model: str,
        enabled: bool,
        max_resolution: str | None,
        max_duration: int | None,
    ) -> tuple[str, str]:
        rule = check_model_rule(model, enabled, max_resolution, max_duration)

        def change(c: GuildControls) -> tuple[str | None, str | None]:
            old = _rule_text(c.model_rule(model))
            c.models[model] = rule
            return old, _rule_text(rule)

        old, new = await self._apply(guild_id, actor_id, f"model {model}", change)
        return old or "", new or ""

    async def block(self, guild_id: str, actor_id: str, member_id: str, reason: str | None) -> None:
        reason = (reason or "").strip()[:MAX_REASON] or None

        def change(c: GuildControls) -> tuple[str | None, str | None]:
            if member_id not in c.blocked and len(c.blocked) >= MAX_BLOCKS:
                raise SettingInvalid(f"member: at most {MAX_BLOCKS} members can be blocked")
            previous = c.blocked.get(member_id)
            old = None if previous is None else f"blocked: {previous.get('reason') or '—'}"
            c.blocked[member_id] = {"reason": reason, "by": actor_id, "at": self.now()}
            return old or "not blocked", f"blocked: {reason or '—'}"

        await self._apply(guild_id, actor_id, f"block <@{member_id}>", change)

    async def unblock(self, guild_id: str, actor_id: str, member_id: str) -> bool:
        def change(c: GuildControls) -> tuple[str | None, str | None]:
            previous = c.blocked.pop(member_id, None)
            return ("blocked", "not blocked") if previous is not None else (None, None)

        old, _ = await self._apply(guild_id, actor_id, f"unblock <@{member_id}>", change)
        return old is not None

    async def add_word(self, guild_id: str, actor_id: str, phrase: str) -> bool:
        phrase = " ".join(phrase.split())
        # A phrase that normalises to nothing (zero-width characters only) would match nothing.
        if not normalise(phrase) or len(phrase) > MAX_WORD_LENGTH:
            raise SettingInvalid(f"phrase: 1 to {MAX_WORD_LENGTH} characters")

        def change(c: GuildControls) -> tuple[str | None, str | None]:
            if any(normalise(w) == normalise(phrase) for w in c.words):
                return None, None
            if len(c.words) >= MAX_WORDS:
                raise SettingInvalid(f"phrase: at most {MAX_WORDS} banned words or phrases")
            c.words.append(phrase)
            return "", phrase

        old, _ = await self._apply(guild_id, actor_id, "banned word added", change)
        return old is not None

    async def remove_word(self, guild_id: str, actor_id: str, phrase: str) -> bool:
        def change(c: GuildControls) -> tuple[str | None, str | None]:
            keep = [w for w in c.words if normalise(w) != normalise(phrase)]
            if len(keep) == len(c.words):
                return None, None
            removed = next(w for w in c.words if normalise(w) == normalise(phrase))
            c.words = keep
            return removed, ""

        old, _ = await self._apply(guild_id, actor_id, "banned word removed", change)
        return old is not None

    async def set_alerts(self, guild_id: str, actor_id: str, channel_id: str) -> None:
        def change(c: GuildControls) -> tuple[str | None, str | None]:
            old = c.alerts_channel
            c.alerts_channel = channel_id
            return (f"<#{old}>" if old else "none"), f"<#{channel_id}>"

        await self._apply(guild_id, actor_id, "alerts channel", change)

    async def settings(self, guild_id: str) -> tuple[GuildControls, list[audit.Change]]:
        async with self.store.engine.connect() as conn:
            return await ledger.read(conn, guild_id), await audit.recent(conn, guild_id)
