"""Audit records the database could not take, kept in a file beside it until it answers again.

A database that is locked past the busy timeout or turned read-only takes no audit record; one kept
only in memory would be lost to a restart meanwhile. So a record that met a failing database is
appended to the spool, `<database file>.audit-spool` (one JSON object per line, flushed to disk),
and written to the database by `drain()` once it answers: at the next start, or by this process as
soon as it can. Each record carries a random key, claimed in the transaction that writes it
(bot/storage/claims.py), so a drain cut short by a crash never writes a record twice.

One file serves every process on the host that shares the SQLite file: appending and draining hold
an exclusive lock on it (`flock`). PostgreSQL has no file of ours beside it: there the records wait
in memory (bot/audit/trail.py), and a restart while the database is unreachable loses them. A disk
too full for the database is too full for the spool too: same as PostgreSQL.
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

from bot.storage.database import Connection, Database
from bot.storage.faults import until_database_answers

logger = logging.getLogger(__name__)

SUFFIX = ".audit-spool"
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


class Spool:
    def __init__(self, path: Path, db: Database, write: Writer) -> None:
        self.path = path
        self._db = db
        self._write = write
        self._draining: asyncio.Task[None] | None = None

    @classmethod
    def beside(cls, db: Database, database_file: str | None, write: Writer) -> Spool | None:
        """The spool beside a SQLite database file; None for PostgreSQL (or `:memory:`)."""
        if database_file is None or database_file == ":memory:":
            return None
        return cls(Path(database_file + SUFFIX), db, write)

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
            logger.error("could not keep an audit record in %s (%s)", self.path, exc)
            return False
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
