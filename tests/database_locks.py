"""Another process holding a SQLite database's write lock, or another session holding PostgreSQL
tables, for the tests of a failing database; and waits for what such tests expect once it answers
again (audit records written from the spool).

Such tests open the bot's database with a short busy timeout (`?busy_timeout=`, README
"Databases"): a write gives up after SHORT_BUSY_TIMEOUT_MS waiting for the lock the test holds,
as it would after the default 5 s, without the test waiting 5 s per write.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import pytest

from bot.storage.database import sqlite_path
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import audit_records, services

SHORT_BUSY_TIMEOUT_MS = 100


def with_short_busy_timeout(url: str) -> str:
    return f"{url}?busy_timeout={SHORT_BUSY_TIMEOUT_MS}"


def with_short_lock_timeout(url: str) -> str:
    """The test's PostgreSQL URL (it has a query already), its writes giving up after
    SHORT_BUSY_TIMEOUT_MS waiting for a lock: every write meeting the test's lock costs that."""
    return f"{url}&lock_timeout={SHORT_BUSY_TIMEOUT_MS}"


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


@asynccontextmanager
async def tables_locked(
    url: str, tables: str, *, reads_too: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """PostgreSQL: another session holds `tables` (comma-separated) against writes, reads going
    on (`reads_too`: reads wait as well, as while a migration rewrites a table), until the block
    ends; yields that session."""
    mode = "ACCESS EXCLUSIVE" if reads_too else "EXCLUSIVE"
    holder = await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute(f"LOCK TABLE {tables} IN {mode} MODE")
            yield holder
    finally:
        await holder.close()


async def until_logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 60) -> None:
    async def logged() -> None:
        while not any(text in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(logged(), timeout)


async def recorded(bot: BotUnderTest, n: int = 1, timeout: float = 20) -> None:
    async def until() -> None:
        while len(await audit_records(bot)) < n:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(until(), timeout)


async def recorded_once_after_restarts(bot_factory: BotFactory, spool: Path, **env: str) -> None:
    """The bot started again with the database answering: the refused call in the audit trail,
    the spool empty, and still one record after another start."""
    second = await bot_factory("http", **env)
    await recorded(second)
    [record] = await audit_records(second)
    assert record.decision == "refused" and record.reason == "DatabaseUnavailable"
    assert record.user_id == "U0MANAGER" and "3093" in record.number_masked
    assert spool.read_text() == ""
    await second.runtime.stop()
    third = await bot_factory("http", **env)  # written once, however often the bot starts
    await third.settle()
    assert len(await audit_records(third)) == 1
