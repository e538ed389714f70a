"""Processes of their own using one audit spool (bot/audit/spool.py), for
tests/test_audit_spool_rewrite.py: `python -m tests.spool_processes drain DATABASE_URL SPOOL` and
`python -m tests.spool_processes keep DATABASE_URL SPOOL KEY USER`.

`drain` says `read` on its output once the drain has read the spool, and waits there, before its
first database write, for a line on its input: meanwhile the test appends to the spool, or takes its
lock so as to find the drain's rewrite waiting for it. It ends saying `drained N`.

`keep` appends an attempt of USER (`attempt`) under KEY, as a bot whose database fails, and ends
saying `kept`, or `not kept` if it could not be (and waits in memory).

Either ignores SIGXFSZ, so that a file size limit the test sets on it (`prlimit`) as it waits for
the spool's lock fails its write with EFBIG, as a full disk fails one with ENOSPC, rather than
killing it.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from bot.audit.spool import Spool, Spooled, database_id
from bot.audit.trail import ATTEMPT_COLUMNS, AuditLog
from bot.storage.database import Connection, Database


def attempt(user: str) -> dict[str, Any]:
    """The values of a refused /call's attempt by `user`, as the bot spools it."""
    return dict(zip(ATTEMPT_COLUMNS, (
        "2026-01-01T00:00:00+00:00", "T1", user, "C1", "command", None, "+1 814 ••• 3093", None,
        "escalation", None, None, "refused", "DatabaseUnavailable", None,
    ), strict=True))


async def drain(db: Database, path: Path) -> None:
    spool = await AuditLog.spool_of(db, path)
    write = spool.write  # the bot's own writer, behind the pause
    paused = False

    async def write_once_the_test_says(conn: Connection, record: Spooled) -> bool:
        nonlocal paused
        if not paused:
            paused = True
            print("read", flush=True)
            # Blocking: on SQLite this runs in the database's thread, with no event loop.
            sys.stdin.readline()
        return await write(conn, record)

    spool.write = write_once_the_test_says
    print(f"drained {await spool.drain()}", flush=True)


async def keep(db: Database, path: Path, key: str, user: str) -> None:
    spool = Spool(path, db, _never, await database_id(db))
    kept = spool.keep(Spooled("audit_attempts", attempt(user), key))
    await spool.stop()  # before its drain begins: the test drains
    print("kept" if kept else "not kept", flush=True)


async def _never(conn: Connection, record: Spooled) -> bool:
    raise AssertionError("the test drains the spool, not this process")


async def main(command: str, url: str, path: str, *args: str) -> None:
    db = Database(url)
    await db.open()
    try:
        if command == "drain":
            await drain(db, Path(path))
        else:
            await keep(db, Path(path), *args)
    finally:
        # The database's own files may grow again (SQLite checkpoints as it closes).
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        await db.close()


if __name__ == "__main__":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    asyncio.run(main(*sys.argv[1:]))
