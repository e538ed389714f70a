"""PostgreSQL: a pooled connection is handed back as it was taken, without asyncpg's reset query.

The pool no longer runs `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
release (bot/storage/postgres.py), which is safe only while nothing leaves session state on a
pooled connection: the session lock of migrations is taken on a connection of its own, a transaction
cut short is rolled back before its connection is used again, and no statement of the bot sets
session state (the last test keeps it so).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bot.storage.database import MIGRATIONS, Database
from bot.storage.postgres import PG_EXCLUSIVE_LOCK, PG_MIGRATION_LOCK
from tests.databases import POSTGRESQL, fresh_database

BOT = Path(__file__).resolve().parent.parent / "bot"
HANG_GUARD = 30.0  # seconds; only a hang would reach it


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(POSTGRESQL, tmp_path) as url:
        yield url


async def lock_is_free(url: str, key: int) -> bool:
    """Whether another session could take this schema's advisory lock `key` now."""
    other = await asyncpg.connect(url)
    try:
        taken = await other.fetchval(
            "SELECT pg_try_advisory_lock(hashtext(current_schema()), $1)", key
        )
        return bool(taken)
    finally:
        await other.close()  # which lets go of it again


async def advisory_locks_of_pooled_sessions(db: Database) -> int:
    # Asked through the pool, so answered by one of its connections, about itself.
    row = await db.fetchone(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    assert row is not None
    return int(row[0])


async def test_migrating_leaves_no_lock_on_any_connection(url: str) -> None:
    holder = await asyncpg.connect(url)  # another replica, migrating
    await holder.execute(
        "SELECT pg_advisory_lock(hashtext(current_schema()), $1)", PG_MIGRATION_LOCK
    )
    db = Database(url)
    opening = asyncio.create_task(db.open(MIGRATIONS))
    try:
        waiting = await asyncio.wait_for(waiting_for_lock(holder, PG_MIGRATION_LOCK), HANG_GUARD)
        assert not opening.done()
        await holder.execute(
            "SELECT pg_advisory_unlock(hashtext(current_schema()), $1)", PG_MIGRATION_LOCK
        )  # the other replica is done
        await asyncio.wait_for(opening, HANG_GUARD)
        assert await lock_is_free(url, PG_MIGRATION_LOCK)
        # The session that took it is gone, and no pooled one holds a lock.
        assert await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", waiting
        ) == 0
        assert await advisory_locks_of_pooled_sessions(db) == 0
    finally:
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)
        await db.close()
        await holder.close()


async def waiting_for_lock(conn: asyncpg.Connection, key: int) -> int:
    """The session waiting for this schema's advisory lock `key`, once one is."""
    while True:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objid = $1::oid AND classid = (hashtext(current_schema())::bigint"
            " & 4294967295)::oid", key,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)


async def test_a_transaction_cut_short_leaves_its_connection_clean(url: str) -> None:
    db = Database(url)
    await db.open(MIGRATIONS)
    inside = asyncio.Event()

    async def cut_short() -> None:
        async with db.transaction(exclusive=True) as tx:
            await tx.execute("INSERT INTO replicas (id, host, started_at, seen_at)"
                             " VALUES ('cut', 'h', 0, 0)")
            inside.set()
            await asyncio.Event().wait()  # cancelled here, the transaction open

    async def failing() -> None:
        async with db.transaction(exclusive=True) as tx:
            await tx.execute("INSERT INTO replicas (id, host, started_at, seen_at)"
                             " VALUES ('failed', 'h', 0, 0)")
            await tx.execute("SELECT nonsense(")

    try:
        task = asyncio.create_task(cut_short())
        await inside.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await failing()
        # The pooled connections answer, each outside any transaction (inside one, the rows
        # would be seen, or the statement refused), holding no lock.
        for _ in range(3):
            assert await asyncio.wait_for(
                db.fetchall("SELECT id FROM replicas"), HANG_GUARD
            ) == []
            assert await advisory_locks_of_pooled_sessions(db) == 0
        assert await lock_is_free(url, PG_EXCLUSIVE_LOCK)
        await asyncio.wait_for(db.execute(
            "INSERT INTO replicas (id, host, started_at, seen_at) VALUES ('next', 'h', 0, 0)"
        ), HANG_GUARD)
    finally:
        await db.close()


# Statements that would leave state on a session, hence on a pooled connection.
SESSION_STATE = re.compile(
    "|".join((
        r"(?:^|[\"'(;])\s*SET\s+(?:SESSION\s+)?[a-z_.]+\s*(?:=|TO\b)",  # not UPDATE … SET
        r"\bLISTEN\s+\w",
        r"\bDECLARE\s+\w+\s+.*CURSOR",
        r"\bCREATE\s+TEMP(?:ORARY)?\b",
        r"\bPREPARE\s+\w+\s+(?:\(|AS\b)",
        r"\bset_config\s*\(",
        r"\bpg_advisory_lock\s*\(",
    )),
    re.MULTILINE,  # the bot writes SQL keywords in capitals
)


def test_no_statement_of_the_bot_leaves_state_on_a_session() -> None:
    found = {
        (path.relative_to(BOT.parent).as_posix(), match.group(0))
        for path in BOT.rglob("*.py")
        for match in SESSION_STATE.finditer(path.read_text())
    }
    # The one exception, on its own connection (closed after migrating): the migration lock.
    assert found == {("bot/storage/postgres.py", "pg_advisory_lock(")}
