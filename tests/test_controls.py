"""Community controls in the core: admission, the race, the fair queue, accounting, retention.

Every test runs on SQLite and (with REELBOT_TEST_POSTGRES_URL) on PostgreSQL, against the
stand-in APIMart over real HTTP; the race tests send 20 requests at once.
"""

from __future__ import annotations

import asyncio
import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from bot.core.controls.admission import Refused
from bot.core.controls.money import from_api, parse_usd, usd
from bot.core.controls.retention import prune
from bot.core.job import JobState
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from tests.controlfix import (  # noqa: F401 - fixtures
    GUILD,
    Controlled,
    open_controlled_fixture,
    sora,
    submitted_prompts,
)

SORA_4S = parse_usd("0.04")  # the stand-in's sora-2 720p: $0.01 per second


async def test_twenty_members_at_once_against_a_cap_that_fits_three(
    open_controlled: Any, fake: FakeApimart
) -> None:
    async with open_controlled() as c:
        await c.set_limit("server_daily_spend", "0.12")

        async def one(i: int) -> Any:
            try:
                return await c.ask(f"m{i}")
            except Refused as refusal:
                return refusal

        outcomes = await asyncio.gather(*(one(i) for i in range(20)))
        refused = [o for o in outcomes if isinstance(o, Refused)]
        assert len(refused) == 17
        assert {r.limit for r in refused} == {"server_daily_spend"}
        assert "$0.00 left" in refused[0].message and "<t:" in refused[0].message
        assert len(fake.submits) == 3
        await c.wait_settled()
        report = await c.controls.report(GUILD, "today")
        assert report.total == 3 * SORA_4S <= parse_usd("0.12")
        assert report.jobs == 3


async def test_twenty_members_two_slots_queue_and_all_run_once_in_order(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=3000.0)  # 3 s: the first two hold the slots
    async with open_controlled() as c:
        await c.set_limit("server_concurrent", "2")
        admissions = await asyncio.gather(*(c.ask(f"m{i:02}") for i in range(20)))
        assert len(fake.submit_attempts) == 2  # 2 running
        assert len([a for a in admissions if a.position is None]) == 2
        assert sorted(a.position for a in admissions if a.position) == list(range(1, 19))
        fake.default_plan = FakeTaskPlan(duration_s=50.0)
        await c.wait_settled(timeout=30)
        prompts = submitted_prompts(fake)
        assert len(prompts) == 20 and len(set(prompts)) == 20  # each exactly once
        # One job per member: round-robin is the order they were queued in.
        queued = sorted((a for a in admissions if a.position), key=lambda a: a.position)
        assert prompts[2:] == [a.job.request.prompt for a in queued]


async def test_one_members_burst_does_not_block_the_others(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=3000.0)  # the first job holds the one slot
    async with open_controlled() as c:
        await c.set_limit("server_concurrent", "1")
        await c.set_limit("member_concurrent", "off")
        for i in range(5):
            await c.ask("spammer", sora(f"spam {i}"))
        await c.ask("bob", sora("bob"))
        await c.ask("carol", sora("carol"))
        fake.default_plan = FakeTaskPlan(duration_s=50.0)
        await c.wait_settled(timeout=30)
        assert submitted_prompts(fake) == [
            "spam 0",
            "spam 1",
            "bob",
            "carol",
            "spam 2",
            "spam 3",
            "spam 4",
        ]


async def test_fifty_requests_from_one_member_queue_ten_and_refuse_the_rest(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=3000.0)
    async with open_controlled() as c:
        outcomes = await asyncio.gather(
            *(c.ask("spammer", sora(f"spam {i}")) for i in range(50)), return_exceptions=True
        )
        admitted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, Refused)]
        assert len(admitted) == 12 and len(refused) == 38  # 2 running + 10 waiting
        assert {r.limit for r in refused} == {"queue"}
        assert len(fake.submit_attempts) == 2
        done, message = await c.controls.cancel(10**30, "spammer", manager=False)
        assert not done and "no longer known" in message


