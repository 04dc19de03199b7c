"""What a server may set: the limits, their units, their defaults, and the settings document.

A server's settings are one JSON document (`guild_controls.doc`), read whole for each
admission. Absent keys mean the default; an explicit `null` means `off`. A new server has
every model enabled and no limits except `member_concurrent` = 2 and `server_concurrent` = 8
(jobs beyond those wait in the fair queue), so a fresh install cannot be drained by parallel
spam but behaves as before for normal use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.core.catalog import CATALOG
from bot.core.controls.money import MoneyInvalid, parse_usd, usd


class Unit(StrEnum):
    COUNT = "jobs"
    MONEY = "USD"
    SECONDS = "seconds"


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    unit: Unit
    help: str
    #: A member limit (server default + role tiers) or a server-wide one.
    member: bool
    #: For this limit a *smaller* value is the more generous one (a cooldown).
    lower_is_generous: bool = False
    maximum: int = 1_000_000


LIMITS: dict[str, Limit] = {
    limit.name: limit
    for limit in (
        Limit(
            "member_concurrent", Unit.COUNT, "jobs one member may have running", True, maximum=100
        ),
        Limit("member_daily_jobs", Unit.COUNT, "jobs one member may start per UTC day", True),
        Limit("member_daily_spend", Unit.MONEY, "USD one member may spend per UTC day", True),
        Limit("member_monthly_spend", Unit.MONEY, "USD one member may spend per UTC month", True),
        Limit(
            "member_cooldown_seconds",
            Unit.SECONDS,
            "seconds between a member's jobs",
            True,
            lower_is_generous=True,
            maximum=7 * 86400,
        ),
        Limit(
            "server_concurrent",
            Unit.COUNT,
            "jobs running at once in this server",
            False,
            maximum=1000,
        ),
        Limit("server_daily_spend", Unit.MONEY, "USD this server may spend per UTC day", False),
        Limit("server_monthly_spend", Unit.MONEY, "USD this server may spend per UTC month", False),
    )
}
MEMBER_LIMITS = tuple(n for n, limit in LIMITS.items() if limit.member)
DEFAULTS: dict[str, int | None] = {"member_concurrent": 2, "server_concurrent": 8}
#: Bounds on what one server may store (the document is read on every admission).
MAX_WORDS = 200
MAX_WORD_LENGTH = 100
MAX_BLOCKS = 2000
MAX_ROLES = 50
MAX_REASON = 300


class SettingInvalid(ValueError):
    """A value an admin typed that cannot be a setting; the text names the allowed values."""


def parse_value(name: str, text: str) -> int | None:
    """`"off"` → None; a count or seconds → int; USD → micro-dollars."""
    limit = LIMITS.get(name)
    if limit is None:
        raise SettingInvalid(f"name: {name!r} is not a limit; use one of {', '.join(LIMITS)}")
    cleaned = text.strip().lower()
    if cleaned in {"off", "none", "unlimited"}:
        return None
    if limit.unit is Unit.MONEY:
        try:
            return parse_usd(cleaned)
        except MoneyInvalid as exc:
            raise SettingInvalid(f"value: {exc}; or `off`") from None
    # isdecimal, not isdigit: "²" is a digit to Python but int() refuses it (a crash).
    if not cleaned.isdecimal() or len(cleaned) > 9:
        raise SettingInvalid(
            f"value: {text!r} is not a whole number of {limit.unit.value}; use 0..{limit.maximum} "
            "or `off`"
        )
    number = int(cleaned)
    if number > limit.maximum:
        raise SettingInvalid(f"value: {number} is more than {limit.maximum} for {name}")
    if name in {"member_concurrent", "server_concurrent"} and number < 1:
        raise SettingInvalid(f"value: {name} must be at least 1 (or `off`)")
    return number


def show_value(name: str, value: int | None) -> str:
    if value is None:
        return "off"
    if LIMITS[name].unit is Unit.MONEY:
        return usd(value, exact=True)
    if LIMITS[name].unit is Unit.SECONDS:
        return f"{value} s"
    return str(value)


@dataclass(frozen=True, slots=True)
class ModelRule:
    enabled: bool = True
    max_resolution: str | None = None
    max_duration: int | None = None


@dataclass(slots=True)
class GuildControls:
    """One server's settings, parsed from its document (unknown keys are ignored)."""

    limits: dict[str, int | None] = field(default_factory=dict)
    roles: dict[str, dict[str, int | None]] = field(default_factory=dict)
    role_names: dict[str, str] = field(default_factory=dict)
    models: dict[str, ModelRule] = field(default_factory=dict)
    blocked: dict[str, dict[str, Any]] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)
    alerts_channel: str | None = None
    #: Alerts already sent, by "limit:period" → highest threshold (80 or 100).
    alerted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> GuildControls:
        doc = doc or {}
        models = {
            m: ModelRule(
                enabled=bool(r.get("enabled", True)),
                max_resolution=r.get("max_resolution"),
                max_duration=r.get("max_duration"),
            )
            for m, r in (doc.get("models") or {}).items()
            if isinstance(r, Mapping)
        }
        return cls(
            limits={k: v for k, v in (doc.get("limits") or {}).items() if k in LIMITS},
            roles={
                str(r): {k: v for k, v in values.items() if k in LIMITS}
                for r, values in (doc.get("roles") or {}).items()
            },
            role_names=dict(doc.get("role_names") or {}),
            models=models,
            blocked=dict(doc.get("blocked") or {}),
            words=list(doc.get("words") or []),
            alerts_channel=doc.get("alerts_channel"),
            alerted=dict(doc.get("alerted") or {}),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "limits": self.limits,
            "roles": self.roles,
            "role_names": self.role_names,
            "models": {
                m: {
                    "enabled": r.enabled,
                    "max_resolution": r.max_resolution,
                    "max_duration": r.max_duration,
                }
                for m, r in self.models.items()
            },
            "blocked": self.blocked,
            "words": self.words,
            "alerts_channel": self.alerts_channel,
            "alerted": self.alerted,
        }

    def server_limit(self, name: str) -> int | None:
        return self.limits[name] if name in self.limits else DEFAULTS.get(name)

    def member_limit(self, name: str, role_ids: Iterable[str] = ()) -> int | None:
        """The most generous of the server default and the member's roles' values."""
        values = [self.server_limit(name)]
        values += [self.roles[r][name] for r in role_ids if name in self.roles.get(r, {})]
        if any(v is None for v in values):
            return None
        numbers = [v for v in values if v is not None]
        return min(numbers) if LIMITS[name].lower_is_generous else max(numbers)

    def model_rule(self, model_id: str) -> ModelRule:
        return self.models.get(model_id, ModelRule())


def check_model_rule(
    model_id: str, enabled: bool, max_resolution: str | None, max_duration: int | None
) -> ModelRule:
    """Refuse a model rule the catalog cannot honour (names the allowed values)."""
    spec = CATALOG.get(model_id)
    if spec is None:
        raise SettingInvalid(f"model: {model_id!r} is not one of {', '.join(CATALOG)}")
    if max_resolution is not None:
        canonical = spec.canonical_resolution(max_resolution)
        if canonical is None:
            raise SettingInvalid(
                f"max_resolution: {spec.id} offers {'/'.join(spec.resolutions)}, "
                f"not {max_resolution}"
            )
        max_resolution = canonical
    if max_duration is not None and max_duration < min(spec.durations):
        raise SettingInvalid(
            f"max_duration: {spec.id}'s shortest video is {min(spec.durations)} s "
            f"(offers {'/'.join(str(d) for d in spec.durations)})"
        )
    return ModelRule(enabled, max_resolution, max_duration)
