"""SQLite writes that wait for the database thread are committed together, each in its own right."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bot.storage.group_commit import GroupCommit


class DatabaseThread:
    """The one thread a SQLite database runs on, with a gate that holds its trips until opened
    (so that writes arriving meanwhile wait together), and every statement it ran."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.gate = threading.Event()
        self.statements: list[str] = []
        conn.set_trace_callback(self.statements.append)
        self._executor = ThreadPoolExecutor(max_workers=1)

    def send(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        def when_open(conn: sqlite3.Connection) -> Any:
            assert self.gate.wait(30)
            return fn(conn)

        return asyncio.get_running_loop().run_in_executor(self._executor, when_open, self.conn)

    def close(self) -> None:
        self.gate.set()
        self._executor.shutdown()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "callbot.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE keys (key TEXT PRIMARY KEY)")
    return path


@pytest.fixture
def thread(path: Path) -> Iterator[DatabaseThread]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 0")
    thread = DatabaseThread(conn)
    yield thread
    thread.close()
    conn.close()


def insert(key: str) -> Callable[[sqlite3.Connection], int]:
    return lambda conn: conn.execute("INSERT INTO keys VALUES (?)", (key,)).rowcount


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM keys").fetchone()[0])


def stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT key FROM keys ORDER BY key")]


async def test_writes_that_wait_together_commit_together_and_fail_alone(
    thread: DatabaseThread, path: Path
) -> None:
    commits = GroupCommit(thread.send, asyncio.Lock())
    first = asyncio.create_task(commits.write(insert("a")))
    await asyncio.sleep(0)  # on its way, alone, held at the gate
    waiting = [asyncio.create_task(commits.write(w)) for w in (insert("b"), insert("a"), count)]
    await asyncio.sleep(0)
    thread.gate.set()

    assert await first == 1
    b, second_a, seen = await asyncio.gather(*waiting, return_exceptions=True)
    assert b == 1
    assert isinstance(second_a, sqlite3.IntegrityError)  # refused alone …
    assert seen == 2  # … while the writes around it stand, each seeing those before it
    assert stored(path) == ["a", "b"]
    assert thread.statements.count("BEGIN IMMEDIATE") == 2
    assert thread.statements.count("COMMIT") == 2


async def test_a_transaction_that_fails_fails_every_write_in_it(
    thread: DatabaseThread, path: Path
) -> None:
    commits = GroupCommit(thread.send, asyncio.Lock())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    writes = [asyncio.create_task(commits.write(insert(key))) for key in ("a", "b")]
    await asyncio.sleep(0)
    thread.gate.set()
    for outcome in await asyncio.gather(*writes, return_exceptions=True):
        assert isinstance(outcome, sqlite3.OperationalError)
    other.execute("ROLLBACK")
    other.close()

    assert await commits.write(insert("c")) == 1  # and the next trip goes ahead
    assert stored(path) == ["c"]


async def test_a_commit_that_fails_fails_every_write_before_any_hears_success(
    thread: DatabaseThread, path: Path
) -> None:
    with sqlite3.connect(path) as conn:  # a foreign key checked only at COMMIT
        conn.execute("CREATE TABLE owners (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE pets (owner INTEGER REFERENCES owners (id)"
                     " DEFERRABLE INITIALLY DEFERRED)")
    thread.conn.execute("PRAGMA foreign_keys = ON")
    commits = GroupCommit(thread.send, asyncio.Lock())
    first = asyncio.create_task(commits.write(insert("x")))
    await asyncio.sleep(0)  # on its way, alone, held at the gate
    orphan = "INSERT INTO pets VALUES (42)"
    together = [asyncio.create_task(commits.write(w))
                for w in (insert("a"), lambda conn: conn.execute(orphan).rowcount)]
    await asyncio.sleep(0)
    thread.gate.set()

    assert await first == 1
    for outcome in await asyncio.gather(*together, return_exceptions=True):
        assert isinstance(outcome, sqlite3.IntegrityError), outcome
    assert stored(path) == ["x"]
    assert await commits.write(insert("c")) == 1  # rolled back: the next trip goes ahead
    assert stored(path) == ["c", "x"]


