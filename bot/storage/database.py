"""The database at `DATABASE_URL`: SQLite (the default, one host) or PostgreSQL (several replicas).

What must hold across restarts and replicas (audit trail, limits, idempotency claims, calls being
followed, escalations) lives here. The code above sees one `Database` whatever the backend: SQL
written with `?` placeholders in the dialect both understand, rows readable by column name and by
position, and a rowcount from `execute`.

- SQLite (`sqlite:///path`): one connection on its own thread, so the event loop never waits on the
  disk; WAL mode and a busy timeout let several processes on one host share the file.
- PostgreSQL (`postgresql://` or `postgres://`): a pool of asyncpg connections.

Two ways to write atomically, with the same meaning on both:
- `transaction()`: an `async with` block yielding a `Connection`; check-then-write inside it is
  atomic (SQLite: BEGIN IMMEDIATE takes the write lock up front; PostgreSQL: the transaction takes
  an advisory lock that every writing transaction of this database takes, the same rule).
- `atomic(unit)`: `await unit(conn)` inside one such transaction. On SQLite the whole unit runs on
  the database thread in one trip, however many statements it makes: during a burst every trip
  waits its turn on a busy event loop, and a transaction would hold the lock across all of them. So
  a unit awaits nothing but its connection's methods (no sleeps, no other I/O).

Migrations (bot/storage/migrations.py) are applied once, in version order, each inside a
transaction, and recorded in `schema_migrations`; replicas starting together migrate once (SQLite:
the write lock; PostgreSQL: an advisory lock). A database migrated by a newer callbot is refused
(`SchemaTooNew`): running old code on a schema it doesn't know could corrupt it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.storage.migrations import MIGRATIONS, Migration

T = TypeVar("T")

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
POSTGRES_POOL_SIZE = 10
# pg_advisory_xact_lock keys, per schema (hashtext(current_schema()) is mixed in), so two callbot
# databases in one PostgreSQL database (tests do that) don't wait on each other.
_PG_WRITE_LOCK = 0x63616C6C  # "call"
_PG_MIGRATION_LOCK = 0x6D696772  # "migr"

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

__all__ = [
    "MIGRATIONS",
    "Connection",
    "Database",
    "DatabaseUrlError",
    "IntegrityError",
    "Migration",
    "Row",
    "SchemaTooNew",
    "dialect_of",
    "sqlite_path",
]


class DatabaseUrlError(ValueError):
    pass


class IntegrityError(Exception):
    """A constraint refused the statement (a unique key taken, a trigger's refusal), on either
    backend."""


class SchemaTooNew(RuntimeError):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database is at schema version {found}, newer than this callbot knows ({known}): "
            "run the callbot version that migrated it, or a newer one"
        )
        self.found = found
        self.known = known


class Row(Protocol):
    """A result row: by column name or by position (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> Any: ...


class Connection(Protocol):
    """What a transaction or an atomic unit gets; `?` placeholders on both backends."""

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """The statement's rowcount (rows inserted, updated or deleted)."""

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...


def dialect_of(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return POSTGRESQL
    if url.startswith("sqlite:"):
        return SQLITE
    raise DatabaseUrlError(
        "use sqlite:///PATH (like sqlite:///./callbot.db or sqlite:////var/lib/callbot/callbot.db) "
        "or postgresql://USER:PASSWORD@HOST:5432/DBNAME"
    )


def sqlite_path(url: str) -> str:
    """`sqlite:///./callbot.db` → `./callbot.db`; `sqlite:////var/lib/x.db` → `/var/lib/x.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise DatabaseUrlError(
            "only sqlite:/// URLs name a file, like sqlite:///./callbot.db or "
            "sqlite:////var/lib/callbot/callbot.db"
        )
    path = url[len(prefix):]
    if not path:
        raise DatabaseUrlError("the URL names no file (sqlite:///./callbot.db)")
    return path


def check_url(url: str) -> None:
    """Raise DatabaseUrlError unless `url` is one the bot can open."""
    if dialect_of(url) == SQLITE:
        sqlite_path(url)


class Database:
    """The database at `url`; `open()` connects and migrates, `close()` lets go."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self._backend: _Backend = (
            _PostgresBackend(url) if self.dialect == POSTGRESQL else _SQLiteBackend(url)
        )

    async def open(self, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        await self._backend.open()
        await self.migrate(migrations)

    async def open_read_only(self) -> None:
        """Connect without changing anything: no file, no migration (for `callbot check`)."""
        await self._backend.open_read_only()

    async def close(self) -> None:
        await self._backend.close()

    async def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        versions = [m.version for m in migrations]
        if len(set(versions)) != len(versions):
            raise RuntimeError(f"duplicate migration versions: {sorted(versions)}")
        return await self._backend.migrate(sorted(migrations, key=lambda m: m.version))

    async def schema_version(self) -> int:
        """The highest migration applied; 0 for a database never migrated."""
        return await self._backend.schema_version()

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """`async with db.transaction() as tx:` — see the module docstring. Inside, use `tx`, not
        the Database's own methods (on SQLite they would wait for the lock the block holds)."""
        return self._backend.transaction()

    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        return await self._backend.atomic(unit)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        return await self._backend.execute(sql, tuple(params))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        return await self._backend.fetchone(sql, tuple(params))

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return await self._backend.fetchall(sql, tuple(params))


class _Backend(Protocol):
    async def open(self) -> None: ...
    async def open_read_only(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self, migrations: Sequence[Migration]) -> list[int]: ...
    async def schema_version(self) -> int: ...
    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...
    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T: ...
    async def execute(self, sql: str, params: tuple[Any, ...]) -> int: ...
    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> Row | None: ...
    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...


def _check_versions(applied: Iterable[int], migrations: Sequence[Migration]) -> None:
    known = max((m.version for m in migrations), default=0)
    found = max(applied, default=0)
    if found > known:
        raise SchemaTooNew(found, known)


# ---------------------------------------------------------------------------------------- SQLite


class _SQLiteBackend:
    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        # One connection serves every coroutine: without this lock a statement of one request could
        # slip into another request's open transaction.
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        """The file the URL names (or ":memory:")."""
        return self._path

    @property
    def conn(self) -> sqlite3.Connection:
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

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        await self._connect(self._path)
        await self.execute("PRAGMA journal_mode = WAL", ())
        await self.execute("PRAGMA foreign_keys = ON", ())

    async def open_read_only(self) -> None:
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
        await self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)", ()
        )
        rows = await self.fetchall("SELECT version FROM schema_migrations", ())
        applied = [int(row[0]) for row in rows]
        _check_versions(applied, migrations)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue

            def apply(conn: sqlite3.Connection, migration: Migration = migration) -> bool:
                # Under the write lock: another process may have applied it since we looked.
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                                (migration.version,)).fetchone():
                    return False
                # executescript would COMMIT on its own; run the statements one by one instead.
                for statement in _statements(migration.text_for(SQLITE)):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (migration.version, migration.name),
                )
                return True

            if await self._locked(apply):
                logger.info("database migrated to version %d (%s)", migration.version,
                            migration.name)
                done.append(migration.version)
        return done

    async def schema_version(self) -> int:
        exists = await self.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", ()
        )
        if exists is None:
            return 0
        row = await self.fetchone("SELECT MAX(version) FROM schema_migrations", ())
        return int(row[0]) if row and row[0] is not None else 0

    async def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on the database thread inside BEGIN IMMEDIATE … COMMIT, in one trip."""

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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            tx = _SQLiteTrips(self)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await tx.execute("ROLLBACK")
                raise
            else:
                await tx.execute("COMMIT")

    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        def run_unit(conn: sqlite3.Connection) -> T:
            return _run_inline(unit(_SQLiteInline(conn)))

        return await self._locked(run_unit)

    async def execute(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self._lock:
            return await _SQLiteTrips(self).execute(sql, params)

    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        async with self._lock:
            return await _SQLiteTrips(self).fetchone(sql, params)

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        async with self._lock:
            return await _SQLiteTrips(self).fetchall(sql, params)


def _sqlite_execute(conn: sqlite3.Connection, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
    try:
        return conn.execute(sql, tuple(params))
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc


def _sqlite_fetchone(conn: sqlite3.Connection, sql: str, params: Iterable[Any]) -> Row | None:
    cursor = _sqlite_execute(conn, sql, params)
    row: Row | None = cursor.fetchone()
    # Closing resets the statement: an INSERT … RETURNING read with fetchone is then complete.
    cursor.close()
    return row


class _SQLiteInline:
    """The connection an atomic unit gets on SQLite: already on the database thread, so each
    method does its work before returning and the unit's awaits never suspend."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        return _sqlite_execute(self._conn, sql, params).rowcount

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        return _sqlite_fetchone(self._conn, sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return list(_sqlite_execute(self._conn, sql, params).fetchall())


class _SQLiteTrips:
    """Statements inside `transaction()`: each is one trip to the database thread."""

    def __init__(self, backend: _SQLiteBackend) -> None:
        self._backend = backend

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        return await self._backend.run(
            lambda: _sqlite_execute(self._backend.conn, sql, params).rowcount
        )

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        return await self._backend.run(_sqlite_fetchone, self._backend.conn, sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return await self._backend.run(
            lambda: list(_sqlite_execute(self._backend.conn, sql, params).fetchall())
        )


def _run_inline(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a unit whose awaits all complete at once (see _SQLiteInline) to its end, here."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coroutine.close()
    raise RuntimeError("an atomic unit awaited something other than its connection")


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


# ------------------------------------------------------------------------------------ PostgreSQL


@lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """`?` placeholders → asyncpg's `$1, $2, …`; a `?` inside a quoted string stays."""
    out, n, quote = [], 0, ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def _rowcount(status: str) -> int:
    """asyncpg's command tag (`INSERT 0 1`, `UPDATE 3`, `DELETE 0`) → the row count."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PostgresConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        import asyncpg

        try:
            return _rowcount(await self._conn.execute(_numbered(sql), *params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc
        except asyncpg.RaiseError as exc:  # a trigger's refusal (the append-only audit tables)
            raise IntegrityError(str(exc)) from exc

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        import asyncpg

        try:
            row: Row | None = await self._conn.fetchrow(_numbered(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc
        return row

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return list(await self._conn.fetch(_numbered(sql), *params))


class _PostgresBackend:
    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: Any = None

    async def open(self) -> None:
        # Imported here: a SQLite installation never loads the PostgreSQL driver.
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self._url, min_size=1, max_size=POSTGRES_POOL_SIZE, command_timeout=30
        )

    async def open_read_only(self) -> None:
        await self.open()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        done = []
        async with self.pool.acquire() as conn:
            # Session-level lock: replicas starting together wait here, then find the work done.
            await conn.execute(
                "SELECT pg_advisory_lock(hashtext(current_schema()), $1)", _PG_MIGRATION_LOCK
            )
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
                _check_versions(applied, migrations)
                for migration in migrations:
                    if migration.version in applied:
                        continue
                    async with conn.transaction():
                        # No parameters: the simple protocol runs the whole script at once.
                        await conn.execute(migration.text_for(POSTGRESQL))
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at) VALUES"
                            " ($1, $2, to_char(now() AT TIME ZONE 'UTC',"
                            " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))",
                            migration.version, migration.name,
                        )
                    logger.info("database migrated to version %d (%s)", migration.version,
                                migration.name)
                    done.append(migration.version)
            finally:
                await conn.execute(
                    "SELECT pg_advisory_unlock(hashtext(current_schema()), $1)", _PG_MIGRATION_LOCK
                )
        return done

    async def schema_version(self) -> int:
        exists = await self.pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        version = await self.pool.fetchval("SELECT MAX(version) FROM schema_migrations")
        return int(version) if version is not None else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema()), $1)", _PG_WRITE_LOCK
            )
            yield _PostgresConnection(conn)

    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        async with self.transaction() as tx:
            return await unit(tx)

    async def execute(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self.pool.acquire() as conn:
            return await _PostgresConnection(conn).execute(sql, params)

    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        async with self.pool.acquire() as conn:
            return await _PostgresConnection(conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        async with self.pool.acquire() as conn:
            return await _PostgresConnection(conn).fetchall(sql, params)
