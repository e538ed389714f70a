"""The database: migrations run once and in order; transactions are atomic and serialised."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.storage.database import Database, DatabaseUrlError, Migration, _statements, sqlite_path

MIGRATIONS = [
    Migration(
        1, "counters", "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    ),
    Migration(
        2, "seed", "INSERT INTO counters VALUES ('calls', 0); INSERT INTO counters VALUES ('x', 1)"
    ),
]


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    await database.open(MIGRATIONS)
    yield database  # type: ignore[misc]
    await database.close()


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///./callbot.db") == "./callbot.db"
    assert sqlite_path("sqlite:////var/lib/callbot.db") == "/var/lib/callbot.db"
    for bad in ("postgres://x", "sqlite:///", "callbot.db"):
        with pytest.raises(DatabaseUrlError):
            sqlite_path(bad)


async def test_migrations_apply_once_and_survive_reopening(db: Database, tmp_path: Path) -> None:
    assert await db.schema_version() == 2
    rows = await db.fetchall("SELECT name, value FROM counters ORDER BY name")
    assert [tuple(r) for r in rows] == [("calls", 0), ("x", 1)]
    await db.close()
    again = Database(db.url)
    await again.open(MIGRATIONS + [Migration(3, "more", "ALTER TABLE counters ADD note TEXT")])
    assert await again.schema_version() == 3
    assert len(await again.fetchall("SELECT * FROM counters")) == 2  # seed not applied twice
    await again.close()


async def test_failed_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'broken.db'}")
    broken = MIGRATIONS + [Migration(3, "broken", "CREATE TABLE t (a INTEGER); SELECT nonsense(")]
    with pytest.raises(Exception):
        await database.open(broken)
    assert await database.schema_version() == 2
    assert await database.fetchone("SELECT name FROM sqlite_master WHERE name = 't'") is None
    await database.close()


async def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'dup.db'}")
    with pytest.raises(RuntimeError, match="duplicate"):
        await database.open([MIGRATIONS[0], Migration(1, "again", "SELECT 1")])
    await database.close()


async def test_concurrent_read_modify_write_transactions_lose_no_update(db: Database) -> None:
    async def increment() -> None:
        async with db.transaction() as tx:
            row = await tx.fetchone("SELECT value FROM counters WHERE name = 'calls'")
            assert row is not None
            await asyncio.sleep(0)  # let others run mid-transaction
            await tx.execute("UPDATE counters SET value = ? WHERE name = 'calls'", (row[0] + 1,))

    await asyncio.gather(*(increment() for _ in range(50)))
    row = await db.fetchone("SELECT value FROM counters WHERE name = 'calls'")
    assert row is not None and row[0] == 50


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as tx:
            await tx.execute("UPDATE counters SET value = 99")
            1 / 0
    row = await db.fetchone("SELECT value FROM counters WHERE name = 'x'")
    assert row is not None and row[0] == 1


def test_statements_split_at_semicolons_outside_triggers_and_strings() -> None:
    sql = """
        CREATE TABLE t (a TEXT);
        INSERT INTO t VALUES ('x;y');
        CREATE TRIGGER t_fixed BEFORE UPDATE ON t
        BEGIN SELECT RAISE(ABORT, 't is append-only; really'); END;
        CREATE INDEX t_a ON t (a)
    """
    statements = _statements(sql)
    assert len(statements) == 4
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")


async def test_a_migration_with_a_trigger_applies(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'trigger.db'}")
    await database.open(
        [
            Migration(
                1,
                "t",
                """
        CREATE TABLE t (a INTEGER);
        CREATE TRIGGER t_no_delete BEFORE DELETE ON t BEGIN SELECT RAISE(ABORT, 'kept; always');
        END; INSERT INTO t VALUES (1)
    """,
            )
        ]
    )
    with pytest.raises(Exception, match="kept; always"):
        await database.execute("DELETE FROM t")
    await database.close()


async def test_atomic_units_are_all_or_nothing_and_lose_no_update(db: Database) -> None:
    def increment(conn: sqlite3.Connection) -> int:
        value = conn.execute("SELECT value FROM counters WHERE name = 'calls'").fetchone()[0]
        conn.execute("UPDATE counters SET value = ? WHERE name = 'calls'", (value + 1,))
        return int(value) + 1

    results = await asyncio.gather(*(db.atomic(increment) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE counters SET value = 99")
        raise LookupError("refused midway")

    with pytest.raises(LookupError):
        await db.atomic(half_done)
    row = await db.fetchone("SELECT value FROM counters WHERE name = 'x'")
    assert row is not None and row[0] == 1
    # The connection is usable afterwards: the failed unit was rolled back, not left open.
    assert await db.atomic(increment) == 51
