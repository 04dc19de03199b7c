"""The re-roll rules, in the core, without any front end: who, when, and once per click.

`tests/test_commands.py` shows them through Discord; here the edges are pinned exactly (the
margins before a lifetime ends, the guard window on the injected clock), which a front end
other than Discord gets the same way.
"""

from __future__ import annotations

import pytest

from bot.core.catalog import ATTACHMENT_LIFETIME_S, HOUR, UPLOAD_LIFETIME_S
from bot.core.job import Job, JobState
from bot.core.jobs import Origin
from bot.core.request import build_request
from bot.core.reroll import (
    ATTACHMENT_MAX_AGE,
    NOT_REQUESTER,
    REROLL_GUARD_S,
    UNKNOWN_JOB,
    UNKNOWN_NO_REROLL,
    UPLOAD_MAX_AGE,
    RerollGuard,
    offers_reroll,
    refusal,
)
from bot.testing.clock import ManualClock

NOW = 1_800_000_000.0
ALICE = "111"


def _job(*, media_at: float = NOW, state: JobState = JobState.COMPLETED, **fields: object) -> Job:
    request = build_request(model="Omni-Flash-Ext", prompt="a boat", **fields)  # type: ignore[arg-type]
    origin = Origin(kind="test", media_at=media_at).as_dict()
    return Job(1, state, request, created_at=NOW, origin=origin, requester=ALICE)


def test_only_the_requester_and_never_an_unknown_job() -> None:
    assert refusal(None, ALICE, NOW) == UNKNOWN_JOB
    assert refusal(_job(), "222", NOW) == NOT_REQUESTER
    assert refusal(_job(state=JobState.UNKNOWN), ALICE, NOW) == UNKNOWN_NO_REROLL
    assert not offers_reroll(_job(state=JobState.UNKNOWN))
    assert refusal(_job(), ALICE, NOW) is None and offers_reroll(_job())


def test_images_may_be_reused_until_shortly_before_apimart_deletes_them() -> None:
    job = _job(images=("https://upload.example/a.png",), media_at=NOW - UPLOAD_MAX_AGE)
    assert UPLOAD_MAX_AGE < UPLOAD_LIFETIME_S
    assert refusal(job, ALICE, NOW) is None
    too_old = refusal(job, ALICE, NOW + 1)
    assert too_old is not None
    assert f"keeps uploads only {UPLOAD_LIFETIME_S // HOUR} hours" in too_old
    assert "/video omni" in too_old


def test_a_reference_video_may_be_reused_only_while_its_link_lives() -> None:
    job = _job(video_url="https://cdn.example/m.mp4", media_at=NOW - ATTACHMENT_MAX_AGE)
    assert ATTACHMENT_MAX_AGE < ATTACHMENT_LIFETIME_S
    assert refusal(job, ALICE, NOW) is None
    too_old = refusal(job, ALICE, NOW + 1)
    assert too_old is not None and "reference video" in too_old
    # Text-only jobs have nothing that expires.
    assert refusal(_job(media_at=NOW - 10 * UPLOAD_LIFETIME_S), ALICE, NOW) is None


async def test_the_guard_holds_one_click_per_job_and_member_on_the_injected_clock() -> None:
    clock = ManualClock(NOW)
    guard = RerollGuard(clock)
    first = guard.claim(1, ALICE)
    assert first is not None
    assert guard.claim(1, ALICE) is None  # the double click
    assert guard.claim(1, "222") is not None  # another member
    assert guard.claim(2, ALICE) is not None  # another job
    first.release(started=True)
    assert guard.claim(1, ALICE) is None  # started: still held for the window
    await clock.advance(REROLL_GUARD_S)
    assert guard.claim(1, ALICE) is not None


def test_a_refused_click_does_not_hold_the_guard() -> None:
    guard = RerollGuard(ManualClock(NOW))
    claim = guard.claim(1, ALICE)
    assert claim is not None
    claim.release(started=False)
    assert guard.claim(1, ALICE) is not None


@pytest.mark.parametrize("kind", ["discord", "cli"])
def test_origin_leaves_out_what_a_front_end_did_not_set(kind: str) -> None:
    assert Origin(kind=kind).as_dict() == {"kind": kind}
    full = Origin(kind=kind, channel_id="5", upload_limit=8, media_at=NOW).as_dict()
    assert full == {"kind": kind, "channel_id": "5", "upload_limit": 8, "media_at": NOW}
