"""The PostgreSQL backend's connections: at most `size` asyncpg connections, lent one at a time.

asyncpg's own pool costs about as much client CPU per loan as the statement it carries (a proxy
object, a timeout scope and a reset coroutine each time; 0.05 against 0.033 ms per statement,
measured), and a burst of calls makes some twenty loans per call. This one does only what the bot
needs: a free connection is lent at once, else a new one is opened (up to `size`), else the
borrower waits its turn, first come first served.

A connection comes back as it was lent, or not at all: the bot leaves no session state on one (see
bot/storage/postgres.py), a transaction ends inside the loan (asyncpg's `transaction()` commits or
rolls back), and a statement's own error (a constraint, a syntax error, a lock timeout) leaves the
connection usable. A loan that ends any other way (cancelled mid-statement, the connection lost, a
client-side timeout) closes its connection, as does one still inside a transaction: the next
borrower opens a fresh one rather than inherit a connection in an unknown state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any


class PoolClosed(RuntimeError):
    pass


class ConnectionPool:
    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._free: list[Any] = []
        self._open = 0  # lent, free or being opened
        # None: no connection to hand over, but room to open one.
        self._waiting: deque[asyncio.Future[Any | None]] = deque()
        self._closed = False

    async def start(self) -> None:
        """Open the first connection (so that a database that can't be reached fails here)."""
        self._give_back(await self._opened())

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self._borrow()
        try:
            yield conn
        except BaseException as exc:
            self._return(conn, reusable=_leaves_it_usable(exc) and not conn.is_in_transaction())
            raise
        self._return(conn, reusable=not conn.is_in_transaction())

    async def close(self) -> None:
        self._closed = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("database is closed"))
        free, self._free = self._free, []
        self._open -= len(free)
        await asyncio.gather(*(conn.close() for conn in free), return_exceptions=True)

    async def _borrow(self) -> Any:
        while True:
            if self._closed:
                raise PoolClosed("database is closed")
            while self._free:
                conn = self._free.pop()
                if not conn.is_closed():
                    return conn
                self._open -= 1  # lost while it was free (the server restarted, say)
            if self._open < self._size:
                return await self._opened()
            waiter: asyncio.Future[Any | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # Handed over just as the borrower gave up: to the next one.
                    handed = waiter.result()
                    if handed is not None:
                        self._give_back(handed)
                    else:
                        self._room_for_one()
                raise
            if conn is not None:
                return conn

    async def _opened(self) -> Any:
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._room_for_one()
            raise

    def _return(self, conn: Any, *, reusable: bool) -> None:
        if reusable and not conn.is_closed() and not self._closed:
            self._give_back(conn)
            return
        self._open -= 1
        conn.terminate()
        self._room_for_one()

    def _give_back(self, conn: Any) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self._closed:
            self._open -= 1
            conn.terminate()
            return
        self._free.append(conn)

    def _room_for_one(self) -> None:
        """A connection went: the first borrower waiting opens another."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _leaves_it_usable(exc: BaseException) -> bool:
    """The server refused a statement (the connection answered and waits for the next one), or
    the borrower's own code raised between statements; not a cancellation, a lost connection, a
    client-side timeout or any other trouble inside the driver."""
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        return not isinstance(exc, asyncpg.PostgresConnectionError)
    if type(exc).__module__.startswith("asyncpg"):
        return False
    return isinstance(exc, Exception) and not isinstance(exc, (OSError, TimeoutError))
