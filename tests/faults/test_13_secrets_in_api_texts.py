"""Issue 8 item 13: secrets inside APIMart's error texts are scrubbed before stored or shown."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

from bot.core.config import Settings
from bot.core.job import JobState
from bot.core.request import build_request
from bot.core.runtime import open_runtime
from bot.testing.fake_apimart import FakeApimart
from bot.testing.notifier import RecordingNotifier
from tests.conftest import API_KEY

DISCORD_TOKEN = "MTE0.discord-bot-token.secretpart"
OTHER_BEARER = "sk-live-someoneelses-123456789"


def _echo(key: str) -> str:
    return (
        f"upstream 401: Authorization: Bearer {OTHER_BEARER}; sent key {key}; "
        f"as a URL ?key={quote(key, safe='')}&k2={quote_plus(key)}; bot token {DISCORD_TOKEN}\x00"
    )


def _leaks(text: str) -> list[str]:
    needles = [API_KEY, quote(API_KEY, safe=""), OTHER_BEARER, DISCORD_TOKEN, "\x00"]
    return [n for n in needles if n in text]


async def test_task_and_refusal_errors_lose_every_secret(
    fake: FakeApimart, api_url: str, tmp_path: Path
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        APIMART_API_KEY=SecretStr(API_KEY),
        APIMART_BASE_URL=api_url,
        DISCORD_TOKEN=SecretStr(DISCORD_TOKEN),
        DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
        POLL_INITIAL_DELAY=0.05,
        POLL_INTERVAL=0.05,
        POLL_MAX_INTERVAL=0.1,
    )
    notifier = RecordingNotifier()
    async with open_runtime(settings, notifier) as runtime:
        failed = await runtime.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        assert failed.task_id is not None
        fake.fail_now(failed.task_id, message=_echo(API_KEY))
        told = await notifier.wait_finished(failed.id, timeout=10)
        assert told.state is JobState.FAILED and "upstream 401" in (told.error_message or "")
        fake.inject("submit", 400, body=json.dumps({"error": {"message": _echo(API_KEY)}}))
        refused = await runtime.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        assert refused.state is JobState.FAILED
        shown = [told.error_message or "", refused.error_message or ""]
        stored = [await runtime.store.get(j.id) for j in (failed, refused)]
        shown += [(job.error_message or "") for job in stored if job is not None]
    for text in shown:
        assert text and not _leaks(text), text


def test_a_key_percent_encoded_in_any_way_is_scrubbed() -> None:
    """A proxy may encode every byte (`%2D` for `-`, lower-case hex, twice): still the key."""
    from bot.core.scrub import register_secret, scrub

    key = "sk-hostile-SECRET_0123.456~789"
    register_secret(key)
    every_byte = "".join(f"%{b:02X}" for b in key.encode())
    texts = [
        f"key%3D{key.replace('-', '%2D')}",
        f"key={key.replace('-', '%2d').replace('_', '%5f')}",
        f"key={every_byte}",
        f"key={every_byte.lower()}",
        f"key={every_byte.replace('%', '%25')}",
    ]
    for text in texts:
        out = scrub(text) or ""
        assert "SECRET" not in out and "0123" not in out, (text, out)
        assert out.startswith("key") and "***" in out
    assert scrub("sk-hostile, nothing else") == "sk-hostile, nothing else"
