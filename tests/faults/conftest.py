"""Fault-test fixtures: a pipeline on the stand-in APIMart (real HTTP) with a store that may fail,
and `tests/test_e2e.py`'s world: the real `reelbot` process against the fake Discord and the
stand-in APIMart, both in this test process on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bot.core.store import Store
from bot.testing.store import FlakyStore
from tests.conftest import Pipeline, running_pipeline
from tests.test_e2e import world_fixture  # noqa: F401 - fixture


@pytest.fixture
async def faulty_pipeline(api_url: str, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Like `make_pipeline`, with a `FlakyStore` (`fail_when`) and quicker retries."""
    async with aiohttp.ClientSession() as session:

        def open_pipeline(*, fail_when: Any = None, **options: Any) -> Any:
            async def opened() -> AsyncIterator[Pipeline]:
                store: Store = await FlakyStore.open(database_url)
                if fail_when is not None:
                    store.fail_when = fail_when  # type: ignore[attr-defined]
                options.setdefault("attempts", 2)
                options.setdefault("interval", 0.02)
                async with running_pipeline(session, api_url, store, **options) as pipeline:
                    yield pipeline

            return asynccontextmanager(opened)()

        yield open_pipeline
