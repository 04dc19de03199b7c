"""Hostile pass: Ctrl-C / SIGTERM in the first second of `reelbot generate --json`.

Before this, an interrupt while Python imported reelbot printed a 25-line traceback and died
by the signal, and one a little later exited 130 printing nothing: `--json` promised exactly
one object, and the user was not told that nothing had been sent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from tests.conftest import API_KEY
from tests.faults.test_06_cli_interrupt_jobs_status import _env

pytestmark = pytest.mark.e2e

#: Seconds after the start: inside the imports, the settings, the runtime's start, the job.
MOMENTS = (0.2, 0.4, 0.6, 0.9, 1.2, 1.6, 2.2)
#: The task's length at the stand-in (time_scale 1000: 60 real seconds), far beyond the last
#: moment even on a loaded machine (600 s of task time, 0.6 s real, finished first there).
TASK_SECONDS = 60_000.0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_an_early_interrupt_still_prints_one_object_and_no_traceback(
    fake: FakeApimart, api_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    for moment in MOMENTS:
        fake.plan_next(FakeTaskPlan(duration_s=TASK_SECONDS))
        cwd = tmp_path / f"at-{moment}"
        cwd.mkdir()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "generate",
            "a fox",
            "--model",
            "sora-2",
            "--json",
            cwd=cwd,
            env={**_env(api_url, cwd), "APIMART_API_KEY": API_KEY},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(moment)
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            # It ended before this moment (a fast stand-in): nothing to interrupt, but it
            # must still have printed exactly one JSON object.
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert len([ln for ln in out.decode().splitlines() if ln.startswith("{")]) == 1
            continue
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        stdout, stderr = out.decode(), err.decode()
        where = f"{sig.name} at {moment}s: rc={proc.returncode}\n{stdout}\n{stderr[-2000:]}"
        if "init_import_site" in stderr or (proc.returncode == -sig and not stderr):
            continue  # the interpreter itself was still starting: no reelbot code ran yet
        assert "Traceback" not in stderr, where
        lines = [line for line in stdout.splitlines() if line.strip()]
        assert len(lines) == 1, where
        outcome = json.loads(lines[0])
        # 130, or death by SIGINT (which a shell reports as 130 too): CPython re-raises SIGINT at
        # exit when the interrupt came inside an import, however it was handled.
        if proc.returncode in (130, -signal.SIGINT):
            assert "interrupted" in stderr, where
        else:  # it finished first (it cannot, in 2 s: the task runs 60 s)
            raise AssertionError(where)
        if outcome["task_id"] is None and outcome["status"] != "submitting":
            assert "nothing was charged" in stderr, where
    assert len(fake.submit_attempts) <= len(MOMENTS)


def test_the_early_object_has_the_one_shape_of_generate_json() -> None:
    from bot.core.job import outcome_record
    from bot.terminal.interrupted import OUTCOME_KEYS

    assert tuple(outcome_record(status="x")) == OUTCOME_KEYS