async def test_reservation_becomes_the_actual_cost_and_failures_count_nothing(
    open_controlled: Any, fake: FakeApimart
) -> None:
    async with open_controlled() as c:
        ok = await c.ask("alice")
        assert ok.job.estimate == SORA_4S
        during = await c.controls.report(GUILD, "today")
        assert (during.reserved, during.spent) == (SORA_4S, 0)
        await c.wait_settled()
        after = await c.controls.report(GUILD, "today")
        assert (after.reserved, after.spent) == (0, SORA_4S)

        fake.default_plan = FakeTaskPlan(fail=True, error_message="content moderation")
        failed = await c.ask("alice", sora("a second kite"))
        await c.wait_settled()
        job = await c.job(failed.job.id)
        assert job.state is JobState.FAILED
        final = await c.controls.report(GUILD, "today")
        assert (final.reserved, final.spent, final.failures, final.jobs) == (0, SORA_4S, 1, 2)


async def test_an_unknown_outcome_keeps_its_reservation(
    open_controlled: Any, fake: FakeApimart
) -> None:
    async with open_controlled() as c:
        fake.inject("submit", status=500, times=10)
        await c.ask("alice")
        await c.wait_settled()
        (job,) = await c.store.recent()
        assert job.state is JobState.UNKNOWN
        report = await c.controls.report(GUILD, "today")
        assert (report.reserved, report.spent) == (SORA_4S, 0)


async def test_learned_prices_converge_to_what_the_api_charges(
    open_controlled: Any, fake: FakeApimart
) -> None:
    requests = [
        build_request(model="sora-2", prompt="a", duration=8),
        build_request(model="sora-2-pro", prompt="b", duration=4, resolution="1080p"),
        build_request(model="Omni-Flash-Ext", prompt="c", duration=10, resolution="4k"),
        build_request(model="veo3.1-fast-official", prompt="d", duration=4, sample_count=2),
    ]
    async with open_controlled(seed=False) as c:
        await c.set_limit("member_concurrent", "off")
        first = [await c.ask("alice", r) for r in requests]
        assert all(a.job.estimate is None for a in first)  # nothing known yet
        await c.wait_settled()
        again = [await c.ask("alice", r) for r in requests]
        await c.wait_settled()
        for admission in again:
            job = await c.job(admission.job.id)
            assert job.estimate == from_api(job.cost), job.request.model
        assert [from_api((await c.job(a.job.id)).cost) for a in again] == [
            parse_usd("0.08"),
            parse_usd("0.28"),
            parse_usd("0.8"),
            parse_usd("0.4"),
        ]


async def test_while_a_price_is_unknown_one_job_teaches_it(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=60.0)
    async with open_controlled(seed=False) as c:
        await c.set_limit("server_daily_spend", "1")
        await c.ask("alice")
        with pytest.raises(Refused) as refused:
            await c.ask("bob")
        assert refused.value.limit == "unpriced"
        await c.wait_settled()
        second = await c.ask("bob")
        assert second.job.estimate == SORA_4S


async def test_member_caps_role_tiers_and_daily_jobs(open_controlled: Any) -> None:
    async with open_controlled() as c:
        await c.set_limit("member_daily_spend", "0.05")
        await c.controls.changes.set_role_limit(
            GUILD, "admin", "77", "patron", "member_daily_spend", "1"
        )
        await c.ask("alice")
        with pytest.raises(Refused) as refused:
            await c.ask("alice", sora("again"))
        assert refused.value.limit == "member_daily_spend"
        assert "your daily spending limit ($0.05): $0.01 left" in refused.value.message
        await c.ask("alice", sora("as a patron"), roles=("77",))  # the more generous tier
        await c.set_limit("member_daily_jobs", "2")
        with pytest.raises(Refused) as refused:
            await c.ask("alice", sora("third"), roles=("77",))
        assert refused.value.limit == "member_daily_jobs"


async def test_operator_caps_apply_to_the_terminal_too(open_controlled: Any) -> None:
    async with open_controlled(operator_daily=parse_usd("0.05")) as c:
        await c.ask("cli", guild=None)
        with pytest.raises(Refused) as refused:
            await c.ask("cli", sora("b"), guild=None)
        assert refused.value.limit == "operator_daily_spend"
        with pytest.raises(Refused):  # every server shares the operator's cap
            await c.ask("alice", sora("c"))


