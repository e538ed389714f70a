"""Another process holding a SQLite database's write lock, for the tests of a failing database.

Such tests open the bot's database with a short busy timeout (`?busy_timeout=`, README
"Databases"): a write gives up after SHORT_BUSY_TIMEOUT_MS waiting for the lock the test holds,
as it would after the default 5 s, without the test waiting 5 s per write.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bot.storage.database import sqlite_path
from tests.conftest import BotUnderTest
from tests.follow_helpers import services

SHORT_BUSY_TIMEOUT_MS = 100


def with_short_busy_timeout(url: str) -> str:
    return f"{url}?busy_timeout={SHORT_BUSY_TIMEOUT_MS}"


@contextmanager
def write_lock(bot: BotUnderTest) -> Iterator[None]:
    """Another process takes the database's write lock and keeps it."""
    other = sqlite3.connect(sqlite_path(services(bot).db.url), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def until_logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 60) -> None:
    async def logged() -> None:
        while not any(text in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(logged(), timeout)
