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
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from bot.storage.database import MIGRATIONS, Database
from bot.storage.faults import DATABASE_FAULTS
from bot.storage.pg_pool import ConnectionPool, PoolClosed
from bot.storage.postgres import PG_EXCLUSIVE_LOCK, PG_MIGRATION_LOCK, POSTGRES_POOL_SIZE
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


async def backend_pid(db: Database) -> int:
    row = await db.fetchone("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


async def test_the_pool_opens_at_most_its_size_and_serves_every_borrower_in_turn(url: str) -> None:
    db = Database(url)
    await db.open(MIGRATIONS)
    try:
        pids = await asyncio.wait_for(asyncio.gather(*(
            db.fetchone("SELECT pg_backend_pid() FROM pg_sleep(0.01)")
            for _ in range(5 * POSTGRES_POOL_SIZE)
        )), HANG_GUARD)
        assert 1 < len({row[0] for row in pids if row is not None}) <= POSTGRES_POOL_SIZE
    finally:
        await db.close()


async def test_a_refused_statement_leaves_its_connection_in_the_pool_a_lost_one_does_not(
    url: str,
) -> None:
    db = Database(url)
    await db.open(MIGRATIONS)
    try:
        pid = await backend_pid(db)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await db.execute("SELECT nonsense(")
        assert await backend_pid(db) == pid  # the same connection, lent again
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        # A fresh connection answers, once the driver noticed the loss: the statement that met
        # it fails (asyncpg says so as a lost connection, or, when the server's farewell arrived
        # first, as an InternalClientError; with its own pool too).
        for _ in range(2):
            try:
                new_pid = await backend_pid(db)
                break
            except (*DATABASE_FAULTS, asyncpg.exceptions.InternalClientError):
                continue
        assert new_pid != pid
    finally:
        await db.close()


async def test_a_borrower_that_gives_up_waiting_takes_no_connection_with_it(url: str) -> None:
    db = Database(url)
    await db.open(MIGRATIONS)
    release = asyncio.Event()
    try:
        async def hold() -> None:
            async with db.transaction():
                await release.wait()

        holders = [asyncio.ensure_future(hold()) for _ in range(POSTGRES_POOL_SIZE)]
        await asyncio.sleep(0.1)
        impatient = [asyncio.ensure_future(db.fetchone("SELECT 1")) for _ in range(3)]
        await asyncio.sleep(0.05)
        for waiting in impatient:
            waiting.cancel()
        release.set()
        await asyncio.wait_for(asyncio.gather(*holders), HANG_GUARD)
        # Every connection came back: the pool's full size can be borrowed at once again.
        await asyncio.wait_for(asyncio.gather(*(
            db.fetchone("SELECT pg_sleep(0.01)") for _ in range(2 * POSTGRES_POOL_SIZE)
        )), HANG_GUARD)
    finally:
        await db.close()


# The pool itself, one connection large, so that every other borrower waits its turn.


@pytest.fixture
async def pool_of_one(url: str) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(partial(asyncpg.connect, url), 1)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def borrowed_in_turn(pool: ConnectionPool, name: str, order: list[str]) -> None:
    async with pool.connection() as conn:
        order.append(name)
        await conn.execute("SELECT 1")


async def test_waiting_borrowers_are_served_first_come_first_served(
    pool_of_one: ConnectionPool,
) -> None:
    order: list[str] = []
    async with pool_of_one.connection():
        waiting = [asyncio.create_task(borrowed_in_turn(pool_of_one, name, order))
                   for name in ("first", "second", "third")]
        await asyncio.sleep(0)  # each is queued (nothing before that waits)
    await asyncio.wait_for(asyncio.gather(*waiting), HANG_GUARD)
    assert order == ["first", "second", "third"]


async def test_a_connection_lost_while_others_wait_makes_room_for_the_first_of_them(
    pool_of_one: ConnectionPool, url: str
) -> None:
    # A server restart during a burst: the connection goes, the borrowers waiting for it must not.
    admin = await asyncpg.connect(url)
    try:
        order: list[str] = []
        # As the lost connection's statement fails (see the test above): one of these.
        lost = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.InternalClientError)
        with pytest.raises(lost):
            async with pool_of_one.connection() as conn:
                waiting = asyncio.create_task(borrowed_in_turn(pool_of_one, "waiting", order))
                await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                await conn.execute("SELECT 1")
        await asyncio.wait_for(waiting, HANG_GUARD)
        assert order == ["waiting"]
    finally:
        await admin.close()


async def test_a_borrower_cancelled_as_the_connection_reaches_it_passes_it_on(
    pool_of_one: ConnectionPool,
) -> None:
    lent = pool_of_one.connection()
    await lent.__aenter__()
    order: list[str] = []
    cancelled = asyncio.create_task(borrowed_in_turn(pool_of_one, "cancelled", order))
    await asyncio.sleep(0)  # queued
    await lent.__aexit__(None, None, None)  # handed to it; it has not run since
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await asyncio.wait_for(borrowed_in_turn(pool_of_one, "next", order), HANG_GUARD)
    assert order == ["next"]


async def test_closing_the_pool_refuses_the_borrowers_still_waiting(
    pool_of_one: ConnectionPool,
) -> None:
    async with pool_of_one.connection():
        waiting = asyncio.create_task(borrowed_in_turn(pool_of_one, "waiting", []))
        await asyncio.sleep(0)  # queued
        await pool_of_one.close()
        with pytest.raises(PoolClosed):
            await asyncio.wait_for(waiting, HANG_GUARD)


class _Connection:
    """What the pool asks of an asyncpg connection."""

    def __init__(self) -> None:
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return False

    def terminate(self) -> None:
        self.closed = True

    async def close(self) -> None:
        self.closed = True


async def test_connections_lost_while_free_make_room_for_new_ones() -> None:
    # A server restart closes every idle connection: each must free its place, or a pool that
    # lost `size` of them would make every borrower wait for ever.
    opened: list[_Connection] = []

    async def connect() -> _Connection:
        opened.append(_Connection())
        return opened[-1]

    pool = ConnectionPool(connect, 1)
    await pool.start()
    for _ in range(3):
        opened[-1].closed = True  # the server went away meanwhile
        async with asyncio.timeout(5), pool.connection() as conn:
            assert conn is opened[-1] and not conn.closed
    assert len(opened) == 4
    await pool.close()
