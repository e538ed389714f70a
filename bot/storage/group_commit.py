"""SQLite writes that arrive together are committed together: one transaction, one commit.

Every commit in WAL mode syncs the log to disk. During a burst of calls every call writes several
times (its claim, its rate-limit slot, its audit record, its row), and one commit after another
on the one database thread made the calls queue behind each other's disk syncs: 1,000 commands
meant some 10,000 syncs in a row before the last call's result was in.

`GroupCommit` keeps the writes waiting while the database thread is busy and sends them over in one
trip when it is free: `BEGIN IMMEDIATE`, each write in a savepoint of its own, `COMMIT`. Each write
keeps its own meaning: it sees the ones before it, a write that fails is rolled back alone (its
caller gets its error; the others commit), and no caller hears of success before the commit. Should
the transaction itself fail (the lock not obtained within the busy timeout, the commit refused),
every write of the trip gets that error, as each would have on its own. A write waits no longer
than it does today: when the thread is free it leaves at once, alone.

When the trip failed because another process kept the write lock past the busy timeout, the writes
that queued up behind it meanwhile get that error too: they were waiting while the lock stayed
held, and sending them on would make each wave wait another full timeout in turn (ten writes
behind a held lock would take ten timeouts to hear of it). Writes arriving after that try afresh.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Write = Callable[[sqlite3.Connection], Any]
# Runs `fn(conn)` on the database thread; the future is done when it has.
Send = Callable[[Callable[[sqlite3.Connection], Any]], "asyncio.Future[Any]"]


class GroupCommit:
    def __init__(self, send: Send, transaction_open: asyncio.Lock) -> None:
        """`transaction_open` is held while a multi-trip transaction is open on the connection:
        no trip of writes may slip into it."""
        self._send = send
        self._transaction_open = transaction_open
        self._waiting: list[tuple[Write, asyncio.Future[Any]]] = []
        self._busy = False
        # Held while the writes wait for a transaction() to end (the loop keeps only weak ones).
        self._waiting_for_transaction: asyncio.Task[None] | None = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` inside a transaction on the database thread, its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((fn, future))
        self._next_trip()
        return await future

    def _next_trip(self) -> None:
        if self._busy or not self._waiting:
            return
        self._busy = True
        if self._transaction_open.locked():
            self._waiting_for_transaction = asyncio.ensure_future(self._after_transaction())
            return
        trip, self._waiting = self._waiting, []
        try:
            # Sent in the same turn of the loop as the check above: a transaction opened later
            # queues behind this trip on the database thread.
            sent = self._send(lambda conn: _commit_together(conn, [fn for fn, _ in trip]))
        except Exception as exc:  # the database is closed
            sent = asyncio.get_running_loop().create_future()
            sent.set_exception(exc)
        sent.add_done_callback(lambda done: self._trip_done(trip, done))

    async def _after_transaction(self) -> None:
        async with self._transaction_open:
            pass
        self._waiting_for_transaction = None
        self._busy = False
        self._next_trip()

    def _trip_done(
        self, trip: list[tuple[Write, asyncio.Future[Any]]], done: asyncio.Future[Any]
    ) -> None:
        self._busy = False
        failed = None if done.cancelled() else done.exception()
        if _lock_held_elsewhere(failed):
            trip, self._waiting = trip + self._waiting, []
        outcomes: list[tuple[bool, Any]] = [] if failed or done.cancelled() else done.result()
        for index, (_, future) in enumerate(trip):
            if future.done():  # its caller was cancelled; the write happened all the same
                continue
            if done.cancelled():  # the loop is closing
                future.cancel()
                continue
            if failed is not None:
                future.set_exception(failed)
                continue
            ok, value = outcomes[index]
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._next_trip()


def _lock_held_elsewhere(failed: BaseException | None) -> bool:
    return (
        isinstance(failed, sqlite3.OperationalError)
        and failed.sqlite_errorcode == sqlite3.SQLITE_BUSY
    )


def _commit_together(conn: sqlite3.Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
    """On the database thread: the writes in one transaction; (True, result) or (False, error)
    for each. Raises, for all of them, when the transaction itself fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes = [_in_savepoint(conn, fn) for fn in writes]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _in_savepoint(conn: sqlite3.Connection, fn: Write) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT write")
    try:
        value = fn(conn)
    except Exception as exc:
        if not conn.in_transaction:
            # SQLite rolled the whole transaction back (disk full, I/O error): the writes before
            # this one are gone too, so the trip fails as a whole.
            raise
        conn.execute("ROLLBACK TO write")
        conn.execute("RELEASE write")
        return False, exc
    conn.execute("RELEASE write")
    return True, value
