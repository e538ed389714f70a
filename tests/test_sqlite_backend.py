"""SQLite through `Database` on a real file: what another process on the host and a restart see.

Each test opens the bot's database as the bot does, and looks at the file with connections of its
own, as another process (another replica on the host, `sqlite3` in a shell) would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.storage.database import MIGRATIONS as BOT_MIGRATIONS
from bot.storage.database import Connection, Database, Migration
from bot.storage.number_hash import NumberHasher

MIGRATIONS = [Migration(1, "keys", "CREATE TABLE keys (key TEXT PRIMARY KEY)")]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "callbot.db"


@pytest.fixture
async def db(path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{path}?busy_timeout=30000")
    await database.open(MIGRATIONS)
    yield database
    await database.close()


def another_process(path: Path) -> sqlite3.Connection:
    """A connection of another process: gives up at once on a lock it can't have."""
    return sqlite3.connect(path, isolation_level=None, timeout=0)


def can_write(path: Path) -> bool:
    other = another_process(path)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    else:
        other.execute("ROLLBACK")
        return True
    finally:
        other.close()


def keys(path: Path) -> list[str]:
    other = another_process(path)
    try:
        return [row[0] for row in other.execute("SELECT key FROM keys ORDER BY key")]
    finally:
        other.close()


async def test_a_transaction_given_up_while_it_waited_for_the_lock_leaves_none_open(
    db: Database, path: Path
) -> None:
    """A caller cancelled while its BEGIN IMMEDIATE waited for another process's write lock (a
    request given up, a shutdown): the lock may have come meanwhile. Left open, that transaction
    would hold the file's write lock for good, and every later write would fail as if the
    database had failed."""
    holder = another_process(path)
    holder.execute("BEGIN IMMEDIATE")

    async def write_in_a_transaction() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO keys VALUES ('given up')")

    waiting = asyncio.create_task(write_in_a_transaction())
    await asyncio.sleep(0)  # its BEGIN IMMEDIATE is on the database thread, waiting for the lock
    holder.execute("ROLLBACK")
    holder.close()
    # Without a turn of the event loop, so that the caller has not heard yet: its BEGIN has taken
    # the lock the other process let go of.
    deadline = time.monotonic() + 30
    while can_write(path):
        assert time.monotonic() < deadline, "the transaction never took the write lock"
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert can_write(path)
    await db.execute("INSERT INTO keys VALUES ('next')")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO keys VALUES ('after')")
    assert keys(path) == ["after", "next"]


async def test_one_write_failing_in_a_trip_loses_none_of_the_others(
    db: Database, path: Path
) -> None:
    """Writes that wait together for the database thread are committed together: one of them
    failing, whatever its error (a bug in one request), takes only its own changes back."""
    gate = threading.Event()

    async def holds_the_thread(tx: Connection) -> None:
        await tx.execute("INSERT INTO keys VALUES ('first')")
        assert gate.wait(30)  # on the database thread: the writes below wait for it together

    async def fails(tx: Connection) -> None:
        await tx.execute("INSERT INTO keys VALUES ('taken back')")
        raise LookupError("one request's own bug")

    first = asyncio.create_task(db.atomic(holds_the_thread))
    await asyncio.sleep(0)
    together = [
        asyncio.create_task(db.execute("INSERT INTO keys VALUES ('before')")),
        asyncio.create_task(db.atomic(fails)),
        asyncio.create_task(db.execute("INSERT INTO keys VALUES ('after')")),
    ]
    await asyncio.sleep(0)
    gate.set()

    await first
    before, failed, after = await asyncio.gather(*together, return_exceptions=True)
    assert isinstance(failed, LookupError)
    assert before == after == 1
    assert keys(path) == ["after", "before", "first"]


async def test_writes_after_the_database_closed_each_fail(db: Database) -> None:
    """At shutdown a write that comes after the close is told so, and so is the next one (none
    waits for a trip that will never come)."""
    await db.close()
    for key in ("one", "two"):
        with pytest.raises(RuntimeError, match="not open"):
            await asyncio.wait_for(db.execute("INSERT INTO keys VALUES (?)", (key,)), 10)


