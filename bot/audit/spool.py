"""Audit records the database could not take, kept in a file until it answers again.

A database that is locked past the busy timeout, turned read-only or unreachable takes no audit
record; one kept only in memory would be lost to a restart meanwhile. So a record that met a failing
database is appended to the spool (one JSON object per line, flushed to disk), and written to the
database by `drain()` once it answers: at the next start, or by this process as soon as it can.
Each record carries a random key, claimed in the transaction that writes it
(bot/storage/claims.py), so a drain cut short by a crash, or two processes draining one file, never
write a record twice.

Where the file is (`spool_path`): AUDIT_SPOOL; unset, `<database file>.audit-spool` beside a SQLite
file, `./callbot.audit-spool` (the working directory) for PostgreSQL. `AUDIT_SPOOL=off`, or a spool
that cannot be written (a read-only directory, a full disk), leaves the records waiting in memory
(bot/audit/trail.py): a restart while the database fails then loses them.

One file serves every process on the host that uses it: appending and draining hold an exclusive
lock on it (`flock`). Replicas on other hosts each have their own spool, drained into the one
database; one spool serves one database (its records are written to whichever database drains it).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from bot.storage.database import SQLITE, Connection, Database, dialect_of, sqlite_path
from bot.storage.faults import until_database_answers

logger = logging.getLogger(__name__)

SUFFIX = ".audit-spool"
# PostgreSQL has no file of ours to put the spool beside: it goes in the working directory.
POSTGRES_DEFAULT = Path("callbot.audit-spool")
OFF = "off"  # AUDIT_SPOOL=off: no spool, records wait in memory
# The claim that keeps a spooled record from being written twice (bot/storage/claims.py).
CLAIM_PREFIX = "audit-spool:"


@dataclass(frozen=True)
class Spooled:
    """One record as the database would have taken it: its table and its column values."""

    table: str  # "audit_attempts" or "audit_events"
    values: dict[str, Any]
    key: str = ""


# Writes one spooled record in the transaction that claims its key; False if it was written before.
Writer = Callable[[Connection, Spooled], Coroutine[Any, Any, bool]]


def spool_path(setting: str | None, database_url: str) -> Path | None:
    """The spool AUDIT_SPOOL names; unset, the one beside a SQLite file or `POSTGRES_DEFAULT`.
    None: no spool (`off`, or a SQLite database in memory)."""
    if setting:
        return None if setting.strip().lower() == OFF else Path(setting)
    if dialect_of(database_url) != SQLITE:
        return POSTGRES_DEFAULT
    database_file = sqlite_path(database_url)
    return None if database_file == ":memory:" else Path(database_file + SUFFIX)


class Spool:
    def __init__(self, path: Path, db: Database, write: Writer) -> None:
        self.path = path
        self._db = db
        self._write = write
        self._draining: asyncio.Task[None] | None = None
        self._failing = False  # the last append failed: said once, not once per record

    def keep(self, record: Spooled) -> bool:
        """Append `record` to the file, on disk before returning; False if it could not be."""
        record = Spooled(record.table, record.values, record.key or secrets.token_hex(8))
        line = json.dumps({"key": record.key, "table": record.table, "values": record.values})
        try:
            with self._locked("a") as file:
                file.write(line + "\n")
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            if not self._failing:
                logger.error(
                    "could not keep audit records in %s (%s): they wait in memory, and a restart "
                    "before the database answers loses them; set AUDIT_SPOOL to a writable file",
                    self.path, exc,
                )
            self._failing = True
            return False
        self._failing = False
        logger.warning("the database failed: an audit record waits in %s", self.path)
        self.drain_soon()
        return True

    def drain_soon(self) -> None:
        """Write the spooled records once the database answers (in the background)."""
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(
                until_database_answers(self.drain, "writing spooled audit records"),
                name="audit spool",
            )

    @property
    def waiting(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    async def drain(self) -> None:
        """Write every spooled record to the database, each once, then take them out of the
        file. Raises a database fault (the records stay) when the database fails again."""
        if not self.path.exists():
            return
        # The file is locked only to read it and to rewrite it, never across a database write:
        # a process appending meanwhile waits an instant, and keys keep two drains from writing
        # one record twice.
        with self._locked("r") as file:
            records = list(_read(file))
        for record in records:
            await self._db.atomic(partial(self._write_one, record))
        written: set[str | None] = {record.key for record in records}
        with self._locked("r+") as file:
            rest = [line for line in file if _key_of(line) not in written | {None}]
            file.seek(0)
            file.truncate()
            file.writelines(rest)
            file.flush()
            os.fsync(file.fileno())
        if records:
            logger.info("wrote %d spooled audit record(s) to the database", len(records))

    async def _write_one(self, record: Spooled, conn: Connection) -> bool:
        return await self._write(conn, record)

    async def stop(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
            await asyncio.gather(self._draining, return_exceptions=True)
            self._draining = None

    @contextmanager
    def _locked(self, mode: str) -> Iterator[IO[str]]:
        """The file, opened in `mode` and locked against the other processes on this host. Never
        held across an await: within one process the event loop already keeps them apart."""
        with self.path.open(mode, encoding="utf-8") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                yield file
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _read(file: IO[str]) -> Iterator[Spooled]:
    for number, line in enumerate(file, 1):
        record = _parse(line)
        if record is None:
            # A line cut short by a crash mid-append: nothing a database would take.
            logger.error("audit spool: line %d is unreadable and is dropped", number)
            continue
        yield record


def _parse(line: str) -> Spooled | None:
    try:
        raw = json.loads(line)
        return Spooled(str(raw["table"]), dict(raw["values"]), str(raw["key"]))
    except (ValueError, KeyError, TypeError):
        return None


def _key_of(line: str) -> str | None:
    record = _parse(line)
    return record.key if record is not None else None
