"""`reelbot` as a user runs it: real subprocesses, real HTTP to a stand-in API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan

#: Every test here starts a real `reelbot` process: left out of the fast loop.
pytestmark = pytest.mark.e2e

KEY = "sk-cli-test-key-abcdef"
JSON_KEYS = {
    "task_id",
    "status",
    "video_urls",
    "expires_at",
    "cost",
    "credits_cost",
    "elapsed_s",
    "error",
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 128


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("APIMART_", "DISCORD_", "POLL_"))
    }
    env.update(extra)
    return env


async def reelbot(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=_env(**env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(name="served")
def served_fixture(aiohttp_server: Any) -> Any:
    async def serve(fake: FakeApimart) -> dict[str, str]:
        server = await aiohttp_server(fake.app)
        return {
            "APIMART_BASE_URL": str(server.make_url("")).rstrip("/"),
            "APIMART_API_KEY": KEY,
            "POLL_INITIAL_DELAY": "0.1",
            "POLL_INTERVAL": "0.1",
            "POLL_MAX_INTERVAL": "0.5",
            "DATABASE_URL": "sqlite:///./data/cli.db",
        }

    return serve


async def test_offline_demo_prints_one_json_result(tmp_path: Path) -> None:
    code, out, err = await reelbot(
        "generate",
        "--fake",
        "a red fox in snow",
        "--model",
        "sora-2",
        "--duration",
        "4",
        "--json",
        cwd=tmp_path,
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == JSON_KEYS
    assert result["status"] == "completed"
    assert result["video_urls"] and result["video_urls"][0].startswith("http://127.0.0.1")
    assert result["cost"] > 0 and result["credits_cost"] > 0
    assert result["error"] is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--model", "sora-2", "--duration", "5"],
            "duration: 5 is not allowed for sora-2; use 4, 8, 12, 16 or 20",
        ),
        (
            ["--model", "sora-2", "--resolution", "1080p"],
            "resolution: 1080p is not available on sora-2; use 720p",
        ),
        (
            ["--model", "Omni-Flash-Ext", "-i", "https://x/a.png", "-i", "https://x/b.png"],
            "0, 1 or 3 images",
        ),
        (["--model", "veo3.1-fast-official", "--seed", "-4"], "seed: -4 is out of range"),
        (["--model", "sora-2", "-i", "missing.png"], "missing.png: no such file"),
    ],
)
async def test_invalid_input_exits_2_and_sends_nothing(
    tmp_path: Path, served: Any, args: list[str], fragment: str
) -> None:
    fake = FakeApimart(api_key=KEY)
    env = await served(fake)
    code, _out, err = await reelbot("generate", "a prompt", *args, cwd=tmp_path, **env)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
    assert fake.requests == []


async def test_a_pdf_renamed_png_is_refused(tmp_path: Path, served: Any) -> None:
    (tmp_path / "cat.png").write_bytes(b"%PDF-1.7 not an image")
    fake = FakeApimart(api_key=KEY)
    env = await served(fake)
    code, _, err = await reelbot(
        "generate", "p", "--model", "sora-2", "-i", "cat.png", cwd=tmp_path, **env
    )
    assert code == 2 and "jpeg, png or webp" in err
    assert fake.requests == []


async def test_missing_and_invalid_settings_are_listed_together(tmp_path: Path) -> None:
    code, _, err = await reelbot(
        "generate", "p", cwd=tmp_path, POLL_INTERVAL="soon", LOG_LEVEL="LOUD"
    )
    assert code == 2
    assert "POLL_INTERVAL" in err and "LOG_LEVEL" in err and "APIMART_API_KEY is missing" in err
    assert "Traceback" not in err


async def test_generate_against_any_documented_server_with_a_local_image(
    tmp_path: Path, served: Any
) -> None:
    (tmp_path / "frame.png").write_bytes(PNG)
    fake = FakeApimart(api_key=KEY, time_scale=500)
    env = await served(fake)
    code, out, err = await reelbot(
        "generate",
        "a paper boat",
        "--model",
        "veo3.1-fast-official",
        "--duration",
        "4",
        "-i",
        "frame.png",
        "--resize",
        "crop",
        "--audio",
        "--json",
        cwd=tmp_path,
        **env,
    )
    assert code == 0, err
    assert len(fake.uploads) == 1
    body = fake.submits[0]
    assert body["first_frame_image"].startswith("http") and body["resize_mode"] == "crop"
    assert body["generate_audio"] is True and body["duration"] == 4
    result = json.loads(out)
    assert result["status"] == "completed" and result["elapsed_s"] == pytest.approx(240, abs=5)
    assert KEY not in out + err


async def test_failed_task_exits_1_refusal_exits_3(tmp_path: Path, served: Any) -> None:
    fake = FakeApimart(api_key=KEY, time_scale=500)
    env = await served(fake)
    fake.plan_next(FakeTaskPlan(fail=True, error_message="content moderation"))
    code, out, _ = await reelbot("generate", "p", "--json", cwd=tmp_path, **env)
    assert code == 1
    assert json.loads(out)["error"] == "content moderation"

    fake.inject("submit", 402, error_type="payment_required")
    code, out, err = await reelbot("generate", "p", cwd=tmp_path, **env)
    assert code == 3 and "balance" in out

    env["APIMART_API_KEY"] = "sk-wrong"
    code, out, err = await reelbot("generate", "p", cwd=tmp_path, **env)
    assert code == 3 and "APIMART_API_KEY" in out
    assert "sk-wrong" not in out + err


async def test_unreachable_api_exits_3(tmp_path: Path) -> None:
    code, out, _err = await reelbot(
        "generate",
        "p",
        "--json",
        cwd=tmp_path,
        APIMART_API_KEY=KEY,
        APIMART_BASE_URL="http://127.0.0.1:9",
        API_TIMEOUT="2",
    )
    assert code == 3
    assert json.loads(out)["status"] in {"failed", "unknown"}


async def test_models_lists_the_catalog(tmp_path: Path) -> None:
    code, out, _ = await reelbot("models", cwd=tmp_path)
    assert code == 0
    for model in (
        "Omni-Flash-Ext",
        "veo3.1-fast-official",
        "veo3.1-quality-official",
        "sora-2",
        "sora-2-pro",
    ):
        assert model in out


async def test_check_shows_the_balance(tmp_path: Path, served: Any) -> None:
    env = await served(FakeApimart(api_key=KEY, balance=12.5))
    code, out, _ = await reelbot("check", cwd=tmp_path, **env)
    assert code == 0 and "12.5" in out


async def test_a_database_password_is_never_echoed(tmp_path: Path) -> None:
    code, _, err = await reelbot(
        "generate",
        "p",
        cwd=tmp_path,
        APIMART_API_KEY=KEY,
        DATABASE_URL="mysql://bot:Hunter2Pass@db/reel",
    )
    assert code == 2 and "DATABASE_URL" in err
    assert "Hunter2Pass" not in err


async def test_completed_without_a_link_is_not_success(tmp_path: Path, served: Any) -> None:
    fake = FakeApimart(api_key=KEY)
    env = await served(fake)
    done = {"code": 200, "data": {"id": "t", "status": "completed", "progress": 100, "cost": 0.1}}
    fake.inject("task", 200, body=json.dumps(done), times=100)
    code, out, _ = await reelbot("generate", "p", "--json", cwd=tmp_path, **env)
    assert code == 1
    assert "sent no link" in json.loads(out)["error"]


async def test_the_operators_cap_refuses_in_the_terminal_too(tmp_path: Path) -> None:
    """OPERATOR_DAILY_SPEND applies to `generate` (priced from PRICES_FILE): refused, nothing sent."""
    (tmp_path / "prices.toml").write_text('[sora-2]\n"720p" = 0.01\n')
    code, out, err = await reelbot(
        "generate",
        "--fake",
        "a red fox in snow",
        "--model",
        "sora-2",
        "--duration",
        "8",
        "--json",
        cwd=tmp_path,
        OPERATOR_DAILY_SPEND="0.05",
        PRICES_FILE=str(tmp_path / "prices.toml"),
    )
    assert code == 3, err
    outcome = json.loads(out)
    assert outcome["status"] == "refused" and outcome["task_id"] is None
    assert "$0.08" in outcome["error"] and "daily spending limit ($0.05)" in outcome["error"]
    assert "UTC" in outcome["error"] and "<t:" not in outcome["error"]


async def test_a_bad_prices_file_is_a_settings_problem(tmp_path: Path) -> None:
    (tmp_path / "prices.json").write_text('{"sora-2": {"4k": 0.01}}')
    code, _, err = await reelbot(
        "generate",
        "--fake",
        "x",
        "--model",
        "sora-2",
        cwd=tmp_path,
        PRICES_FILE=str(tmp_path / "prices.json"),
    )
    assert code == 2
    assert "PRICES_FILE" in err and "sora-2 offers 720p, not 4k" in err
