"""A database that counts its round trips (tests/test_write_together.py, tests/test_claims.py),
and a connection that notes its statements (tests/test_dialling_race.py too)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from bot.storage.database import Connection, Database, Row

T = TypeVar("T")


class Recording:
    """A connection that notes the statements made on it (and only awaits the connection)."""

    def __init__(self, conn: Connection, seen: list[str]) -> None:
        self._conn = conn
        self._seen = seen

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        self._seen.append(sql)
        return await self._conn.execute(sql, params)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        self._seen.append(sql)
        return await self._conn.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        self._seen.append(sql)
        return await self._conn.fetchall(sql, params)


class Counting:
    """The database, noting each round trip: a statement sent alone, or an atomic unit (with the
    statements made in it)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.dialect = db.dialect
        self.trips: list[list[str]] = []

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        self.trips.append([sql])
        return await self._db.execute(sql, params)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        self.trips.append([sql])
        return await self._db.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        self.trips.append([sql])
        return await self._db.fetchall(sql, params)

    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        seen: list[str] = ["(atomic unit)"]
        self.trips.append(seen)
        return await self._db.atomic(lambda conn: unit(Recording(conn, seen)))
