"""Hostile pass: Ctrl-C / SIGTERM while Python is still importing reelbot's own modules.

`bot.app` imports argparse and `importlib.metadata` (email, random, …) at module level, before
`main` defers the signals; a Ctrl-C in that tenth of a second printed a traceback from inside
the import machinery (seen as a flaky `test_06b_early_interrupt` under `-n 3`). The moment is
made exact here: the signal is raised as `argparse` is first imported.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.faults.test_06_cli_interrupt_jobs_status import _env

#: Runs `python -m bot generate … --json` as `runpy` does, sending itself the signal as the
#: first heavy module (argparse) is imported.
DRIVER = """
import os, runpy, signal, sys

class Trip:
    def find_spec(self, name, path=None, target=None):
        if name == "argparse":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.{sig})
        return None

sys.meta_path.insert(0, Trip())
sys.argv = ["reelbot", "generate", "a fox", "--model", "sora-2", "--json"]
runpy.run_module("bot", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_an_interrupt_while_importing_reelbot_exits_130_with_one_object(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DRIVER.format(sig=sig.name),
        cwd=tmp_path,
        # Nothing may be sent: an address where nothing listens.
        env=_env("http://127.0.0.1:9", tmp_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()
    where = f"rc={proc.returncode}\n{stdout}\n{stderr[-2000:]}"
    assert "Traceback" not in stderr, where
    assert proc.returncode in (130, -signal.SIGINT), where
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, where
    assert json.loads(lines[0])["task_id"] is None, where
    assert "nothing was charged" in stderr, where
