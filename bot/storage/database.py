"""The database at `DATABASE_URL`: one SQLite connection, versioned migrations run at start-up.

SQLite (in WAL mode, with a busy timeout) lets several bot processes on one host share the file, so
what must hold across restarts and replicas (audit trail, limits, idempotency claims, calls being
followed) lives here. Every statement runs on the database's own thread (one connection, one
thread), so the event loop never waits on the disk.

Two ways to write atomically:
- `transaction()`: an `async with` block; each statement is one trip to the database thread.
- `atomic(fn)`: `fn` runs on the database thread inside BEGIN IMMEDIATE … COMMIT, in one trip,
  however many statements it makes. For hot paths (claims, rate limits): during a burst every trip
  waits its turn on a busy event loop, and a transaction holds the lock across all of its trips.

Migrations are append-only: a released migration is never edited. Each is applied once, in version
order, inside a transaction, and recorded in `schema_migrations`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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
        2,
        "audit trail and followed calls",
        """
        CREATE TABLE audit_attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            team_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            origin TEXT NOT NULL,
            repeat_of INTEGER REFERENCES audit_attempts (id),
            number_masked TEXT NOT NULL,
            number_hash TEXT,
            flow TEXT NOT NULL,
            flow_id TEXT,
            caller_id TEXT,
            decision TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX audit_attempts_by_user ON audit_attempts (team_id, user_id, id);
        CREATE INDEX audit_attempts_by_number ON audit_attempts (team_id, number_hash, id);
        CREATE TRIGGER audit_attempts_no_update BEFORE UPDATE ON audit_attempts
        BEGIN SELECT RAISE(ABORT, 'audit_attempts is append-only'); END;
        CREATE TRIGGER audit_attempts_no_delete BEFORE DELETE ON audit_attempts
        BEGIN SELECT RAISE(ABORT, 'audit_attempts is append-only'); END;

        CREATE TABLE audit_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            attempt_id INTEGER NOT NULL REFERENCES audit_attempts (id),
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            actor_id TEXT,
            reason TEXT,
            session_id TEXT,
            outcome TEXT,
            answered_by TEXT,
            duration_seconds REAL
        );
        CREATE INDEX audit_events_by_attempt ON audit_events (attempt_id, id);
        CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
        CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

        CREATE TABLE audit_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            attempt_id INTEGER REFERENCES audit_attempts (id),
            created_at REAL NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            parent_ts TEXT,
            status_ts TEXT,
            e164 TEXT,
            number_masked TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            caller_id TEXT,
            placement TEXT NOT NULL,
            note TEXT,
            session_id TEXT UNIQUE,
            state TEXT NOT NULL,
            following INTEGER NOT NULL,
            answered INTEGER NOT NULL DEFAULT 0,
            answered_by TEXT,
            outcome TEXT,
            duration_seconds REAL,
            hung_up_by TEXT,
            called_again_by TEXT,
            shown_digest TEXT,
            marked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX calls_being_followed ON calls (following)
        """,
    ),
    Migration(
        3,
        "rate limits and pending confirmations",
        # Numbers are kept as an HMAC under a random key made here (see bot/calls/limits.py), never
        # in clear; pending confirmations hold the request until it is confirmed, cancelled or
        # expires.
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
    Migration(
        4,
        "on-call overrides",
        """
        CREATE TABLE oncall_overrides (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            replaces TEXT NOT NULL,
            taken_by TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL NOT NULL
        );
        CREATE INDEX oncall_overrides_by_end ON oncall_overrides (ends_at)
        """,
    ),
    Migration(
        5,
        "on-call escalations",
        """
        CREATE TABLE escalations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_key TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            team_id TEXT NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            message_ts TEXT,
            origin TEXT NOT NULL,
            flow_id TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            reason TEXT,
            answer_timeout REAL NOT NULL,
            people TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0,
            step_started_at REAL,
            step_deadline REAL,
            step_call_id INTEGER REFERENCES calls (id),
            state TEXT NOT NULL,
            answered_by TEXT,
            stopped_by TEXT,
            finished_at REAL,
            shown_digest TEXT
        );
        CREATE INDEX escalations_by_state ON escalations (state);

        CREATE TABLE escalation_steps (
            escalation_id INTEGER NOT NULL REFERENCES escalations (id),
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            number_masked TEXT,
            call_id INTEGER,
            detail TEXT,
            PRIMARY KEY (escalation_id, step)
        )
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
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        # One connection serves every coroutine: without this lock a statement of one request could
        # slip into another request's open transaction.
        self._lock = asyncio.Lock()

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, for use on the database thread only (inside `atomic`)."""
        if self._sqlite is None:
            raise RuntimeError("database is not open")
        return self._sqlite

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the database thread (no lock: callers hold it where needed)."""
        if self._thread is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _connect(self, target: str, *, uri: bool = False) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callbot-db")

        def connect() -> sqlite3.Connection:
            # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit.
            conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return conn

        self._sqlite = await self.run(connect)

    async def open(self, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        await self._connect(self._path)
        await self.execute("PRAGMA journal_mode = WAL")
        await self.execute("PRAGMA foreign_keys = ON")
        await self.migrate(migrations)

    async def open_read_only(self) -> None:
        """Open an existing database without changing anything: no file, no migration, no pragma
        that writes (for `callbot check`). Raises if the file doesn't exist or isn't readable."""
        if self._path == ":memory:":
            raise DatabaseUrlError("an in-memory database has nothing to inspect")
        path = Path(self._path).resolve()
        # Reading a WAL database makes SQLite create its -wal/-shm files. Without a -wal file no
        # process is writing and everything is in the main file, which can be read as immutable
        # (no side files); with one, the files are there already and must be read for fresh data.
        wal = path.with_name(path.name + "-wal")
        uri = path.as_uri() + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1")
        await self._connect(uri, uri=True)

    async def close(self) -> None:
        if self._sqlite is not None:
            await self.run(self._sqlite.close)
            self._sqlite = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

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
        """The highest migration applied; 0 for a database never migrated."""
        exists = await self.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        if exists is None:
            return 0
        row = await self.fetchone("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """BEGIN IMMEDIATE: takes the write lock up front, so check-then-write is atomic.

        Inside, use the yielded Transaction (not the Database's own methods, which would wait for
        the lock this transaction holds).
        """
        async with self._lock:
            tx = Transaction(self)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await tx.execute("ROLLBACK")
                raise
            else:
                await tx.execute("COMMIT")

    async def atomic(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on the database thread inside BEGIN IMMEDIATE … COMMIT, in one trip.

        `fn` must only use the connection it is given (no awaiting, no other I/O); an exception
        from it rolls everything back and reaches the caller.
        """

        def unit() -> T:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        async with self._lock:
            return await self.run(unit)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        async with self._lock:
            return await Transaction(self).execute(sql, params)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self._lock:
            return await Transaction(self).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return await Transaction(self).fetchall(sql, params)


class Transaction:
    """Statements inside `Database.transaction()`: each is one trip to the database thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        def run() -> int:
            return self._db.conn.execute(sql, tuple(params)).rowcount

        return await self._db.run(run)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        def run() -> sqlite3.Row | None:
            row: sqlite3.Row | None = self._db.conn.execute(sql, tuple(params)).fetchone()
            return row

        return await self._db.run(run)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        def run() -> list[sqlite3.Row]:
            return list(self._db.conn.execute(sql, tuple(params)).fetchall())

        return await self._db.run(run)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements; a `;` inside a trigger body or a string doesn't split."""
    statements, pending = [], ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        statements.append(pending.strip().removesuffix(";"))
    return statements
