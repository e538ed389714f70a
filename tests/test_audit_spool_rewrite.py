"""A drain takes the records it wrote out of the audit spool (bot/audit/spool.py) without the ones
it leaves ever being only in memory: a full disk as it rewrites the file loses none of them, nor a
record appended meanwhile by another process, nor one appended by a process that opened the file
before the drain put a new one in its place. Each is written once all the same. Nor does an append
that finds the disk full cost the record appended after it.

The drain or the appender is a process of its own (tests/spool_processes.py), held at the moment
that matters by the spool's own lock, taken by the test: /proc/locks shows it waiting there."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import resource
import signal
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from bot.audit.spool import Spool, Spooled, database_id
from bot.audit.trail import EVENT_COLUMNS, AuditLog
from bot.storage.database import Database
from bot.storage.sqlite import create_owner_only
from tests.conftest import ROOT, until
from tests.processes import ForkedModule, run_test_module
from tests.spool_processes import attempt

# The room left on the "disk" for the rewrite: less than one record's line.
ROOM = 64


def line(key: str, table: str, values: dict[str, Any], database: str) -> str:
    return json.dumps({"key": key, "table": table, "values": values, "database": database}) + "\n"


def refused(key: str, database: str) -> str:
    """A record the database will not take: an event of an attempt it does not have."""
    values = dict.fromkeys(EVENT_COLUMNS) | {
        "attempt_id": 999, "at": "2026-01-01T00:00:00.000Z", "kind": "placed"}
    return line(key, "audit_events", values, database)


def keys_in(path: Path) -> list[str | None]:
    """The key of each line of the spool; None for a line cut short."""
    return [_key(text) for text in path.read_text().splitlines()]


def _key(text: str) -> str | None:
    try:
        return str(json.loads(text)["key"])
    except ValueError:
        return None


async def written(db: Database) -> list[str]:
    """The keys of the spooled records in the database, once per row."""
    rows = await db.fetchall("SELECT spool_key FROM audit_attempts WHERE spool_key IS NOT NULL"
                             " UNION ALL SELECT spool_key FROM audit_events"
                             " WHERE spool_key IS NOT NULL")
    return sorted(row[0] for row in rows)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """The spool's lock, as a process appending or draining takes it."""
    with path.open("r") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        yield


def waits_for_lock(pid: int, path: Path) -> bool:
    """Whether process `pid` waits for the lock of the file at `path` (a `->` line of /proc/locks:
    `1: -> FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`)."""
    inode = f":{path.stat().st_ino}"
    for held in Path("/proc/locks").read_text().splitlines():
        fields = held.split()
        if fields[1:3] == ["->", "FLOCK"] and fields[5] == str(pid) and fields[6].endswith(inode):
            return True
    return False


@asynccontextmanager
async def process(*args: str) -> AsyncIterator[ForkedModule | asyncio.subprocess.Process]:
    """`python -m tests.spool_processes ARGS`, forked from the tests' zygote (tests/zygote.py)."""
    child = await run_test_module("tests.spool_processes", *args, cwd=ROOT)
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if isinstance(child, ForkedModule):
            child.close()


