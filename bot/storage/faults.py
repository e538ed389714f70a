"""When the database fails for a while: another process holding the write lock past the busy
timeout, a full disk, a file turned read-only. Nothing about the request is wrong, and the database
usually comes back: work that must not be lost (following a call, running an escalation, an audit
record) waits and tries again instead of dying.

    until_database_answers(work, what)   runs work() again after 0.5 s, 1 s, 2 s… (at most 30 s)
                                          for as long as the database fails; `extra`: the
                                          structured fields of its warnings (call_id, …)
    refused_when_database_fails(not_done) a request that found the database failing before it
                                          did anything: DatabaseUnavailable, told to the person
                                          ("so nothing was hung up", with a reference)
    DATABASE_FAULTS                       the errors that mean "the database failed", not "a bug"
    wrote_nothing(exc)                    such an error that certainly committed nothing
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from bot.errors import DatabaseUnavailable, reference_id
from bot.storage.backend import DatabaseFault

logger = logging.getLogger(__name__)

T = TypeVar("T")


# SQLite: locked, full, read-only, disk I/O error are all OperationalError; an IntegrityError is a
# bug. PostgreSQL: the server gone or refusing, a full disk, a read-only server, a lock, as the
# backend translates them (bot/storage/postgres.py); a connection refused before it opened.
DATABASE_FAULTS: tuple[type[Exception], ...] = (
    sqlite3.OperationalError, ConnectionError, DatabaseFault,
)
FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 30.0


def wrote_nothing(exc: Exception) -> bool:
    """SQLite's "database is locked" (or busy): the write never began, so nothing committed;
    any other fault may have come after a COMMIT whose answer was lost."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


async def until_database_answers(
    work: Callable[[], Awaitable[T]],
    what: str,
    *,
    first_pause: float | None = None,  # FIRST_PAUSE_SECONDS, read when called
    max_pause: float = MAX_PAUSE_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    extra: Mapping[str, object] | None = None,
) -> T:
    """`work()`, run again after a growing pause for as long as the database fails. `extra`:
    the fields its warnings carry (the escalation_id, call_id… `what` names), so the logs find
    them by field."""
    pause = FIRST_PAUSE_SECONDS if first_pause is None else first_pause
    while True:
        try:
            return await work()
        except DATABASE_FAULTS as exc:
            logger.warning("%s: the database failed (%s); trying again in %.1f s",
                           what, exc, pause, extra=dict(extra or {}))
        await sleep(pause)
        pause = min(pause * 2, max_pause)


@contextmanager
def refused_when_database_fails(not_done: str, *, reading: bool = False) -> Iterator[None]:
    """Around the part of a request that reads or writes before it has any effect: a database
    fault there becomes DatabaseUnavailable (a refusal told to the person, `not_done` saying what
    was not done; `reading`: the request only reads, and is told so), logged once with the
    database's own words under the reference it gives.

    Only around that part: after the effect (a call hung up, a chain stopped) the words would be
    false, and what remains to write waits for the database instead (until_database_answers)."""
    try:
        yield
    except DATABASE_FAULTS as exc:
        raise database_refusal(exc, not_done, reading=reading) from None


def database_refusal(
    exc: Exception, not_done: str, *, reading: bool = False
) -> DatabaseUnavailable:
    """The refusal told to the person for a database fault before the request had any effect,
    logged once with the database's own words under the reference it gives."""
    reference = reference_id()
    logger.error("the database failed (%s), so %s; reference %s", exc, not_done, reference)
    return DatabaseUnavailable(reference, not_done, reading=reading)