async def test_rules_refuse_before_anything_is_written(
    open_controlled: Any, fake: FakeApimart
) -> None:
    async with open_controlled() as c:
        changes = c.controls.changes
        await changes.block(GUILD, "admin", "troll", "spam in #general")
        with pytest.raises(Refused, match="spam in #general"):
            await c.ask("troll")
        await changes.add_word(GUILD, "admin", "Crème brûlée")
        with pytest.raises(Refused) as banned:
            await c.ask("alice", sora("a CREME BRULEE on fire"))
        assert "brul" not in banned.value.message.lower()
        await c.ask("alice", sora("a crème caramel"))  # whole phrases only
        await changes.set_model(GUILD, "admin", "sora-2-pro", True, "720p", 8)
        with pytest.raises(Refused, match="up to 720p"):
            await c.ask("alice", build_request(model="sora-2-pro", prompt="x", resolution="1080p"))
        with pytest.raises(Refused, match="up to 8 s"):
            await c.ask("alice", build_request(model="sora-2-pro", prompt="x", duration=12))
        await changes.set_model(GUILD, "admin", "sora-2", False, None, None)
        with pytest.raises(Refused, match="disabled"):
            await c.ask("bob")
        assert len(await c.store.recent()) == 1
        assert len(fake.submit_attempts) == 1


async def test_settings_queue_spend_and_cooldown_survive_a_restart(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=2000.0)
    async with open_controlled() as c:
        await c.set_limit("server_concurrent", "1")
        await c.set_limit("member_cooldown_seconds", "3600")
        await c.ask("alice")
        queued = await c.ask("bob")
        assert queued.job.state is JobState.QUEUED
    fake.default_plan = FakeTaskPlan(duration_s=50.0)
    async with open_controlled() as c:
        with pytest.raises(Refused) as cooling:
            await c.ask("alice", sora("again"))
        assert cooling.value.limit == "member_cooldown_seconds"
        await c.wait_settled(timeout=20)
        assert submitted_prompts(fake) == ["from alice", "from bob"]
        report = await c.controls.report(GUILD, "today")
        assert report.spent == 2 * SORA_4S
        settings, changes = await c.controls.settings(GUILD)
        assert settings.server_limit("server_concurrent") == 1
        assert [ch.setting for ch in changes][:2] == [
            "member_cooldown_seconds",
            "server_concurrent",
        ]


async def test_a_process_that_does_not_resume_submits_no_queued_job(
    open_controlled: Any, fake: FakeApimart
) -> None:
    """`reelbot generate` on the bot's database must not take the bot's queued jobs (it would
    deliver their results to a terminal), nor take one before a restart has been settled."""
    fake.default_plan = FakeTaskPlan(duration_s=2000.0)
    async with open_controlled() as c:
        await c.set_limit("server_concurrent", "1")
        await c.ask("alice")
        await c.ask("bob")
    fake.default_plan = FakeTaskPlan(duration_s=50.0)
    async with open_controlled(resume=False) as c:
        await c.set_limit("server_concurrent", "2")  # a slot is free for bob now
        c.dispatcher.wake()
        await asyncio.sleep(0.5)
        assert submitted_prompts(fake) == ["from alice"]
    async with open_controlled() as c:
        await c.wait_settled(timeout=20)
        assert submitted_prompts(fake) == ["from alice", "from bob"]


async def test_cancel_a_queued_job_but_not_a_submitted_one(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=2000.0)
    async with open_controlled() as c:
        await c.set_limit("server_concurrent", "1")
        running = await c.ask("alice")
        queued = await c.ask("bob")
        done, message = await c.controls.cancel(queued.job.id, "alice", manager=False)
        assert not done and "Only the member" in message
        done, message = await c.controls.cancel(running.job.id, "alice", manager=False)
        assert not done and "no way to cancel" in message
        done, _ = await c.controls.cancel(queued.job.id, "bob", manager=False)
        assert done
        report = await c.controls.report(GUILD, "today")
        assert report.jobs == 1 and report.reserved + report.spent == SORA_4S
        await c.wait_settled()
        assert (await c.job(queued.job.id)).state is JobState.CANCELLED