async def test_the_file_is_in_wal_mode_for_other_processes_to_read_while_the_bot_writes(
    db: Database, path: Path
) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO keys VALUES ('not yet')")
        other = another_process(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert other.execute("SELECT COUNT(*) FROM keys").fetchone()[0] == 0
        finally:
            other.close()
    assert keys(path) == ["not yet"]



async def test_a_transaction_holds_the_write_lock_from_its_start(db: Database, path: Path) -> None:
    """What a transaction reads stays true until it commits: another process (a replica on the
    same host) can't write in between, and waits for it instead of failing it at its first write."""
    async with db.transaction() as tx:
        await tx.fetchone("SELECT COUNT(*) FROM keys")
        assert not can_write(path)
    assert can_write(path)


async def test_statements_of_other_requests_wait_for_an_open_transaction(
    db: Database, path: Path
) -> None:
    """Another request's read, or a statement outside any transaction, while a transaction is
    open: neither sees its writes before they are committed, nor is taken back with them."""
    with pytest.raises(LookupError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO keys VALUES ('taken back')")
            reading = asyncio.create_task(db.fetchone("SELECT COUNT(*) FROM keys"))
            creating = asyncio.create_task(db.execute("CREATE TABLE other (x INTEGER)"))
            await asyncio.sleep(0)  # both are on their way, or waiting for the transaction
            raise LookupError("the request fails: its transaction is rolled back")
    row = await reading
    assert row is not None and row[0] == 0
    await creating
    assert await db.fetchall("SELECT x FROM other") == []
    assert keys(path) == []


async def test_a_read_only_look_sees_what_the_running_bot_committed_and_writes_nothing(
    db: Database, path: Path
) -> None:
    """`callbot check` beside a running bot: the bot's latest commits (still in its -wal file)
    are seen, and nothing can be written."""
    await db.execute("INSERT INTO keys VALUES ('committed')")
    look = Database(f"sqlite:///{path}")
    await look.open_read_only()
    try:
        assert [row[0] for row in await look.fetchall("SELECT key FROM keys")] == ["committed"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await look.execute("INSERT INTO keys VALUES ('written by a look')")
    finally:
        await look.close()
    assert keys(path) == ["committed"]


@pytest.mark.usefixtures("umask_022")
async def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The file holds the audit trail's hash key (when AUDIT_HASH_KEY is empty) and the numbers of
    recent calls and pending questions in full: like `.env`, it is no one else's to read on the
    host, nor are its -wal and -shm files, which hold the same pages."""
    path = tmp_path / "callbot.db"
    db = Database(f"sqlite:///{path}")
    await db.open(BOT_MIGRATIONS)
    try:
        await NumberHasher.open(db)
        files = [path, path.with_name("callbot.db-wal"), path.with_name("callbot.db-shm")]
        assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
            f.name: oct(0o600) for f in files}
    finally:
        await db.close()


async def test_the_databases_directory_is_made_when_missing(tmp_path: Path) -> None:
    """A fresh volume (`sqlite:////data/callbot.db` on an empty mount, a new state directory)."""
    path = tmp_path / "state" / "callbot" / "callbot.db"
    database = Database(f"sqlite:///{path}")
    await database.open(MIGRATIONS)
    try:
        await database.execute("INSERT INTO keys VALUES ('kept')")
    finally:
        await database.close()
    assert keys(path) == ["kept"]


async def test_migrations_apply_in_version_order_every_statement_of_each(path: Path) -> None:
    """Given out of order (as a list assembled from several places might be), and with a last
    statement that no `;` ends."""
    migrations = [
        Migration(2, "index and more", "CREATE INDEX keys_by_key ON keys (key);"
                                       " CREATE TABLE more (x INTEGER)"),
        Migration(1, "keys", "CREATE TABLE keys (key TEXT PRIMARY KEY)"),
    ]
    database = Database(f"sqlite:///{path}")
    await database.open(migrations)
    try:
        assert await database.schema_version() == 2
        assert await database.execute("INSERT INTO more VALUES (1)") == 1
    finally:
        await database.close()


async def test_a_migration_ending_in_an_unfinished_statement_is_refused_whole(path: Path) -> None:
    """A trigger missing its END (a typo in a new migration) fails the migration, rather than
    applying the statements before it without the trigger."""
    unfinished = Migration(1, "typo", "CREATE TABLE keys (key TEXT PRIMARY KEY);"
                                      " CREATE TRIGGER no_delete BEFORE DELETE ON keys"
                                      " BEGIN SELECT RAISE(ABORT, 'kept')")
    database = Database(f"sqlite:///{path}")
    try:
        with pytest.raises(sqlite3.OperationalError, match="incomplete input"):
            await database.open([unfinished])
        assert await database.schema_version() == 0
    finally:
        await database.close()


async def test_a_transaction_that_meets_a_held_lock_fails_with_the_databases_own_words(
    path: Path,
) -> None:
    """What the refusal's log line quotes: "database is locked", not what a rollback of a
    transaction that never began would say."""
    database = Database(f"sqlite:///{path}?busy_timeout=0")
    await database.open(MIGRATIONS)
    holder = another_process(path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            async with database.transaction() as tx:
                await tx.execute("INSERT INTO keys VALUES ('refused')")
        holder.execute("ROLLBACK")
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO keys VALUES ('later')")
    finally:
        holder.close()
        await database.close()
    assert keys(path) == ["later"]
