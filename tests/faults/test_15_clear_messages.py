"""Issue 8 item 15: one clear line and an exit code instead of a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.core.apimart import TaskInfo
from bot.core.job import Job, JobState
from bot.core.request import build_request
from bot.terminal.generate import format_outcome
from bot.testing.fake_apimart import FakeApimart

KEY = "sk-clear-messages-key-0123"
PG_PASSWORD = "not-the-password-4711"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APIMART_", "DISCORD_", "DATABASE_", "WEBHOOK_"))
    }
    env.update(APIMART_API_KEY=KEY, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    env.update(extra)
    return env


async def _run(env: dict[str, str], cwd: Path, *args: str | bytes) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode("utf-8", "replace")


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("where", ["under-a-file", "pg-wrong-password", "pg-unreachable"])
async def test_a_database_that_cannot_be_opened_is_one_line_naming_database_url(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    pg = os.environ.get("REELBOT_TEST_POSTGRES_URL", "postgresql://reelbot@127.0.0.1:5432/x")
    host_part = pg.split("@", 1)[1]
    urls = {
        "under-a-file": f"sqlite:///{tmp_path / 'afile' / 'jobs.db'}",
        "pg-wrong-password": f"postgresql://reelbot:{PG_PASSWORD}@{host_part}",
        "pg-unreachable": f"postgresql://reelbot:{PG_PASSWORD}@127.0.0.1:1/reelbot",
    }
    if where == "pg-wrong-password" and "REELBOT_TEST_POSTGRES_URL" not in os.environ:
        pytest.skip("PostgreSQL: set REELBOT_TEST_POSTGRES_URL")
    env = _env(tmp_path, DATABASE_URL=urls[where])
    for command in (["jobs"], ["generate", "a fox", "--duration", "4"]):
        code, _, err = await _run(env, tmp_path, *command)
        line = _one_clear_line(err)
        assert code == 2 and "DATABASE_URL" in line
        assert PG_PASSWORD not in err and "afile" not in err


@pytest.mark.parametrize("kind", ["fifo", "proc", "folder"])
async def test_an_image_that_is_not_a_readable_file_is_refused_locally(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "frame.png"
        os.mkfifo(path)
    elif kind == "proc":
        path = Path("/proc/self/mem")  # a "regular" file whose read fails (EIO)
    else:
        path = tmp_path
    code, _, err = await _run(
        _env(tmp_path), tmp_path, "generate", "a fox", "--image", str(path), "--duration", "4"
    )
    line = _one_clear_line(err)
    assert code == 2 and line.startswith("error: image")
    why = "cannot be read" if kind == "proc" else "not a regular file"
    assert why in line  # says what is wrong, not "no such file"


def test_an_unreadable_image_says_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.core.request import RequestInvalid
    from bot.terminal import cli

    path = tmp_path / "frame.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)  # root reads anything: simulate the refusal
    with pytest.raises(RequestInvalid, match="permission denied"):
        cli._read_image(str(path))


async def test_invalid_utf8_in_a_prompt_is_refused_before_anything_is_sent(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    fake = FakeApimart(api_key=KEY)
    server = await aiohttp_server(fake.app)
    env = _env(tmp_path, APIMART_BASE_URL=str(server.make_url("")).rstrip("/"))
    code, _, err = await _run(env, tmp_path, "generate", b"a fox \xff\xfe", "--duration", "4")
    assert code == 2 and "prompt" in err and "UTF-8" in err and "Traceback" not in err
    assert fake.submit_attempts == []


async def test_a_busy_port_for_fake_api_or_the_webhook_is_one_line(tmp_path: Path) -> None:
    sock, port = _busy_port()
    try:
        code, _, err = await _run(_env(tmp_path), tmp_path, "fake-api", "--port", str(port))
        assert code == 2 and str(port) in _one_clear_line(err)
        env = _env(
            tmp_path,
            DISCORD_TOKEN="a.b.c",
            DISCORD_API_BASE="http://127.0.0.1:1/api/v10",
            WEBHOOK_PUBLIC_URL="https://example.org/hook",
            WEBHOOK_LISTEN=f"127.0.0.1:{port}",
            LOG_LEVEL="ERROR",
        )
        code, _, err = await _run(env, tmp_path, "run")
        # The settings error's usual shape: the one setting to fix, no traceback.
        assert code == 2 and "WEBHOOK_LISTEN: cannot listen" in err and "Traceback" not in err
    finally:
        sock.close()


@pytest.mark.parametrize("command", [["sync", "--guild", "1"], ["run"]])
async def test_discord_unreachable_is_one_line_and_exit_3(
    tmp_path: Path, command: list[str]
) -> None:
    env = _env(
        tmp_path,
        DISCORD_TOKEN="a.b.c",
        DISCORD_API_BASE="http://127.0.0.1:1/api/v10",
        DISCORD_GATEWAY_URL="ws://127.0.0.1:1/",
        LOG_LEVEL="ERROR",
    )
    code, _, err = await _run(env, tmp_path, *command)
    assert code == 3 and "Discord could not be reached" in _one_clear_line(err)


@pytest.mark.parametrize("absurd", [-1, 1e300, "NaN", float("inf")])
def test_absurd_costs_and_expiry_are_unknown_not_money(absurd: Any) -> None:
    info = TaskInfo.from_api(
        {
            "id": "task_1",
            "status": "completed",
            "cost": absurd,
            "credits_cost": absurd,
            "result": {"videos": [{"url": ["https://cdn.example.com/v.mp4"], "expires_at": 1e300}]},
        }
    )
    assert info.cost is None and info.credits_cost is None and info.expires_at is None
    job = Job(
        id=1,
        state=JobState.COMPLETED,
        request=build_request(model="sora-2", prompt="p"),
        created_at=1.0,
        task_id="task_1",
        video_urls=["https://cdn.example.com/v.mp4"],
        cost=1e300,
        expires_at=1e300,  # a row an older release stored: no OverflowError, no money
    )
    text = format_outcome(job)
    assert "1e+300" not in text and "cost     unknown" in text
