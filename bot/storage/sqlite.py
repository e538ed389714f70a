"""The SQLite backend (`sqlite:///path`): one connection on its own thread, so the event loop never
waits on the disk; WAL mode and a busy timeout let several processes on one host share the file.
Writes that arrive while the thread is busy are committed together, each in a savepoint of its own
(group_commit.py): a burst pays one disk sync per trip, not one per write.

`transaction()` takes the write lock up front (BEGIN IMMEDIATE); `atomic(unit)` runs the whole unit
on the database thread in one trip (see bot/storage/database.py for why).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from bot.storage.backend import (
    SQLITE,
    Connection,
    DatabaseUrlError,
    IntegrityError,
    Row,
    check_versions,
    sqlite_busy_timeout_ms,
    sqlite_path,
)
from bot.storage.group_commit import GroupCommit
from bot.storage.migrations import Migration

T = TypeVar("T")

# Who may read a database file the bot makes: its owner alone, whatever the umask. It holds the
# audit trail's hash key (unless AUDIT_HASH_KEY is set) and the numbers of recent calls and pending
# questions in full, as secret as `.env` (bot/ops/init.py). SQLite gives the -wal and -shm files
# the database file's mode.
OWNER_ONLY = 0o600


def create_owner_only(path: str | Path) -> None:
    """Make `path` an empty file (an empty SQLite database) only its owner may read, unless a file
    is there already: an operator's own file keeps the mode they gave it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY))
    except FileExistsError:
        pass


class SQLiteBackend:
    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._busy_timeout_ms = sqlite_busy_timeout_ms(url)
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        # One connection serves every coroutine: held while a transaction() is open, so that no
        # statement of another request slips into it.
        self._lock = asyncio.Lock()
        # Writes outside transaction(): those arriving together are committed together.
        self._writes = GroupCommit(self._send, self._lock)
        # An erasure's -wal file not emptied yet (another process was reading): tried again.
        self._wipe_owed = False

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

    def _send(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._thread is None:
            raise RuntimeError("database is not open")
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, self.conn)

    async def _outside_transactions(self) -> None:
        """Returns when no transaction() is open; the caller's next trip must leave at once (in
        this turn of the loop), so that a transaction opened later queues behind it."""
        if self._lock.locked():
            async with self._lock:
                pass

    async def _connect(self, target: str, *, uri: bool = False) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callbot-db")

        def connect() -> sqlite3.Connection:
            # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit.
            conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            return conn

        self._sqlite = await self.run(connect)

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            create_owner_only(self._path)
        await self._connect(self._path)
        await self._switch_to_wal()
        await self.execute("PRAGMA foreign_keys = ON", ())
        # Deleted content is overwritten with zeros, not left in the pages' free space: an erased
        # number must be gone from the file (`erase`). Builds of SQLite differ in their default.
        await self.execute("PRAGMA secure_delete = ON", ())

    async def _switch_to_wal(self) -> None:
        """`PRAGMA journal_mode = WAL`, waited for as long as any lock is.

        Switching takes the database for itself. Connections switching a new file at once (replicas
        starting together) deadlock, which SQLite settles by failing one with "database is locked"
        at once, without waiting its busy timeout: that one tries again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout_ms / 1000
        while True:
            try:
                await self.execute("PRAGMA journal_mode = WAL", ())
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.01)

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

    async def migrate(
        self, migrations: Sequence[Migration], on_applied: Callable[[Migration], None]
    ) -> list[int]:
        await self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)", ()
        )
        rows = await self.fetchall("SELECT version FROM schema_migrations", ())
        applied = [int(row[0]) for row in rows]
        check_versions(applied, migrations)
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
                for statement in split_statements(migration.text_for(SQLITE)):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (migration.version, migration.name),
                )
                return True

            if await self._locked(apply):
                on_applied(migration)
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
                conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (a deferred constraint, a full disk), which may
                # leave the transaction open: left so, every later write here would fail.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        async with self._lock:
            return await self.run(unit)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[Connection]:
        # Always exclusive: BEGIN IMMEDIATE lets one writer in at a time.
        async with self._lock:
            tx = _SQLiteTrips(self)
            try:
                await tx.execute("BEGIN IMMEDIATE")
                yield tx
                await tx.execute("COMMIT")
            except BaseException:
                # Also when the caller was cancelled while BEGIN waited for another process's
                # lock, which may have come since: left open, the transaction would keep the
                # file's write lock and fail every later write. Shielded from a second cancel,
                # and sent before any later trip.
                await asyncio.shield(self._send(_roll_back))
                raise

    async def atomic(
        self, unit: Callable[[Connection], Coroutine[Any, Any, T]], *, exclusive: bool = False
    ) -> T:
        return await self._writes.write(lambda conn: _run_inline(unit(_SQLiteInline(conn))))

    async def execute(self, sql: str, params: tuple[Any, ...]) -> int:
        if _writes_rows(sql):
            return await self._writes.write(
                lambda conn: _sqlite_execute(conn, sql, params).rowcount
            )
        await self._outside_transactions()
        return await _SQLiteTrips(self).execute(sql, params)

    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        if _writes_rows(sql):
            return await self._writes.write(lambda conn: _sqlite_fetchone(conn, sql, params))
        await self._outside_transactions()
        return await _SQLiteTrips(self).fetchone(sql, params)

    async def erase(self, sql: str, params: tuple[Any, ...]) -> int:
        erased = await self.execute(sql, params)
        if erased or self._wipe_owed:
            await self._outside_transactions()
            self._wipe_owed = not await self.run(_empty_wal, self.conn, self._busy_timeout_ms)
        return erased

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        if _writes_rows(sql):
            return await self._writes.write(
                lambda conn: list(_sqlite_execute(conn, sql, params).fetchall())
            )
        await self._outside_transactions()
        return await _SQLiteTrips(self).fetchall(sql, params)


def _empty_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> bool:
    """Copy the -wal file's pages into the database and empty it; False when another process's
    read kept it from being emptied. SQLite leaves a page's earlier images in the -wal file until
    a checkpoint (in WAL mode, after 1,000 pages), and one reset but not truncated keeps them."""
    # Not waiting for those readers: the busy timeout would hold every write of this bot meanwhile.
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # never None
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    return bool(busy == 0)


def _roll_back(conn: sqlite3.Connection) -> None:
    """ROLLBACK if a transaction is open: SQLite rolls back on its own on some errors (a full
    disk, an I/O error), and a BEGIN given up on may never have run."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _writes_rows(sql: str) -> bool:
    """INSERT, UPDATE, DELETE, REPLACE: committed with the writes that arrive with it (reads,
    PRAGMAs and schema changes are one trip each, as they must be outside a transaction)."""
    return sql.lstrip()[:7].upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))


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

    def __init__(self, backend: SQLiteBackend) -> None:
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


def split_statements(sql: str) -> list[str]:
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

