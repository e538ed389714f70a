"""The PostgreSQL backend (`postgresql://` or `postgres://`): a pool of asyncpg connections.

Transactions run at READ COMMITTED and take no lock of their own, so the writes of unrelated calls
(and replicas) run side by side. What must not interleave says so itself: a claim, a lease or an
escalation's request key is one INSERT … ON CONFLICT on a unique key (PostgreSQL decides between
racing inserts); the rate limits count and take a slot in one statement under an advisory lock
(bot/storage/rate_slot.py); any other check-then-write asks for an exclusive transaction, which
takes that same lock first. Until migration 10 every writing transaction took it, held across
every round trip to the bot: during a burst each call's five writes queued behind every other
call's, on every replica.

Replicas starting together migrate once (a session-level advisory lock, on a connection of its own,
closed afterwards). asyncpg is imported only when a PostgreSQL database is opened: its errors that
mean "the database failed for a while" leave this backend as `DatabaseFault`s (bot/storage/faults.py
lists that class, not the driver's), the others as they are.

A pooled connection is handed back as it was taken: the bot leaves no session state on one (no
SET, LISTEN, cursor, temporary table or session lock; transactions are always closed). So the pool
(bot/storage/pg_pool.py) runs no reset query (advisory unlock all, CLOSE ALL, UNLISTEN *, RESET ALL)
on every release, which cost as much client CPU as the statement itself; a connection whose loan
ended in a cancellation, a lost connection or inside a transaction is closed instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import cache, lru_cache, partial
from typing import Any, TypeVar

from bot.storage.backend import (
    POSTGRESQL,
    Connection,
    DatabaseFault,
    DatabaseRefused,
    IntegrityError,
    MigrationNotAllowed,
    Row,
    check_versions,
)
from bot.storage.migrations import Migration
from bot.storage.pg_pool import ConnectionPool
from bot.storage.rate_slot import LIMITS_LOCK

T = TypeVar("T")

POSTGRES_POOL_SIZE = 10
# The driver's own limits (asyncpg): a statement the server has not answered within
# COMMAND_TIMEOUT_SECONDS (stuck behind a lock, with no statement_timeout set on the server), or a
# connection not opened within CONNECT_TIMEOUT_SECONDS (a host that drops packets), ends in
# TimeoutError: a database fault like the server's own refusals.
COMMAND_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 60.0
# Advisory lock keys, per schema (hashtext(current_schema()) is mixed in), so two callbot databases
# in one PostgreSQL database (tests do that) don't wait on each other. Exclusive transactions and
# the rate limits (inside their function, bot/storage/rate_slot.py) take the same one: the one
# every writing transaction took before migration 10.
PG_EXCLUSIVE_LOCK = LIMITS_LOCK
PG_MIGRATION_LOCK = 0x6D696772  # "migr"


@lru_cache(maxsize=512)
def numbered_placeholders(sql: str) -> str:
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


@cache
def _driver_faults() -> tuple[type[Exception], ...]:
    """The server gone or refusing, a full disk, a read-only server, a lock not granted in time."""
    import asyncpg

    return (
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory
        asyncpg.exceptions.ReadOnlySQLTransactionError,
        asyncpg.exceptions.LockNotAvailableError,
        asyncpg.exceptions.QueryCanceledError,  # statement or lock timeout
        asyncpg.exceptions.CannotConnectNowError,
        # Seen on the first statement over a connection the server closed while it was idle
        # (a server restart): "cannot switch to state ...". The pool drops that connection.
        asyncpg.InternalClientError,
        # The driver's own timeouts (COMMAND_TIMEOUT_SECONDS, CONNECT_TIMEOUT_SECONDS); the pool
        # drops that connection too. Nothing else in a backend method raises it.
        TimeoutError,
        # Once open: the login or database the pool's next connection is refused (a password
        # rotated, a role disabled, the database renamed) is the database failing, waited out
        # and told as such; `open` names DATABASE_URL for them instead (`_refused`).
        *_refused(),
    )


@cache
def _refused() -> tuple[type[Exception], ...]:
    """The server refusing the URL's database, role or password."""
    import asyncpg

    return (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)


_FAULTS_NAMED_AFTER: dict[tuple[type[Exception], type[Exception]], type[Exception]] = {}


def _fault_named_after(
    driver_error: type[Exception], kind: type[Exception] = DatabaseFault
) -> type[Exception]:
    # Named as the driver's error, so what names an error's type (the start-up line, /readyz)
    # reads as before the translation.
    fault = _FAULTS_NAMED_AFTER.get((driver_error, kind))
    if fault is None:
        fault = type(driver_error.__name__, (kind,), {"__module__": __name__})
        _FAULTS_NAMED_AFTER[(driver_error, kind)] = fault
    return fault


@contextmanager
def _faults_translated() -> Iterator[None]:
    """Around what a backend method does, outside the pool's loan (bot/storage/pg_pool.py decides
    from the driver's own error whether a connection can be lent again)."""
    try:
        yield
    except _driver_faults() as exc:
        raise _fault_named_after(type(exc))(str(exc)) from exc


