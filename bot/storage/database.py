"""The database at `DATABASE_URL`: SQLite (the default, one host) or PostgreSQL (several replicas).

What must hold across restarts and replicas (audit trail, limits, idempotency claims, calls being
followed, escalations) lives here. The code above sees one `Database` whatever the backend: SQL
written with `?` placeholders in the dialect both understand, rows readable by column name and by
position, and a rowcount from `execute`.

- SQLite (`sqlite:///path`, bot/storage/sqlite.py): one connection on its own thread, so the event
  loop never waits on the disk; WAL mode and a busy timeout let several processes on one host share
  the file.
- PostgreSQL (`postgresql://` or `postgres://`, bot/storage/postgres.py): a pool of asyncpg
  connections.

The URL, the errors, `Row` and `Connection` are defined in bot/storage/backend.py and importable
from here.

Two ways to write atomically, with the same meaning on both:
- `transaction()`: an `async with` block yielding a `Connection`; its writes commit together or not
  at all. On SQLite it also runs alone (BEGIN IMMEDIATE takes the write lock up front); on
  PostgreSQL it runs beside others (READ COMMITTED, no lock of its own), so a check-then-write
  that must not interleave with another replica's is one statement deciding on a unique key
  (INSERT … ON CONFLICT: claims, leases), or locks what it counts (the rate limits,
  bot/storage/rate_slot.py), or asks for `transaction(exclusive=True)`: then it runs alone on
  PostgreSQL too (an advisory lock that every exclusive transaction takes first).
- `atomic(unit)`: `await unit(conn)` inside one such transaction. On SQLite the whole unit runs on
  the database thread in one trip, however many statements it makes: during a burst every trip
  waits its turn on a busy event loop, and a transaction would hold the lock across all of them. So
  a unit awaits nothing but its connection's methods (no sleeps, no other I/O).

And for the writes before a call's POST, which must cost one round trip on both: rows given as data
to `write_together` (bot/storage/together.py), a rate-limit slot taken first.

Migrations (bot/storage/migrations.py) are applied once, in version order, each inside a
transaction, and recorded in `schema_migrations`; replicas starting together migrate once (SQLite:
the write lock; PostgreSQL: an advisory lock). A database migrated by a newer callbot is refused
(`SchemaTooNew`): running old code on a schema it doesn't know could corrupt it. So is one this
callbot's role may not migrate (`MigrationNotAllowed`, PostgreSQL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from bot.storage.backend import (
    POSTGRESQL,
    SQLITE,
    Backend,
    Connection,
    DatabaseRefused,
    DatabaseUrlError,
    IntegrityError,
    MigrationNotAllowed,
    Row,
    SchemaRefused,
    SchemaTooNew,
    check_url,
    dialect_of,
    sqlite_path,
)
from bot.storage.migrations import MIGRATIONS, Migration
from bot.storage.postgres import PostgresBackend
from bot.storage.sqlite import SQLiteBackend

T = TypeVar("T")

logger = logging.getLogger(__name__)

__all__ = [
    "MIGRATIONS",
    "POSTGRESQL",
    "SQLITE",
    "Connection",
    "Database",
    "DatabaseRefused",
    "DatabaseUrlError",
    "IntegrityError",
    "Migration",
    "MigrationNotAllowed",
    "Row",
    "SchemaRefused",
    "SchemaTooNew",
    "check_url",
    "dialect_of",
    "sqlite_path",
]


class Database:
    """The database at `url`; `open()` connects and migrates, `close()` lets go."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self._backend: Backend = (
            PostgresBackend(url) if self.dialect == POSTGRESQL else SQLiteBackend(url)
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
        return await self._backend.migrate(sorted(migrations, key=lambda m: m.version), _applied)

    async def schema_version(self) -> int:
        """The highest migration applied; 0 for a database never migrated."""
        return await self._backend.schema_version()

    def transaction(self, *, exclusive: bool = False) -> AbstractAsyncContextManager[Connection]:
        """`async with db.transaction() as tx:` — see the module docstring. Inside, use `tx`, not
        the Database's own methods (on SQLite they would wait for the lock the block holds)."""
        return self._backend.transaction(exclusive=exclusive)

    async def atomic(
        self, unit: Callable[[Connection], Coroutine[Any, Any, T]], *, exclusive: bool = False
    ) -> T:
        return await self._backend.atomic(unit, exclusive=exclusive)

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        return await self._backend.execute(sql, tuple(params))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        return await self._backend.fetchone(sql, tuple(params))

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return await self._backend.fetchall(sql, tuple(params))

    async def erase(self, sql: str, params: Iterable[Any] = ()) -> int:
        """A statement erasing what must not be kept (a number past its retention); its rowcount.

        On SQLite the erased bytes are then gone from the files too, not only from what a query
        returns: secure_delete zeroes them in the pages, and the -wal file, which keeps earlier
        images of each page it changed, is checkpointed and emptied. When another process reading
        the database keeps it from being emptied, the next `erase` tries again. On PostgreSQL, old
        row versions stay until the server's VACUUM reclaims them.
        """
        return await self._backend.erase(sql, tuple(params))


def _applied(migration: Migration) -> None:
    logger.info("database migrated to version %d (%s)", migration.version, migration.name)
