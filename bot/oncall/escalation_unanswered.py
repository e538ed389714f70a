"""An escalation's row whose write committed but whose answer was lost (a connection dropped after
COMMIT, a PostgreSQL failover).

The requester is told that nobody was called and to try again. Left as it was, the row (running,
its lease this replica's and renewed) was driven by nobody until the replica stopped, and then
its chain rang people long after; and the Submit the refusal asked for (the same form: the same
`request_key`) was ignored as a repeat. Such a row is given back (on this replica: the only one
that knows the row is not a repeat's): at once, or, when the database fails then too, in the
background until it answers, while the requester is told at once (made to wait for the database,
they would hear nothing for as long as it fails, and could believe on-call was being paged). Kept,
the row held the message's thread for nobody (every new form on it refused as an escalation "still
paging" there) until a restart ran its chain. The try of the same request that finds it meanwhile
gives it back too. Only a row nothing has touched: running, at its first step, with no step or
page written.
"""

from __future__ import annotations

import asyncio
import logging

from bot.runner import RowRunner
from bot.storage.database import Connection, Database
from bot.storage.faults import DATABASE_FAULTS, until_database_answers

logger = logging.getLogger(__name__)

_UNTOUCHED = (
    "SELECT id FROM escalations AS e WHERE request_key = ? AND created_at = ? AND state = ?"
    " AND step = 0"
    " AND NOT EXISTS (SELECT 1 FROM escalation_steps AS s WHERE s.escalation_id = e.id)"
    " AND NOT EXISTS (SELECT 1 FROM escalation_pages AS p WHERE p.escalation_id = e.id)"
)


class Unanswered:
    def __init__(self, db: Database, runner: RowRunner, *, running_state: str) -> None:
        self._db = db
        self._runner = runner
        self._running = running_state
        # request_key → created_at of a row whose write lost its answer, not given back yet.
        self._kept: dict[str, float] = {}
        self._giving_back: set[asyncio.Task[bool]] = set()

    async def lost(self, request_key: str, created_at: float) -> None:
        """The write of `request_key`'s row (made at `created_at`) failed: it may have committed.
        Given back now if the database answers, else in the background once it does."""
        self._kept[request_key] = created_at
        try:
            await self.give_back(request_key)
        except DATABASE_FAULTS as exc:
            logger.warning("escalation request %s: a row written without an answer is given back "
                           "once the database answers (%s)", request_key, type(exc).__name__)
            task = asyncio.create_task(until_database_answers(
                lambda: self.give_back(request_key),
                f"escalation request {request_key}: giving back a row written without an answer",
            ), name=f"giving back escalation request {request_key}")
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def give_back(self, request_key: str) -> bool:
        """True if a row of `request_key` whose answer was lost was given back; raises what the
        database raises (the row is then kept to give back)."""
        created_at = self._kept.get(request_key)
        if created_at is None:
            return False

        async def unit(conn: Connection) -> list[int]:
            rows = await conn.fetchall(_UNTOUCHED, (request_key, created_at, self._running))
            ids = [int(row[0]) for row in rows]
            for row_id in ids:
                await conn.execute("DELETE FROM leases WHERE kind = ? AND row_id = ?",
                                   (self._runner.kind, row_id))
                await conn.execute("DELETE FROM escalations WHERE id = ?", (row_id,))
            return ids

        ids = await self._db.atomic(unit)
        self._kept.pop(request_key, None)  # by this try, or by the request's own try meanwhile
        for row_id in ids:
            logger.warning("escalation %s, written but its answer lost, given back", row_id,
                           extra={"escalation_id": row_id})
            await self._runner.release(row_id)  # its lease is gone with it; nothing reserved
        return bool(ids)
