"""The database at `DATABASE_URL`: one SQLite connection, versioned migrations run at start-up.

SQLite (in WAL mode, with a busy timeout) lets several bot processes on one host share the file, so
what must hold across restarts and replicas (audit trail, limits, idempotency claims, calls being
followed) lives here. Every statement goes through aiosqlite's own thread, so the event loop never
waits on the disk.

Migrations are append-only: a released migration is never edited. Each is applied once, in version
order, inside a transaction, and recorded in `schema_migrations`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


# Append new migrations at the end with the next version number. Never edit a released one.
MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "idempotency claims",
        """
        CREATE TABLE claims (
            key TEXT PRIMARY KEY,
            claimed_at REAL NOT NULL
        );
        CREATE INDEX claims_by_time ON claims (claimed_at)
        """,
    ),
    Migration(
        3,
        "rate limits and pending confirmations",
        # Numbers are kept as an HMAC under a random key made here (see bot/limits.py), never in
        # clear; pending confirmations hold the request until it is confirmed, cancelled or expires.
        """
        CREATE TABLE hash_keys (
            name TEXT PRIMARY KEY,
            key TEXT NOT NULL
        );
        INSERT INTO hash_keys (name, key) VALUES ('phone_number', lower(hex(randomblob(32))));
        CREATE TABLE rate_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            user_key TEXT NOT NULL,
            number_key TEXT NOT NULL,
            flow_id TEXT NOT NULL
        );
        CREATE INDEX rate_events_by_time ON rate_events (at);
        CREATE INDEX rate_events_by_user ON rate_events (user_key, at);
        CREATE INDEX rate_events_by_number ON rate_events (number_key, at);
        CREATE TABLE pending_confirmations (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            user_id TEXT NOT NULL,
            reasons TEXT NOT NULL,
            request TEXT NOT NULL
        );
        CREATE INDEX pending_confirmations_by_time ON pending_confirmations (created_at)
        """,
    ),
]


class DatabaseUrlError(ValueError):
    pass


def sqlite_path(url: str) -> str:
    """`sqlite:///./callbot.db` → `./callbot.db`; `sqlite:////var/lib/x.db` → `/var/lib/x.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise DatabaseUrlError(
            "only sqlite:/// URLs are supported, like sqlite:///./callbot.db or "
            "sqlite:////var/lib/callbot/callbot.db"
        )
    path = url[len(prefix):]
    if not path:
        raise DatabaseUrlError("the URL names no file (sqlite:///./callbot.db)")
    return path


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self._path = sqlite_path(url)
        self._conn: aiosqlite.Connection | None = None
        # One connection serves every coroutine: without this lock a statement of one request could
        # slip into another request's open transaction.
        self._lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit.
        self._conn = await aiosqlite.connect(self._path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await self._conn.execute("PRAGMA journal_mode = WAL")
        await self._conn.execute("PRAGMA foreign_keys = ON")
        await self.migrate(migrations)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        versions = [m.version for m in migrations]
        if len(set(versions)) != len(versions):
            raise RuntimeError(f"duplicate migration versions: {sorted(versions)}")
        await self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in await self.fetchall("SELECT version FROM schema_migrations")}
        done = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in applied:
                continue
            async with self.transaction() as tx:
                # executescript would COMMIT on its own; run the statements one by one instead.
                for statement in _statements(migration.sql):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (migration.version, migration.name),
                )
            logger.info("database migrated to version %d (%s)", migration.version, migration.name)
            done.append(migration.version)
        return done

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE: takes the write lock up front, so check-then-write is atomic.

        Inside, use the yielded Transaction (not the Database's own methods, which would wait for
        the lock this transaction holds).
        """
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        async with self._lock:
            return await Transaction(self.conn).execute(sql, params)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self._lock:
            return await Transaction(self.conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return await Transaction(self.conn).fetchall(sql, params)


class Transaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        cursor = await self._conn.execute(sql, tuple(params))
        return cursor.rowcount

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