async def drained_without_room(
    db: Database, path: Path, meanwhile: Spooled | None = None, database: str = ""
) -> tuple[bytes, bytes]:
    """What a drain in a process of its own says (its output, its log) when the disk is full as it
    rewrites `path`. `meanwhile`: a record appended by a spool of this process (of `database`)
    after the drain read the file."""
    async with process("drain", db.url, str(path)) as drain:
        assert drain.stdin is not None and drain.stdout is not None
        assert await drain.stdout.readline() == b"read\n"
        if meanwhile is not None:
            keeper = Spool(path, db, _never, database)
            assert keeper.keep(meanwhile)
            await keeper.stop()  # before its drain begins
        with locked(path):
            drain.stdin.write(b"go\n")
            await drain.stdin.drain()
            # It has written to the database, and waits to rewrite the spool: the disk fills up.
            await until(lambda: waits_for_lock(drain.pid, path), timeout=30)
            _, hard = resource.prlimit(drain.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(drain.pid, resource.RLIMIT_FSIZE, (ROOM, hard))
        return await drain.communicate()


async def _never(conn: object, record: Spooled) -> bool:
    raise AssertionError("the test drains the spool itself")


async def test_a_rewrite_that_finds_the_disk_full_leaves_every_record_still_to_be_written(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "spool"
    ours = await database_id(db)
    # Another database's record, one this database refuses, and one it takes.
    kept = [line("other", "audit_attempts", attempt("U2"), "elsewhere"), refused("e1", ours)]
    path.write_text("".join([*kept, line("k1", "audit_attempts", attempt("U1"), ours)]))

    said, logged = await drained_without_room(db, path)

    assert keys_in(path) == ["other", "e1", "k1"]  # k1 too: the rewrite taking it out failed
    assert await written(db) == ["k1"]
    assert said.endswith(b"drained 1\n") and b"File too large" in logged
    spool = await AuditLog.spool_of(db, path)
    await spool.drain()
    assert await written(db) == ["k1"]  # not twice
    assert path.read_text() == "".join(kept)


async def test_a_record_appended_while_a_drain_runs_is_kept_when_its_rewrite_finds_the_disk_full(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "spool"
    ours = await database_id(db)
    path.write_text(line("k1", "audit_attempts", attempt("U1"), ours))

    appended = Spooled("audit_attempts", attempt("U2"), "k2")
    said, _ = await drained_without_room(db, path, meanwhile=appended, database=ours)

    assert keys_in(path) == ["k1", "k2"]
    assert said.endswith(b"drained 1\n")
    spool = await AuditLog.spool_of(db, path)
    await spool.drain()
    assert await written(db) == ["k1", "k2"]
    assert path.read_text() == ""


async def test_a_record_appended_to_the_spool_a_drain_replaced_is_in_the_new_one(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "spool"
    ours = await database_id(db)
    # Another database's record stays: the drain puts a new file in the spool's place.
    other = line("other", "audit_attempts", attempt("U2"), "elsewhere")
    create_owner_only(path)  # as a bot makes it
    path.write_text(other + line("k1", "audit_attempts", attempt("U1"), ours))
    replaced = path.stat().st_ino

    async with process("keep", db.url, str(path), "k3", "U3") as appender:
        with locked(path):
            # It opened the spool, and waits for its lock: stopped there until the drain is done.
            await until(lambda: waits_for_lock(appender.pid, path), timeout=30)
            os.kill(appender.pid, signal.SIGSTOP)
            await until(lambda: _state(appender.pid) == "T")
        previous = os.umask(0o022)
        try:
            spool = await AuditLog.spool_of(db, path)
            await spool.drain()
            assert path.stat().st_ino != replaced  # else this test shows nothing
        finally:
            os.umask(previous)
            os.kill(appender.pid, signal.SIGCONT)
        said, _ = await appender.communicate()
    assert said == b"kept\n"

    assert keys_in(path) == ["other", "k3"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the new file too, whatever the umask
    await spool.drain()
    assert await written(db) == ["k1", "k3"]
    assert path.read_text() == other


def _state(pid: int) -> str:
    """The process's state letter (`T`: stopped), from /proc/PID/stat."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_an_append_that_finds_the_disk_full_costs_no_record_appended_after_it(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "spool"
    ours = await database_id(db)
    create_owner_only(path)
    path.write_text(line("k1", "audit_attempts", attempt("U1"), ours))

    async with process("keep", db.url, str(path), "k2", "U2") as appender:
        with locked(path):
            await until(lambda: waits_for_lock(appender.pid, path), timeout=30)
            # Room for the start of its line only.
            _, hard = resource.prlimit(appender.pid, resource.RLIMIT_FSIZE)
            room = path.stat().st_size + ROOM
            resource.prlimit(appender.pid, resource.RLIMIT_FSIZE, (room, hard))
        said, _ = await appender.communicate()
    assert said == b"not kept\n"  # it waits in that process's memory
    assert path.stat().st_size == room  # and the part of it written stays in the file
    # Room again: the next record is kept, and written.
    async with process("keep", db.url, str(path), "k3", "U3") as appender:
        said, _ = await appender.communicate()
    assert said == b"kept\n"
    spool = await AuditLog.spool_of(db, path)
    await spool.drain()
    assert await written(db) == ["k1", "k3"]


async def test_a_new_file_a_drain_killed_mid_rewrite_left_is_removed_by_the_next_drain(
    db: Database, tmp_path: Path
) -> None:
    # Killed between writing its new file and renaming it over the spool: the spool holds every
    # record still, and the new file (audit records, on disk for good) is only clutter.
    path = tmp_path / "spool"
    ours = await database_id(db)
    path.write_text(line("k1", "audit_attempts", attempt("U1"), ours))
    leftover = tmp_path / ".spool.x1y2z3.new"
    create_owner_only(leftover)
    leftover.write_text(line("k1", "audit_attempts", attempt("U1"), ours))
    unrelated = tmp_path / ".spool-other.x1y2z3.new"  # another file's: not this spool's to remove
    unrelated.write_text("")
    spool = await AuditLog.spool_of(db, path)
    await spool.drain()
    assert await written(db) == ["k1"]
    assert not leftover.exists() and unrelated.exists()
