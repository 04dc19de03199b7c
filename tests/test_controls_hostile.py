"""A hostile pass on the community controls: odd values an admin may type, banned words in
disguise, buttons of jobs that are not theirs. Each test failed before its fix."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.core.controls.admission import Refused
from bot.core.controls.limits import LIMITS, SettingInvalid, parse_value
from bot.core.controls.retention import cutoff, prune
from bot.core.controls.words import first_banned
from bot.core.job import JobState
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from tests.controlfix import GUILD, open_controlled_fixture, submitted_prompts  # noqa: F401 - fixtures


@pytest.mark.parametrize("typed", ["1,5", "0,40", "1_000", "1,00,0"])
def test_a_decimal_comma_is_refused_not_read_as_a_bigger_amount(typed: str) -> None:
    # "1,5" meant one and a half dollars; reading it as $15 is a cap ten times too high.
    with pytest.raises(SettingInvalid, match="value:"):
        parse_value("member_daily_spend", typed)


def test_thousands_separators_still_work() -> None:
    assert parse_value("server_monthly_spend", "$1,000.50") == 1_000_500_000


@pytest.mark.parametrize("typed", ["1e999999999", "1e-999999999"])
def test_an_exponent_beyond_decimals_range_is_refused_not_a_crash(typed: str) -> None:
    # The first crashed (decimal.Overflow); the second became a $0 cap.
    with pytest.raises(SettingInvalid, match="value:"):
        parse_value("member_daily_spend", typed)


@pytest.mark.parametrize("typed", ["²", "5²", "①"])
def test_digit_like_characters_are_refused_not_a_crash(typed: str) -> None:
    with pytest.raises(SettingInvalid, match="whole number"):
        parse_value("member_daily_jobs", typed)


@pytest.mark.parametrize(
    "prompt",
    ["b\u200bad", "b\u200dad", "b\u00adad", "\ufeffbad", "b\u2060ad", "ｂ\u200bａｄ"],
)
def test_invisible_characters_do_not_hide_a_banned_word(prompt: str) -> None:
    assert first_banned(f"a {prompt} idea", ["bad"]) == "bad"


async def test_a_moderator_of_another_server_cannot_cancel_this_servers_job(
    open_controlled: Any, fake: FakeApimart
) -> None:
    # A Cancel button's custom_id carries only the job id; a Manage Server member of another
    # server (where the bot also is) who sends that id must not cancel a stranger's job.
    fake.default_plan = FakeTaskPlan(duration_s=2000.0)
    async with open_controlled() as c:
        await c.set_limit("server_concurrent", "1")
        await c.ask("alice")
        queued = await c.ask("bob")
        done, message = await c.controls.cancel(
            queued.job.id, "mallory", manager=True, guild_id="another-server"
        )
        assert not done and "Only the member" in message
        assert (await c.job(queued.job.id)).state is JobState.QUEUED
        done, _ = await c.controls.cancel(queued.job.id, "mod", manager=True, guild_id=GUILD)
        assert done


async def test_cancel_racing_the_queues_submit_is_one_or_the_other(
    open_controlled: Any, fake: FakeApimart
) -> None:
    # Three clicks on Cancel in the same instant as the slot frees (the running job fails):
    # the queued job is either cancelled and never submitted, or submitted and every click
    # is told it cannot be cancelled; never both, and at most one click succeeds.
    for attempt in range(8):
        fake.submits.clear()
        fake.default_plan = FakeTaskPlan(duration_s=0.03 * attempt)
        async with open_controlled() as c:
            await c.set_limit("server_concurrent", "1")
            await c.ask(f"alice{attempt}")
            queued = await c.ask(f"bob{attempt}")
            await asyncio.sleep(0.01 * attempt)
            clicks = await asyncio.gather(
                *(c.controls.cancel(queued.job.id, f"bob{attempt}", manager=False) for _ in "123")
            )
            await c.wait_settled()
            state = (await c.job(queued.job.id)).state
            sent = f"from bob{attempt}" in submitted_prompts(fake)
            done = [ok for ok, _ in clicks if ok]
            if state is JobState.CANCELLED:
                assert not sent and len(done) == 1, clicks
            else:
                assert sent and not done, clicks


async def test_pruning_keeps_the_jobs_a_cooldown_still_reads(
    open_controlled: Any, fake: FakeApimart
) -> None:
    # The cooldown is read from the member's last job (up to 7 days); JOB_RETENTION_DAYS may
    # be 1. Two days on, a 7-day cooldown must still see the job.
    async with open_controlled() as c:
        await c.set_limit("member_cooldown_seconds", str(LIMITS["member_cooldown_seconds"].maximum))
        first = await c.ask("alice")
        await c.wait_settled()
        two_days_on = c.controls.clock.now() + 2 * 86400
        await prune(c.store, older_than=cutoff(two_days_on, days=1))
        assert await c.store.get(first.job.id) is not None
        with pytest.raises(Refused, match="wait between videos"):
            await c.ask("alice")


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def alert(self, channel_id: str, text: str) -> None:
        self.sent.append((channel_id, text))


async def test_an_empty_balance_is_one_alert_not_one_per_refused_job(
    open_controlled: Any, fake: FakeApimart
) -> None:
    # Eight members (or a queue draining) meeting a 402 must not post eight warnings.
    fake.balance = 0.0
    async with open_controlled() as c:
        alerts = Alerts()
        c.controls.alert_sink = alerts
        await c.controls.changes.set_alerts(GUILD, "admin", "555")
        await asyncio.gather(*(c.ask(f"m{i}") for i in range(8)))
        await c.wait_settled()
        await c.controls.settle_alerts()
        balance = [text for _, text in alerts.sent if "402" in text]
        assert len(balance) == 1, alerts.sent


async def test_a_phrase_of_only_invisible_characters_is_refused_not_stored_inert(
    open_controlled: Any,
) -> None:
    async with open_controlled() as c:
        with pytest.raises(SettingInvalid, match="phrase:"):
            await c.controls.changes.add_word(GUILD, "admin", "\u200b\u200d")
        settings, _ = await c.controls.settings(GUILD)
        assert settings.words == []
