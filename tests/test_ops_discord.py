"""The Discord front end's part in operations: REST errors counted, gateway readiness.

Real discord.py objects (simcord); the metrics are read as Prometheus would read them.
"""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from bot.core.job import Job, JobState
from bot.core.runtime import Runtime
from bot.testing.fake_apimart import FakeTaskPlan
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)


def rest_errors(runtime: Runtime) -> dict[str, float]:
    text = runtime.metrics.render().decode()
    return {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "reelbot_discord_rest_errors_total"
    }


async def failed_job(reel: Reel) -> Job:
    reel.fake.plan_next(FakeTaskPlan(duration_s=36_000))
    await reel.alice.slash(reel.channel, "video sora", prompt="a quiet lake")
    job = (await reel.runtime.store.recent())[0]
    return dataclasses.replace(
        job, state=JobState.FAILED, error_message="upstream timeout", finished_at=job.created_at
    )


async def test_discord_rest_errors_caught_by_the_notifier_are_counted(reel: Reel) -> None:
    assert rest_errors(reel.runtime) == {}
    job = await failed_job(reel)
    assert reel.bot.notifier is not None
    reel.env.inject_error(
        "POST", "/channels/*/messages", status=403, code=50013, message="Missing Permissions"
    )
    await reel.bot.notifier.job_finished(job)  # refused: answered through the interaction
    reel.env.inject_error(
        "*", "/channels/*", status=404, code=10003, message="Unknown Channel", times=None
    )
    await reel.bot.notifier.job_finished(job)  # the channel is gone: logged, counted
    await reel.env.settle()
    counted = rest_errors(reel.runtime)
    assert counted.get("403") == 1
    assert counted.get("404", 0) >= 1


async def test_the_bot_reports_its_gateway_to_readiness(reel: Reel) -> None:
    results = await reel.runtime.readiness.evaluate()
    assert results["gateway"] is None  # simcord's bot is connected and ready
    await reel.bot.close()
    results = await reel.runtime.readiness.evaluate()
    assert results["gateway"] == "the Discord connection is closed"
