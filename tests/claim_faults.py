"""A write that commits and whose answer is then lost, as when the connection drops after COMMIT:
a claim (bot/storage/claims.py: a caller that names itself is granted it again), a
transaction, or a statement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from bot.storage.claims import Claims
from bot.storage.database import Connection, Database

T = TypeVar("T")


class AnswerLost:
    """`Claims.claim`, except that the first claim of `key` commits and then loses its answer
    (raising as a dropped connection does)."""

    def __init__(self, claims: Claims, *keys: str) -> None:
        self._real = claims.claim
        self._keys = set(keys)
        self.lost: list[str] = []

    async def __call__(self, key: str, **kwargs: Any) -> bool:
        taken = await self._real(key, **kwargs)
        if key in self._keys and key not in self.lost:
            assert taken
            self.lost.append(key)
            raise ConnectionError("connection lost after COMMIT")
        return taken


class CommitAnswerLost:
    """`Database.transaction`, except that the first transaction that runs a statement holding
    `marker` commits and then loses its answer (raising as a dropped connection does)."""

    def __init__(self, db: Database, marker: str) -> None:
        self._real = db.transaction
        self._marker = marker
        self.lost = False

    @asynccontextmanager
    async def __call__(self, **kwargs: Any) -> AsyncIterator[Connection]:
        async with self._real(**kwargs) as tx:
            seen = _Watched(tx, self._marker)
            yield seen  # type: ignore[misc]
        if seen.matched and not self.lost:
            self.lost = True
            raise ConnectionError("connection lost after COMMIT")


class AtomicAnswerLost:
    """`Database.atomic`, except that the first unit that runs a statement holding `marker`
    commits and then loses its answer (raising as a dropped connection does)."""

    def __init__(self, db: Database, marker: str) -> None:
        self._real = db.atomic
        self._marker = marker
        self.lost = False

    async def __call__(self, unit: Callable[[Connection], Awaitable[T]], **kwargs: Any) -> T:
        watched: list[_Watched] = []

        async def run(tx: Connection) -> T:
            watched.append(_Watched(tx, self._marker))  # the last try's, if the unit is retried
            return await unit(watched[-1])

        result = await self._real(run, **kwargs)
        if watched and watched[-1].matched and not self.lost:
            self.lost = True
            raise ConnectionError("connection lost after COMMIT")
        return result


class StatementAnswerLost:
    """`Database.fetchone`, except that the first statement holding `marker`, run on its own (its
    own transaction), commits and then loses its answer (raising as a dropped connection does)."""

    def __init__(self, db: Database, marker: str) -> None:
        self._real = db.fetchone
        self._marker = marker
        self.lost = False

    async def __call__(self, sql: str, params: Any = ()) -> Any:
        row = await self._real(sql, params)
        if self._marker in sql and not self.lost:
            self.lost = True
            raise ConnectionError("connection lost after COMMIT")
        return row


class _Watched:
    """A transaction's connection that notes whether a statement held `marker`."""

    def __init__(self, tx: Connection, marker: str) -> None:
        self._tx = tx
        self._marker = marker
        self.matched = False

    async def execute(self, sql: str, params: Any = ()) -> int:
        self.matched = self.matched or self._marker in sql
        return await self._tx.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)