async def test_pruning_keeps_every_report_exact(open_controlled: Any) -> None:
    async with open_controlled() as c:
        await c.set_limit("member_concurrent", "off")
        for i in range(6):
            await c.ask(f"m{i % 3}", sora(f"kite {i}"))
        await c.wait_settled()
        await asyncio.sleep(0.2)  # deliveries are marked after the poller's notifier call
        before = await c.controls.report(GUILD, "month")
        allowance = await c.controls.allowance(GUILD, "m1", ())
        removed = await prune(c.store, older_than=c.controls.clock.now() + 1, batch=4)
        assert removed == 6 and await c.store.recent() == []
        after = await c.controls.report(GUILD, "month")
        assert after.csv() == before.csv() and after.total == 6 * SORA_4S
        assert (await c.controls.allowance(GUILD, "m1", ())).today == allowance.today
        with pytest.raises(Refused):  # caps still see the pruned jobs' spend
            await c.set_limit("server_daily_spend", "0.24")
            await c.ask("m9")


async def test_usage_csv_sums_to_the_totals_to_the_micro_dollar(open_controlled: Any) -> None:
    async with open_controlled() as c:
        await c.set_limit("member_concurrent", "off")
        await c.ask(
            "a", build_request(model="sora-2-pro", prompt="x", duration=12, resolution="1080p")
        )
        await c.ask("b", build_request(model="Omni-Flash-Ext", prompt="y"))
        await c.ask("a", sora("z"))
        await c.wait_settled()
        report = await c.controls.report(GUILD, "7d")
        rows = list(csv.DictReader(io.StringIO(report.csv())))
        assert len(rows) == 3
        assert sum(Decimal(r["total_usd"]) for r in rows) == Decimal(report.total) / 1_000_000
        assert sum(int(r["jobs"]) for r in rows) == report.jobs == 3
        assert usd(report.total) == "$1.00"  # 0.84 + 0.12 + 0.04


def test_money_is_exact_and_refuses_what_is_not_money() -> None:
    assert parse_usd("0.1") + parse_usd("0.2") == parse_usd("0.3")
    assert from_api(0.1) == 100_000 and from_api(0.84) == 840_000
    assert usd(parse_usd("12.5")) == "$12.50" and usd(123_456, exact=True) == "$0.123456"
    for bad in ("-1", "abc", "1e400", "0.0000001", "nan"):
        with pytest.raises(ValueError):
            parse_usd(bad)


def test_banned_words_ignore_case_and_accents_but_match_whole_words() -> None:
    from bot.core.controls.words import first_banned

    assert first_banned("A CAFÉ at dawn", ["cafe"]) == "cafe"
    assert first_banned("a café", ["CAFE"]) == "CAFE"
    assert first_banned("a cafeteria", ["cafe"]) is None
    assert first_banned("the   red\nfox", ["red fox"]) == "red fox"


def test_role_tiers_take_the_most_generous_value() -> None:
    from bot.core.controls.limits import GuildControls, SettingInvalid, parse_value

    controls = GuildControls(
        limits={"member_daily_spend": parse_value("member_daily_spend", "1")},
        roles={
            "vip": {"member_daily_spend": None, "member_cooldown_seconds": 10},
            "fan": {
                "member_daily_spend": parse_value("member_daily_spend", "5"),
                "member_cooldown_seconds": 60,
            },
        },
    )
    assert controls.member_limit("member_daily_spend") == 1_000_000
    assert controls.member_limit("member_daily_spend", ("fan",)) == 5_000_000
    assert controls.member_limit("member_daily_spend", ("fan", "vip")) is None  # off wins
    assert controls.member_limit("member_cooldown_seconds", ("fan", "vip")) is None  # default off
    controls.limits["member_cooldown_seconds"] = 120
    assert controls.member_limit("member_cooldown_seconds", ("fan", "vip")) == 10  # shortest
    assert controls.member_limit("member_concurrent") == 2  # the default
    for name, bad in (("member_daily_jobs", "-1"), ("member_daily_jobs", "1.5"), ("nope", "1")):
        with pytest.raises(SettingInvalid):
            parse_value(name, bad)
