"""Pure rendering: Discord's limits, timestamps, and the wording members rely on."""

from __future__ import annotations

from bot.core.catalog import CATALOG
from bot.core.job import Job, JobState
from bot.core.request import Problem, RequestInvalid, build_request
from bot.discord import render

NOW = 1_800_000_000.0


def job(**fields: object) -> Job:
    values: dict[str, object] = {
        "id": 7,
        "state": JobState.RUNNING,
        "request": build_request(model="sora-2", prompt="a lighthouse at night", duration=8),
        "created_at": NOW - 100,
        "submitted_at": NOW - 95,
        "requester": "1234",
        "task_id": "task_abc",
        "progress": 42,
        "estimated_time": 600,
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


def done(**fields: object) -> Job:
    base: dict[str, object] = {
        "state": JobState.COMPLETED,
        "progress": 100,
        "finished_at": NOW - 5,
        "video_urls": ["https://cdn.example.com/v.mp4"],
        "expires_at": NOW + 86_400,
        "cost": 0.4,
        "credits_cost": 4.0,
    }
    base.update(fields)
    return job(**base)


def within_limits(rendered: render.Rendered) -> None:
    assert rendered.content is None or len(rendered.content) <= render.CONTENT_LIMIT
    for embed in rendered.embeds:
        assert len(embed.description or "") <= render.DESCRIPTION_LIMIT
        assert len(embed.fields) <= render.FIELD_LIMIT
        assert len(embed.title or "") <= render.TITLE_LIMIT
        assert all(len(f.value or "") <= render.FIELD_VALUE_LIMIT for f in embed.fields)
        assert len(embed) <= 6000


def test_status_shows_model_parameters_bar_elapsed_and_estimate() -> None:
    rendered = render.status(job(), NOW)
    (embed,) = rendered.embeds
    assert "Sora 2" in (embed.title or "")
    text = embed.description or ""
    assert "sora-2 · 8s · 720p · 16:9" in text
    assert "42%" in text and "█" in text
    assert "elapsed 1 min 35 s" in text
    assert "estimates 10 min" in text
    within_limits(rendered)


def test_final_status_is_full_and_coloured() -> None:
    (embed,) = render.status(done(), NOW).embeds
    assert "100%" in (embed.description or "") and "done" in (embed.description or "")
    assert embed.colour == render.COLOUR_DONE
    assert "estimates" not in (embed.description or "")


def test_result_has_link_expiry_cost_and_parameters() -> None:
    rendered = render.result(done(), NOW, attached=False)
    assert rendered.content is not None and rendered.content.startswith("<@1234>")
    (embed,) = rendered.embeds
    assert "https://cdn.example.com/v.mp4" in (embed.description or "")
    assert f"<t:{int(NOW + 86_400)}:R>" in (embed.description or "")
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Cost"] == "0.4 · 4 credits"
    assert (
        fields["Model"] == "sora-2"
        and fields["Duration"] == "8 s"
        and fields["Resolution"] == "720p"
    )
    assert fields["Elapsed"] == "1 min 30 s"
    within_limits(rendered)


def test_zero_cost_reads_not_charged() -> None:
    assert render.cost_text(done(cost=0.0, credits_cost=0.0)) == "not charged"
    assert render.cost_text(done(cost=None, credits_cost=None)) == "not reported"
    assert "may still be billed" in render.cost_text(job(state=JobState.UNKNOWN))


def test_failure_gives_the_reason_and_cost() -> None:
    failed = job(state=JobState.FAILED, finished_at=NOW, cost=0.0, error_message="upstream timeout")
    rendered = render.result(failed, NOW, attached=False)
    assert "could not be made" in (rendered.content or "")
    (embed,) = rendered.embeds
    assert embed.description == "upstream timeout"
    assert {f.name: f.value for f in embed.fields}["Cost"] == "not charged"
    unknown = job(state=JobState.UNKNOWN, finished_at=NOW, error_message="not confirmed")
    assert "not confirmed by APIMart" in (render.failure(unknown, NOW).content or "")


def test_huge_prompts_stay_within_limits() -> None:
    prompt = "@everyone " + "x" * 5000 + "\n" * 50
    big = done(request=build_request(model="sora-2", prompt=prompt))
    for rendered in (
        render.status(big, NOW),
        render.result(big, NOW, attached=True),
        render.details(big),
    ):
        within_limits(rendered)
    assert "\n" not in render.prompt_preview(prompt)


def test_details_lists_what_was_sent_and_the_task() -> None:
    veo = build_request(
        model="veo3.1-fast-official",
        prompt="p",
        seed=3,
        generate_audio=True,
        images=("https://i/1.png",),
    )
    (embed,) = render.details(done(request=veo)).embeds
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Task id"] == "`task_abc`"
    assert fields["seed"] == "3" and fields["generate_audio"] == "True"
    assert fields["images"] == "https://i/1.png"


def test_job_list() -> None:
    jobs = [done(id=i) for i in range(1, 11)] + [job(id=11, video_urls=[])]
    rendered = render.job_list(jobs, NOW)
    text = rendered.embeds[0].description or ""
    assert "**#1**" in text and "[video](https://cdn.example.com/v.mp4)" in text
    assert "42%" in text
    within_limits(rendered)
    expired = render.job_list([done(expires_at=NOW - 1)], NOW).embeds[0].description or ""
    assert "link expired" in expired
    assert "no video jobs" in (render.job_list([], NOW).content or "")


def test_models_lists_every_model() -> None:
    rendered = render.models()
    (embed,) = rendered.embeds
    assert len(embed.fields) == len(CATALOG)
    assert all(any(spec.id in (f.name or "") for f in embed.fields) for spec in CATALOG.values())
    within_limits(rendered)


def test_problems_and_timestamps() -> None:
    text = render.problems(
        RequestInvalid([Problem("resolution", "1080p is not available; use 720p")])
    )
    assert "**resolution**" in text and "720p" in text
    assert render.timestamp(NOW + 0.9) == f"<t:{int(NOW)}:R>"
    assert render.timestamp(NOW, "f") == f"<t:{int(NOW)}:f>"
    assert render.duration_text(3720) == "1 h 2 min"


def test_the_status_message_as_discord_receives_it() -> None:
    """The embed as sent over the wire (what a member's client draws), not the Python object."""
    rendered = render.status(job(), NOW)
    assert rendered.content is None
    (sent,) = [embed.to_dict() for embed in rendered.embeds]
    assert sent["title"] == "🎬 Job #7 · Sora 2"
    assert sent["description"].splitlines() == [
        "> a lighthouse at night",
        "`sora-2 · 8s · 720p · 16:9`",
        "`[████████████░░░░░░░░░░░░░░░░]  42%`",
        "rendering · elapsed 1 min 35 s · APIMart estimates 10 min",
    ]
    assert sent["footer"] == {"text": "task task_abc"}


def test_elapsed_of_a_finished_job_is_its_recorded_run_time() -> None:
    """After a restart, `now` and `finished_at` say nothing about how long the video took."""
    finished = done(run_seconds=42.0, finished_at=NOW + 3 * 3600)
    fields = {
        f.name: f.value for f in render.result(finished, NOW, attached=False).embeds[0].fields
    }
    assert fields["Elapsed"] == "42 s"
    assert "elapsed 42 s" in (render.status(finished, NOW + 5 * 3600).embeds[0].description or "")
    failed = job(state=JobState.FAILED, finished_at=NOW - 35, cost=0.0)
    assert "elapsed 1 min" in (render.status(failed, NOW + 3600).embeds[0].description or "")


def test_details_of_a_huge_request_stay_well_under_discords_total() -> None:
    veo = build_request(
        model="veo3.1-fast-official",
        prompt="y" * 6000,
        negative_prompt="n" * 1500,
        images=("https://i/1.png", "https://i/2.png"),
        seed=3,
    )
    failed = done(request=veo, state=JobState.FAILED, error_message="e" * 2000)
    rendered = render.details(failed)
    within_limits(rendered)
    (embed,) = rendered.embeds
    assert len(embed) <= 5500
    assert (embed.description or "").startswith("**Prompt**\nyyy")
    assert (embed.description or "").endswith("…")
    short = render.details(done()).embeds[0].description
    assert short == "**Prompt**\na lighthouse at night"
