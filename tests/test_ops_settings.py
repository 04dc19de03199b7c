"""Operations settings and logs: HTTP_LISTEN, LOG_FORMAT, SHARD_COUNT/SHARD_IDS."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.config import Settings, SettingsError, load_settings, parse_shard_ids
from bot.core.logs import REDACTED, JsonFormatter, Redactor, TextFormatter


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name in ("HTTP_LISTEN", "WEBHOOK_LISTEN", "SHARD_COUNT", "SHARD_IDS", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    return str(caught.value)


# -- HTTP_LISTEN ---------------------------------------------------------------------------


def test_http_listen_defaults_to_every_interface_on_8080() -> None:
    assert settings().http_listen == ("0.0.0.0", 8080)
    assert settings(HTTP_LISTEN="127.0.0.1:0").http_listen == ("127.0.0.1", 0)
    assert settings(HTTP_LISTEN="[::1]:9000").http_listen == ("::1", 9000)


def test_a_bad_http_listen_is_named_with_an_example(monkeypatch: pytest.MonkeyPatch) -> None:
    text = problems(monkeypatch, HTTP_LISTEN="8080")
    assert "HTTP_LISTEN" in text and "HOST:PORT, for example 0.0.0.0:8080" in text
    assert "HTTP_LISTEN" in problems(monkeypatch, HTTP_LISTEN="0.0.0.0:70000")


def test_webhook_listen_still_works_as_a_deprecated_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = settings(WEBHOOK_LISTEN="127.0.0.1:9001")
    assert old.http_listen == ("127.0.0.1", 9001) and old.listen_deprecated
    assert not settings(HTTP_LISTEN="127.0.0.1:9001").listen_deprecated
    same = settings(WEBHOOK_LISTEN="127.0.0.1:9001", HTTP_LISTEN="127.0.0.1:9001")
    assert same.http_listen == ("127.0.0.1", 9001)
    text = problems(monkeypatch, WEBHOOK_LISTEN="0.0.0.0:9001", HTTP_LISTEN="0.0.0.0:8080")
    assert "WEBHOOK_LISTEN is replaced by HTTP_LISTEN" in text


# -- sharding ------------------------------------------------------------------------------


def test_shard_ids_take_ranges_and_lists() -> None:
    assert parse_shard_ids("0-3", 8) == [0, 1, 2, 3]
    assert parse_shard_ids("0,2,5", 8) == [0, 2, 5]
    assert parse_shard_ids(" 6-7, 0 ,1-2", 8) == [0, 1, 2, 6, 7]
    assert parse_shard_ids(None, 3) == [0, 1, 2]
    assert settings(SHARD_COUNT="4", SHARD_IDS="1-2").shard_ids == [1, 2]
    assert settings(SHARD_COUNT="2").shard_ids == [0, 1]
    assert settings().shard_ids is None  # unsharded: one process, as before
    assert settings(SHARD_COUNT="", SHARD_IDS="").shard_ids is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SHARD_COUNT": "4", "SHARD_IDS": "0-4"}, "shard 4 does not exist with SHARD_COUNT=4"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "7"}, "(allowed: 0-3)"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "3-1"}, "runs backwards"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "one"}, "use e.g. 0-3 or 0,2,5"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "1,,2"}, "use e.g. 0-3 or 0,2,5"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "-1"}, "use e.g. 0-3 or 0,2,5"),
        ({"SHARD_IDS": "0-3"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT"),
        ({"SHARD_COUNT": "5000"}, "needs SHARD_IDS"),
    ],
)
def test_bad_shard_settings_say_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    assert expected in problems(monkeypatch, **env)


# -- logs ----------------------------------------------------------------------------------

SECRET = "sk-live-0123456789abcdef"


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("bot.core.poller", logging.ERROR, __file__, 1, message, args, exc_info)


def test_json_logs_are_one_object_per_line_with_the_traceback_inside() -> None:
    try:
        raise RuntimeError(f"API said: bad key {SECRET}")
    except RuntimeError as exc:
        caught = exc
    line = JsonFormatter(Redactor([SECRET])).format(
        record("job %s: poll failed\nsecond line", 7, exc=caught)
    )
    assert "\n" not in line
    event = json.loads(line)
    assert event["level"] == "ERROR"
    assert event["logger"] == "bot.core.poller"
    assert event["message"] == "job 7: poll failed\nsecond line"
    assert event["time"].endswith("+00:00")
    assert "Traceback" in event["exc_info"] and "RuntimeError" in event["exc_info"]
    assert SECRET not in line and REDACTED in event["exc_info"]


def test_text_logs_redact_secrets_too() -> None:
    line = TextFormatter(Redactor([SECRET, "short"])).format(record("echo %s", SECRET))
    assert SECRET not in line and REDACTED in line
    assert Redactor(["abc"]).secrets == []  # too short to redact without garbling the log


@pytest.mark.e2e  # a real `reelbot generate` process
def test_log_format_json_end_to_end(tmp_path: Path) -> None:
    """`reelbot generate` with LOG_FORMAT=json: every line on stderr is one JSON event."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIMART_", "DISCORD_"))}
    env.update(LOG_FORMAT="json", LOG_LEVEL="DEBUG", APIMART_API_KEY=SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "--fake", "a fox", "--model", "sora-2", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "DEBUG logs expected"
    events = [json.loads(line) for line in lines if not line.startswith("\r")]
    assert {"time", "level", "logger", "message"} <= set(events[0])
    assert SECRET not in done.stderr and SECRET not in done.stdout


def test_log_format_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(LOG_FORMAT="JSON").LOG_FORMAT == "json"
    text = problems(monkeypatch, LOG_FORMAT="xml")
    assert "LOG_FORMAT" in text and "'text' or 'json'" in text