async def test_a_write_that_rolls_the_whole_transaction_back_fails_the_trip_with_its_error(
    thread: DatabaseThread, path: Path
) -> None:
    with sqlite3.connect(path) as conn:  # as SQLite does on a full disk or an I/O error
        conn.execute("CREATE TRIGGER no_z BEFORE INSERT ON keys WHEN NEW.key = 'z'"
                     " BEGIN SELECT RAISE(ROLLBACK, 'z rolls everything back'); END")
    commits = GroupCommit(thread.send, asyncio.Lock())
    first = asyncio.create_task(commits.write(insert("x")))
    await asyncio.sleep(0)  # on its way, alone, held at the gate
    together = [asyncio.create_task(commits.write(insert(key))) for key in ("a", "z", "b")]
    await asyncio.sleep(0)
    thread.gate.set()

    assert await first == 1
    for outcome in await asyncio.gather(*together, return_exceptions=True):
        assert isinstance(outcome, sqlite3.IntegrityError), outcome
        assert "z rolls everything back" in str(outcome)
    assert stored(path) == ["x"]
    assert await commits.write(insert("c")) == 1
    assert stored(path) == ["c", "x"]


async def test_writes_queued_behind_a_trip_that_met_a_held_lock_fail_with_it(
    thread: DatabaseThread, path: Path
) -> None:
    commits = GroupCommit(thread.send, asyncio.Lock())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    first = asyncio.create_task(commits.write(insert("a")))
    await asyncio.sleep(0)  # on its way, alone, held at the gate (waiting for the lock)
    queued = [asyncio.create_task(commits.write(insert(key))) for key in ("b", "c")]
    await asyncio.sleep(0)
    thread.gate.set()
    outcomes = await asyncio.gather(first, *queued, return_exceptions=True)
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    # They waited while the lock stayed held: not another busy timeout each, in turn.
    assert thread.statements.count("BEGIN IMMEDIATE") == 1
    other.execute("ROLLBACK")
    other.close()

    assert await commits.write(insert("d")) == 1  # a write arriving later tries afresh
    assert stored(path) == ["d"]



async def test_writes_queued_behind_a_trip_that_failed_otherwise_go_on_in_the_next(
    thread: DatabaseThread, path: Path
) -> None:
    """Only a lock held elsewhere fails the writes queued meanwhile: a trip that failed on its own
    (SQLite rolled it back, as on a full disk or an I/O error) leaves them to the next trip."""

    def rolled_back_then_failed(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # as SQLite does on a full disk or an I/O error…
        conn.execute("SELECT * FROM no_such_table")  # … then an OperationalError, not SQLITE_BUSY

    commits = GroupCommit(thread.send, asyncio.Lock())
    first = asyncio.create_task(commits.write(rolled_back_then_failed))
    await asyncio.sleep(0)  # on its way, alone, held at the gate
    queued = [asyncio.create_task(commits.write(insert(key))) for key in ("b", "c")]
    await asyncio.sleep(0)
    thread.gate.set()

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await first
    assert await asyncio.gather(*queued) == [1, 1]
    assert stored(path) == ["b", "c"]

async def test_writes_wait_until_an_open_transaction_ends(thread: DatabaseThread) -> None:
    transaction_open = asyncio.Lock()
    commits = GroupCommit(thread.send, transaction_open)
    thread.gate.set()
    await transaction_open.acquire()
    write = asyncio.create_task(commits.write(insert("a")))
    await asyncio.sleep(0.1)  # time enough for a trip sent to reach the database thread
    assert not write.done()
    assert thread.statements == []  # nothing was sent into the open transaction
    transaction_open.release()

    assert await write == 1
    assert thread.statements[0] == "BEGIN IMMEDIATE"


async def test_a_write_whose_caller_gave_up_holds_up_none_of_the_others(
    thread: DatabaseThread, path: Path
) -> None:
    commits = GroupCommit(thread.send, asyncio.Lock())
    first = asyncio.create_task(commits.write(insert("a")))  # leaves at once, held at the gate
    await asyncio.sleep(0)
    given_up = asyncio.create_task(commits.write(insert("b")))
    last = asyncio.create_task(commits.write(insert("c")))
    await asyncio.sleep(0)
    given_up.cancel()  # a request cancelled while its write waited for the next trip
    await asyncio.sleep(0)
    thread.gate.set()
    assert await first == 1
    assert await asyncio.wait_for(last, 5) == 1
    assert stored(path) == ["a", "b", "c"]  # the write happened all the same


async def test_a_cancelled_trip_cancels_its_writes_and_the_next_trip_goes_ahead(
    thread: DatabaseThread,
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    first_trip: list[asyncio.Future[Any]] = []

    def send(fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        if first_trip:
            return thread.send(fn)
        first_trip.append(loop.create_future())  # a trip the closing loop will cancel
        return first_trip[0]

    commits = GroupCommit(send, asyncio.Lock())
    try:
        write = asyncio.create_task(commits.write(insert("a")))
        await asyncio.sleep(0)
        first_trip[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        thread.gate.set()

        assert await commits.write(insert("b")) == 1
        assert errors == []  # the trip's callback finished without an error of its own
    finally:
        loop.set_exception_handler(None)