def _rowcount(status: str) -> int:
    """asyncpg's command tag (`INSERT 0 1`, `UPDATE 3`, `DELETE 0`) → the row count."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _version(conn: Any) -> int:
    """The highest migration applied (0: never migrated), on a driver connection."""
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return 0
    version = await conn.fetchval("SELECT MAX(version) FROM schema_migrations")
    return int(version) if version is not None else 0


class _PostgresConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        import asyncpg

        try:
            return _rowcount(await self._conn.execute(numbered_placeholders(sql), *params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc
        except asyncpg.RaiseError as exc:  # a trigger's refusal (the append-only audit tables)
            raise IntegrityError(str(exc)) from exc

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        import asyncpg

        try:
            row: Row | None = await self._conn.fetchrow(numbered_placeholders(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc
        return row

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return list(await self._conn.fetch(numbered_placeholders(sql), *params))


class PostgresBackend:
    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: ConnectionPool | None = None

    async def open(self) -> None:
        # Imported here: a SQLite installation never loads the PostgreSQL driver.
        import asyncpg

        pool = ConnectionPool(
            partial(asyncpg.connect, self._url, command_timeout=COMMAND_TIMEOUT_SECONDS,
                    timeout=CONNECT_TIMEOUT_SECONDS),
            POSTGRES_POOL_SIZE,
        )
        with _faults_translated():
            try:
                await pool.start()
            # The server refused the URL's database, role or password: DATABASE_URL to fix, not
            # a bug, nor a fault to wait out (as it is once the bot runs: `_driver_faults`).
            except _refused() as exc:
                raise _fault_named_after(type(exc), DatabaseRefused)(str(exc)) from exc
        self._pool = pool

    async def open_read_only(self) -> None:
        await self.open()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def migrate(
        self, migrations: Sequence[Migration], on_applied: Callable[[Migration], None]
    ) -> list[int]:
        with _faults_translated():
            return await self._migrate(migrations, on_applied)

    async def _migrate(
        self, migrations: Sequence[Migration], on_applied: Callable[[Migration], None]
    ) -> list[int]:
        import asyncpg

        # Not a pooled connection: its session-level lock ends with it, whatever happens here.
        # Nor bounded by COMMAND_TIMEOUT_SECONDS: a migration waits behind what holds its tables
        # (a pg_dump, an hour on a large database) and may take long itself (an index over years
        # of audit trail); failed after 30 s, every start failed alike and it was never applied.
        # The replicas starting meanwhile wait for it here too. The server's own statement_timeout
        # and lock_timeout, when set, still hold.
        conn = await asyncpg.connect(self._url, command_timeout=None,
                                     timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            # Replicas starting together wait here, then find the work done.
            await conn.execute(
                "SELECT pg_advisory_lock(hashtext(current_schema()), $1)", PG_MIGRATION_LOCK
            )
            try:
                return await self._apply(conn, migrations, on_applied)
            except asyncpg.InsufficientPrivilegeError as exc:
                # The README's role that owns nothing, started before the owner migrated.
                raise MigrationNotAllowed(await _version(conn), max(
                    (m.version for m in migrations), default=0), str(exc)) from exc
            finally:
                await conn.execute(
                    "SELECT pg_advisory_unlock(hashtext(current_schema()), $1)", PG_MIGRATION_LOCK
                )
        finally:
            await conn.close()

    async def _apply(
        self, conn: Any, migrations: Sequence[Migration], on_applied: Callable[[Migration], None]
    ) -> list[int]:
        done = []
        # Created only where missing: a role that may change rows but not the schema
        # (README, "Databases") is refused even CREATE TABLE IF NOT EXISTS.
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await conn.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        check_versions(applied, migrations)
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
            on_applied(migration)
            done.append(migration.version)
        return done

    async def schema_version(self) -> int:
        with _faults_translated():
            async with self.pool.connection() as conn:
                return await _version(conn)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[Connection]:
        with _faults_translated():
            async with self.pool.connection() as conn, conn.transaction():
                if exclusive:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(current_schema()), $1)",
                        PG_EXCLUSIVE_LOCK,
                    )
                yield _PostgresConnection(conn)

    async def atomic(
        self, unit: Callable[[Connection], Coroutine[Any, Any, T]], *, exclusive: bool = False
    ) -> T:
        async with self.transaction(exclusive=exclusive) as tx:
            return await unit(tx)

    async def execute(self, sql: str, params: tuple[Any, ...]) -> int:
        with _faults_translated():
            async with self.pool.connection() as conn:
                return await _PostgresConnection(conn).execute(sql, params)

    async def erase(self, sql: str, params: tuple[Any, ...]) -> int:
        # The old row versions are the server's to reclaim (VACUUM, autovacuum); nothing here
        # reaches the files.
        return await self.execute(sql, params)

    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        with _faults_translated():
            async with self.pool.connection() as conn:
                return await _PostgresConnection(conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        with _faults_translated():
            async with self.pool.connection() as conn:
                return await _PostgresConnection(conn).fetchall(sql, params)
