"""The database: migrations run once and in order; transactions are atomic and serialised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.storage.database import (
    MIGRATIONS as CALLBOT_MIGRATIONS,
    Connection,
    Database,
    DatabaseUrlError,
    IntegrityError,
    Migration,
    SchemaTooNew,
    check_url,
    dialect_of,
    sqlite_path,
)
from bot.storage.postgres import numbered_placeholders
from bot.storage.sqlite import split_statements
from tests.databases import BACKENDS, fresh_database

MIGRATIONS = [
    Migration(
        1, "counters", "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    ),
    Migration(
        2, "seed", "INSERT INTO counters VALUES ('calls', 0); INSERT INTO counters VALUES ('x', 1)"
    ),
]


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    database = Database(url)
    await database.open(MIGRATIONS)
    yield database
    await database.close()


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///./callbot.db") == "./callbot.db"
    assert sqlite_path("sqlite:////var/lib/callbot.db") == "/var/lib/callbot.db"
    for bad in ("postgres://x", "sqlite:///", "callbot.db"):
        with pytest.raises(DatabaseUrlError):
            sqlite_path(bad)


async def test_a_sqlite_url_may_set_the_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbot.db'}"
    assert sqlite_path(url + "?busy_timeout=250") == str(tmp_path / "callbot.db")
    for given, expected in ((url, 5000), (url + "?busy_timeout=250", 250)):
        db = Database(given)
        await db.open([])
        row = await db.fetchone("PRAGMA busy_timeout")
        assert row is not None and row[0] == expected
        await db.close()
    for bad in ("?busy_timeout=", "?busy_timeout=5s", "?timeout=5", "?busy_timeout=-1", "?&"):
        with pytest.raises(DatabaseUrlError):
            check_url(url + bad)


def test_the_url_picks_the_backend() -> None:
    assert dialect_of("sqlite:///./callbot.db") == "sqlite"
    assert dialect_of("postgresql://bot:pw@db:5432/callbot") == "postgresql"
    assert dialect_of("postgres://bot@db/callbot") == "postgresql"
    for bad in ("mysql://x", "callbot.db", "", "postgresql:/x"):
        with pytest.raises(DatabaseUrlError):
            dialect_of(bad)


def test_placeholders_are_numbered_for_postgresql_outside_strings() -> None:
    assert numbered_placeholders("SELECT ? , '?' , \"a?\" , ?") == "SELECT $1 , '?' , \"a?\" , $2"


async def test_migrations_apply_once_and_survive_reopening(db: Database) -> None:
    assert await db.schema_version() == 2
    rows = await db.fetchall("SELECT name, value FROM counters ORDER BY name")
    assert [tuple(r) for r in rows] == [("calls", 0), ("x", 1)]
    await db.close()
    again = Database(db.url)
    await again.open(MIGRATIONS + [Migration(3, "more", "ALTER TABLE counters ADD note TEXT")])
    assert await again.schema_version() == 3
    assert len(await again.fetchall("SELECT * FROM counters")) == 2  # seed not applied twice
    await again.close()


async def test_failed_migration_leaves_nothing_half_done(url: str) -> None:
    database = Database(url)
    broken = MIGRATIONS + [Migration(3, "broken", "CREATE TABLE t (a INTEGER); SELECT nonsense(")]
    with pytest.raises(Exception):
        await database.open(broken)
    assert await database.schema_version() == 2
    with pytest.raises(Exception):
        await database.fetchone("SELECT * FROM t")
    await database.close()


async def test_a_migration_whose_commit_fails_leaves_the_database_usable(url: str) -> None:
    # Every statement succeeds and the COMMIT fails (a deferred foreign key checked only then):
    # the transaction must not be left open, or every later write on this connection would fail.
    database = Database(url)
    tables = ("CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child"
              " (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);")
    orphan = Migration(3, "orphan", tables + " INSERT INTO child VALUES (7)")
    try:
        with pytest.raises(Exception, match="(?i)foreign key"):
            await database.open([*MIGRATIONS, orphan])
        assert await database.schema_version() == 2
        await database.migrate([*MIGRATIONS, Migration(3, "fixed", tables)])
        assert await database.schema_version() == 3
        await database.execute("INSERT INTO counters VALUES ('after', 2)")
        assert len(await database.fetchall("SELECT * FROM counters")) == 3
    finally:
        await database.close()


async def test_replicas_starting_together_migrate_once(url: str) -> None:
    replicas = [Database(url) for _ in range(4)]
    try:
        await asyncio.gather(*(r.open([]) for r in replicas))
        applied = await asyncio.gather(*(r.migrate(MIGRATIONS) for r in replicas))
        assert sorted(sum(applied, [])) == [1, 2]  # each applied (and logged) by one of them
        rows = await replicas[0].fetchall("SELECT name, value FROM counters ORDER BY name")
        assert [tuple(r) for r in rows] == [("calls", 0), ("x", 1)]  # the seed ran once
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_schema_newer_than_this_code_is_refused(db: Database) -> None:
    await db.migrate([*MIGRATIONS, Migration(3, "from the future", "SELECT 1")])
    await db.close()
    again = Database(db.url)
    with pytest.raises(SchemaTooNew, match="schema version 3, newer than this callbot knows .2."):
        await again.open(MIGRATIONS)
    await again.close()


async def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'dup.db'}")
    with pytest.raises(RuntimeError, match="duplicate"):
        await database.open([MIGRATIONS[0], Migration(1, "again", "SELECT 1")])
    await database.close()


async def test_concurrent_read_modify_write_transactions_lose_no_update(db: Database) -> None:
    async def increment() -> None:
        async with db.transaction(exclusive=True) as tx:
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
    statements = split_statements(sql)
    assert len(statements) == 4
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")


async def test_the_audit_trail_is_append_only_in_the_database(url: str) -> None:
    database = Database(url)
    await database.open(CALLBOT_MIGRATIONS)
    try:
        await database.execute(
            "INSERT INTO audit_attempts (at, team_id, user_id, channel_id, origin, number_masked,"
            " flow, decision) VALUES ('t', 'T', 'U', 'C', 'o', '+1 ••• 0', 'f', 'allowed')"
        )
        [row] = await database.fetchall("SELECT id FROM audit_attempts")
        await database.execute(
            "INSERT INTO audit_events (attempt_id, at, kind) VALUES (?, 't', 'placed')", (row[0],)
        )
        for table in ("audit_attempts", "audit_events"):
            with pytest.raises(IntegrityError, match=f"{table} is append-only"):
                await database.execute(f"UPDATE {table} SET at = 'rewritten'")
            with pytest.raises(IntegrityError, match=f"{table} is append-only"):
                await database.execute(f"DELETE FROM {table}")
        assert len(await database.fetchall("SELECT * FROM audit_events")) == 1
    finally:
        await database.close()


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
    async def increment(conn: Connection) -> int:
        row = await conn.fetchone("SELECT value FROM counters WHERE name = 'calls'")
        assert row is not None
        await conn.execute("UPDATE counters SET value = ? WHERE name = 'calls'", (row[0] + 1,))
        return int(row[0]) + 1

    results = await asyncio.gather(*(db.atomic(increment, exclusive=True) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))

    async def half_done(conn: Connection) -> None:
        await conn.execute("UPDATE counters SET value = 99")
        raise LookupError("refused midway")

    with pytest.raises(LookupError):
        await db.atomic(half_done)
    row = await db.fetchone("SELECT value FROM counters WHERE name = 'x'")
    assert row is not None and row[0] == 1
    # The connection is usable afterwards: the failed unit was rolled back, not left open.
    assert await db.atomic(increment, exclusive=True) == 51


async def test_an_atomic_unit_may_await_only_its_connection(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'unit.db'}")
    await database.open(MIGRATIONS)

    async def sleeps(conn: Connection) -> None:
        await conn.execute("UPDATE counters SET value = 7")
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other than its connection"):
        await database.atomic(sleeps)
    row = await database.fetchone("SELECT value FROM counters WHERE name = 'x'")
    assert row is not None and row[0] == 1
    await database.close()
