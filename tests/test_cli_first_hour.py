"""The first hour of a new operator at the terminal: real `reelbot` processes, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from bot import app
from bot.terminal.cli import API_FIELD_FLAGS
from bot.testing.fake_apimart import FakeApimart
from tests.test_cli import KEY, reelbot, served_fixture  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------- settings and `check`


async def test_a_copied_env_example_gets_a_message_not_a_traceback(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    code, out, err = await reelbot("check", cwd=tmp_path)
    assert code == 2
    assert "APIMART_API_KEY is missing" in err
    assert "Traceback" not in err + out


async def test_check_names_its_files_and_warns_about_an_empty_discord_token(
    tmp_path: Path, served: Any
) -> None:
    env = await served(FakeApimart(api_key=KEY, balance=7))
    (tmp_path / ".env").write_text(f"APIMART_API_KEY={KEY}\nDISCORD_TOKEN=\n")
    del env["APIMART_API_KEY"]
    del env["DATABASE_URL"]
    code, out, err = await reelbot("check", cwd=tmp_path, **env)
    assert code == 0, err
    assert f".env      {tmp_path / '.env'}" in out
    database = tmp_path / "user-data" / "reelbot" / "reelbot.db"
    assert f"database  SQLite file {database}" in out
    assert f"APIMart   {env['APIMART_BASE_URL']}" in out
    assert "balance   7" in out
    assert "DISCORD_TOKEN is not set" in err and "`reelbot run`" in err
    assert KEY not in out + err


async def test_check_names_the_url_it_could_not_reach(tmp_path: Path) -> None:
    code, _, err = await reelbot(
        "check",
        cwd=tmp_path,
        APIMART_API_KEY=KEY,
        APIMART_BASE_URL="http://127.0.0.1:9",
        API_TIMEOUT="2",
    )
    assert code == 3
    assert "could not reach APIMart at http://127.0.0.1:9" in err
    assert "APIMART_BASE_URL" in err


async def test_check_with_a_wrong_key_says_what_to_fix(tmp_path: Path, served: Any) -> None:
    env = await served(FakeApimart(api_key=KEY))
    env["APIMART_API_KEY"] = "sk-wrong-key"
    code, out, err = await reelbot("check", cwd=tmp_path, **env)
    assert code == 3
    assert f"APIMart at {env['APIMART_BASE_URL']} refused APIMART_API_KEY" in err
    assert "sk-wrong-key" not in out + err


async def test_an_empty_balance_is_worded_for_the_operator(tmp_path: Path, served: Any) -> None:
    fake = FakeApimart(api_key=KEY)
    env = await served(fake)
    fake.inject("submit", 402, error_type="payment_required")
    code, out, err = await reelbot("generate", "p", cwd=tmp_path, **env)
    assert code == 3
    assert "top up" in out and env["APIMART_BASE_URL"] in out
    assert "operator has been alerted" not in out + err
    fake.inject("submit", 402, error_type="payment_required")
    code, out, _ = await reelbot("generate", "p", "--json", cwd=tmp_path, **env)
    assert code == 3 and "top up" in json.loads(out)["error"]


# --------------------------------------------------------------- parser


async def test_an_unknown_model_gets_one_line_with_a_suggestion(
    tmp_path: Path, served: Any
) -> None:
    fake = FakeApimart(api_key=KEY)
    env = await served(fake)
    code, _out, err = await reelbot("generate", "p", "--model", "sora2", cwd=tmp_path, **env)
    assert code == 2
    assert err.strip() == "error: --model: unknown model 'sora2'; did you mean sora-2?"
    assert fake.requests == []


async def test_model_ids_are_case_insensitive(tmp_path: Path) -> None:
    code, out, err = await reelbot(
        "generate", "--fake", "p", "--model", "SORA-2", "--duration", "4", "--json", cwd=tmp_path
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"


async def test_a_mistyped_option_shows_the_subcommands_usage(tmp_path: Path) -> None:
    code, _, err = await reelbot("generate", "p", "--modle", "sora-2", cwd=tmp_path)
    assert code == 2
    assert err.startswith("usage: reelbot generate ")
    assert "unrecognized arguments: --modle sora-2 (did you mean --model?)" in err


async def test_a_mistyped_command_gets_a_suggestion(tmp_path: Path) -> None:
    code, _, err = await reelbot("generat", "p", cwd=tmp_path)
    assert code == 2 and "unknown command 'generat' (did you mean generate?)" in err


async def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    code, out, _ = await reelbot("--version", cwd=tmp_path)
    assert code == 0 and out.strip() == f"reelbot {version('reelbot')}"


def test_every_subcommand_has_a_description_and_fake_api_shows_defaults() -> None:
    commands = app.commands(app._parser())
    for name, parser in commands.items():
        assert parser.description, name
    fake_help = commands["fake-api"].format_help()
    assert "(default: 8765)" in fake_help and "(default: 127.0.0.1)" in fake_help
    assert "any non-empty key" in fake_help and "(default: None)" not in fake_help
    generate_help = commands["generate"].format_help()
    assert "exit codes:" in generate_help and "APIMART_API_KEY" in generate_help
    for line in ("0  completed", "1  the task failed", "2  invalid input", "3  APIMart refused"):
        assert line in generate_help


def test_the_readme_synopsis_matches_the_parser() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    synopsis = readme.split("## Command line", 1)[1].split("```", 2)[1]
    commands = app.commands(app._parser())
    for name, parser in commands.items():
        assert f"reelbot {name}" in synopsis, name
        for action in parser._actions:
            longest = max(action.option_strings, key=len, default=None)
            if longest and longest != "--help":
                assert longest in synopsis, f"{name} {longest}"
    assert "[--model ID]" in synopsis  # it has a default


def test_models_shows_the_cli_option_beside_each_api_field() -> None:
    from bot.terminal.cli import models_text

    text = models_text()
    for field, option in [
        ("sample_count", "--samples"),
        ("person_generation", "--people"),
        ("resize_mode", "--resize"),
        ("enhance_prompt", "--enhance-prompt"),
        ("generation_type", "--mode"),
    ]:
        assert f"{field} ({option})" in text
    commands = app.commands(app._parser())
    options = {o for a in commands["generate"]._actions for o in a.option_strings}
    assert set(API_FIELD_FLAGS.values()) <= options


# --------------------------------------------------------------- the offline demo


async def test_the_fake_result_says_its_link_is_a_stand_in(tmp_path: Path) -> None:
    code, out, err = await reelbot(
        "generate", "--fake", "a fox", "--model", "sora-2", "--duration", "4", cwd=tmp_path
    )
    assert code == 0, err
    assert "stand-in link" in out and "no real video" in out
    elapsed = next(line for line in out.splitlines() if "elapsed" in line)
    seconds = int(elapsed.split()[1])
    assert seconds < 30  # the real wall time (about 2 s), not the simulated 4 minutes
    assert "(the stand-in simulated 240 s)" in elapsed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _fake_api(tmp_path: Path, *extra: str) -> tuple[asyncio.subprocess.Process, str]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "fake-api",
        "--port",
        str(port),
        *extra,
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines = []
    while len(lines) < 5:
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
    banner = "".join(lines)
    for _ in range(100):  # until it listens
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    return proc, banner


async def test_fake_api_prints_what_to_use_and_accepts_any_key(tmp_path: Path) -> None:
    proc, banner = await _fake_api(tmp_path)
    try:
        base = f"http://127.0.0.1:{banner.split('127.0.0.1:')[1].split()[0]}"
        assert f"APIMART_BASE_URL={base}" in banner
        assert "APIMART_API_KEY=" in banner and "any non-empty key" in banner
        code, _out, err = await reelbot(
            "check", cwd=tmp_path, APIMART_BASE_URL=base, APIMART_API_KEY="whatever-i-like"
        )
        assert code == 0, err
    finally:
        proc.terminate()
        await proc.wait()


async def test_fake_api_with_a_key_accepts_only_that_key(tmp_path: Path) -> None:
    proc, banner = await _fake_api(tmp_path, "--api-key", "sk-only-this")
    try:
        base = f"http://127.0.0.1:{banner.split('127.0.0.1:')[1].split()[0]}"
        assert "APIMART_API_KEY=sk-only-this" in banner
        code, _, _ = await reelbot(
            "check", cwd=tmp_path, APIMART_BASE_URL=base, APIMART_API_KEY="x"
        )
        assert code == 3
        code, _, err = await reelbot(
            "check", cwd=tmp_path, APIMART_BASE_URL=base, APIMART_API_KEY="sk-only-this"
        )
        assert code == 0, err
    finally:
        proc.terminate()
        await proc.wait()


async def test_run_with_an_empty_discord_token_says_it_is_missing(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"APIMART_API_KEY={KEY}\nDISCORD_TOKEN=\n")
    code, _, err = await reelbot("run", cwd=tmp_path)
    assert code == 2
    assert "DISCORD_TOKEN is missing" in err
    assert "refused" not in err and "Traceback" not in err


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """`reelbot models | head -3`: the reader leaves early."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "models"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(30)
    assert "Traceback" not in err and "BrokenPipeError" not in err
