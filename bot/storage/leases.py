"""Leases: which replica runs which followed call and which escalation.

Several replicas share one database; each piece of long-running work (following a call, driving
an escalation chain) must run in exactly one of them. Its lease is a row (kind, row id, owner,
expiry): taken when the work starts, renewed while the owner lives, deleted when the work ends.
A replica that stops (SIGTERM) leaves its leases lapsed, owned by nobody: another replica (or the
next start) takes the work over at once, and finds the ends it was still showing as a dead
replica's (a lapsed lease of a call or escalation that is over). A replica that dies (SIGKILL, a
lost host) stops renewing; once its leases expire another replica takes the work over, from the
state in the database.

Timing, for `LEASE_SECONDS` = L: a lease is valid for 2/3 L after each renewal, renewals and the
search for work to take over happen every L/6 (renewals go on while a search waits, on Slack say),
so a dead replica's work is taken over within 5/6 L (and a replica that misses three renewals in a
row still keeps its work). Expiry times are read on each replica's own clock: keep the hosts'
clocks in sync (NTP), as every cluster does.

The replicas table is each replica's heartbeat, for `callbot check` ("which replicas are alive").
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.storage.database import Connection, Database
from bot.storage.together import NewRow
from bot.tasks import wait_or_wake

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0
FORGET_AFTER = 24 * 3600.0
LEASES_MIGRATION = 8  # the schema version that made the leases and replicas tables
NOBODY = ""  # the owner of a lease its replica left when it stopped
# The rows of a kind whose lease lapsed before a time (kind, time): a replica died or stopped while
# working on them. A subquery, not a join, for the rows' own tables: SQLite would walk every row of
# the day and look up each lease, where the leases held and left to lapse are a handful.
LAPSED_ROWS = "SELECT row_id FROM leases WHERE kind = ? AND expires_at < ?"


@dataclass(frozen=True)
class Replica:
    id: str
    host: str
    started_at: float
    seen_at: float


def replica_id() -> str:
    """Host, process and a random suffix: a restarted process on one host is a new replica."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self.owner = owner or replica_id()
        self.lease_seconds = lease_seconds
        self.valid_for = lease_seconds * 2 / 3
        self.every = lease_seconds / 6
        self._clock = clock
        self._started_at = clock()
        self._keeper: asyncio.Task[None] | None = None
        self._rounds: list[Callable[[], Awaitable[None]]] = []
        self._leaving = False  # `leaving()`: renewing only, taking nothing over
        self._woken = asyncio.Event()  # `wake()`: the next round now, not `every` seconds on

    async def take(self, kind: str, row_id: int, *, on: Connection | None = None) -> bool:
        """Take the lease of (kind, row_id) if nobody holds it, it has expired, or it is ours;
        `on` the transaction that creates the row, so that nobody ever sees it without its lease."""
        now = self._clock()
        taken = await (on or self._db).execute(
            "INSERT INTO leases (kind, row_id, owner, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, row_id) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at"
            " WHERE leases.expires_at < ? OR leases.owner = excluded.owner",
            (kind, row_id, self.owner, now + self.valid_for, now),
        )
        return taken == 1

    def new_lease(self, kind: str, table: str) -> NewRow:
        """The lease of a row about to be inserted into `table`, to write with it
        (bot/storage/together.py): a row that has just been made has no lease to take over."""
        values = {"kind": kind, "owner": self.owner, "expires_at": self._clock() + self.valid_for}
        return NewRow("leases", values, ids={"row_id": table})

    async def unowned(self, kind: str, row_ids: list[int]) -> list[int]:
        """Those of `row_ids` whose lease nobody holds: never taken, expired, or released."""
        if not row_ids:
            return []
        rows = await self._db.fetchall(
            "SELECT row_id FROM leases WHERE kind = ? AND expires_at >= ?", (kind, self._clock())
        )
        leased = {int(row[0]) for row in rows}
        return [row_id for row_id in row_ids if row_id not in leased]

    async def holds(self, kind: str, row_id: int) -> bool:
        """Whether this replica still owns the lease of (kind, row_id): not once another replica
        took it over (this one stalled past it), nor once it was given back or left lapsed."""
        row = await self._db.fetchone(
            "SELECT owner FROM leases WHERE kind = ? AND row_id = ?", (kind, row_id))
        return row is not None and row[0] == self.owner

    async def held(self, kind: str) -> set[int]:
        rows = await self._db.fetchall(
            "SELECT row_id FROM leases WHERE kind = ? AND owner = ?", (kind, self.owner)
        )
        return {int(row[0]) for row in rows}

    async def release(self, kind: str, row_id: int | None = None) -> None:
        """Let go of one lease (its work is over), or of every lease of this kind (at shutdown:
        lapsed, owned by nobody, not deleted, so the work that was going on is found)."""
        if row_id is None:
            await self._db.execute(
                "UPDATE leases SET owner = ?, expires_at = 0 WHERE kind = ? AND owner = ?",
                (NOBODY, kind, self.owner),
            )
        else:
            await self._db.execute(
                "DELETE FROM leases WHERE kind = ? AND row_id = ? AND owner = ?",
                (kind, row_id, self.owner),
            )

    async def lapse(self, kind: str, row_id: int) -> None:
        """Leave one lease lapsed, owned by nobody, as `release(kind)` leaves them all at
        shutdown: its work was cut short, and is found by whoever takes it over."""
        await self._db.execute(
            "UPDATE leases SET owner = ?, expires_at = 0 WHERE kind = ? AND row_id = ?"
            " AND owner = ?", (NOBODY, kind, row_id, self.owner),
        )

    async def renew(self) -> None:
        """Extend every lease this replica holds, and say it is alive."""
        now = self._clock()
        await self._db.execute(
            "UPDATE leases SET expires_at = ? WHERE owner = ?", (now + self.valid_for, self.owner)
        )
        await self._db.execute(
            "INSERT INTO replicas (id, host, started_at, seen_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            (self.owner, socket.gethostname(), self._started_at, now),
        )
        # Replicas killed long ago are forgotten (those stopped cleanly removed themselves).
        await self._db.execute("DELETE FROM replicas WHERE seen_at < ?", (now - FORGET_AFTER,))

    async def alive(self) -> list[Replica]:
        """The replicas seen within one lease period, oldest first (reads only)."""
        return await replicas_alive(self._db, self.lease_seconds, self._clock())

    async def others_alive(self, timeout: float = 1.0) -> bool:
        """Whether another replica renewed within a lease period; a database that doesn't say
        within `timeout` seconds: not known to be, so no."""
        try:
            async with asyncio.timeout(timeout):
                alive = await self.alive()
        except Exception:
            logger.warning("could not tell whether other replicas are alive", exc_info=True)
            return False
        return any(replica.id != self.owner for replica in alive)

    # ---------------------------------------------------------------------------- keeping

    def keep(self, rounds: list[Callable[[], Awaitable[None]]]) -> None:
        """Every `every` seconds: renew, then run `rounds` side by side (check and take over
        work). Kept already (with no rounds: the heartbeat of a bot waiting for Slack and Evo
        Voice), these rounds are run from now on, the next at once."""
        self._rounds = rounds
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name="lease keeper")
        else:
            self.wake()

    async def _keep(self) -> None:
        while True:
            try:
                await self.renew()
                if not self._leaving:
                    await self._renewing_meanwhile(self._rounds)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be briefly unreachable; the leases last several rounds.
                logger.exception("renewing leases failed; trying again in %.1f s", self.every)
            await wait_or_wake(self._woken, self.every)
            self._woken.clear()

    async def _renewing_meanwhile(self, rounds: list[Callable[[], Awaitable[None]]]) -> None:
        """Run `rounds`, renewing every `every` seconds until they are over: a round may wait
        on Slack for long (a dead replica's posts sent again, its requesters told), and this
        replica's own work, going on meanwhile, must not lapse and be taken over while it runs."""
        async def run() -> None:
            # Side by side, each on its own: one waiting on Slack, or failing every time (a bug on
            # one row), holds no other back; the escalations' round dials a dead replica's next
            # person, and must not wait for a call's requester to be told.
            ended = await asyncio.gather(*(round_() for round_ in rounds), return_exceptions=True)
            for round_, result in zip(rounds, ended, strict=True):
                if isinstance(result, Exception):
                    logger.error("the lease keeper's round %s failed; trying again in %.1f s",
                                 getattr(round_, "__qualname__", round_), self.every,
                                 exc_info=result)

        running = asyncio.create_task(run(), name="lease keeper's rounds")
        try:
            while not (await asyncio.wait({running}, timeout=self.every))[0]:
                try:
                    await self.renew()
                except Exception:
                    logger.warning("renewing leases during a long round failed",
                                   exc_info=True)
        finally:
            if not running.done():  # stopping
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        await running  # its own failure, if any (each round's is logged in `run`)

    def wake(self) -> None:
        """Start the keeper's next round now rather than at the end of its pause (or, during a
        round, right after it): for a test that made work to take over, or to erase."""
        self._woken.set()

    def leaving(self) -> None:
        """Take nothing more over, and go on renewing until `stop`: the work still winding down
        (a chain waiting for its call's POST to be answered) keeps its leases until its runner
        lets go of them, rather than being taken for a dead replica's after `valid_for`."""
        self._leaving = True

    async def stop(self) -> None:
        """Stop renewing and leave the replicas table (the leases are released by their runners)."""
        keeper, self._keeper = self._keeper, None
        if keeper is None:
            return  # never kept, or stopped already
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        try:
            await self._db.execute("DELETE FROM replicas WHERE id = ?", (self.owner,))
        except Exception:
            # Shutting down with the database gone: the row ages out of `alive()` on its own.
            logger.warning("could not remove replica %s from the replicas table", self.owner,
                           exc_info=True)


async def replicas_alive(db: Database, lease_seconds: float, now: float) -> list[Replica]:
    rows = await db.fetchall(
        "SELECT id, host, started_at, seen_at FROM replicas WHERE seen_at >= ? ORDER BY started_at",
        (now - lease_seconds,),
    )
    return [Replica(str(r[0]), str(r[1]), float(r[2]), float(r[3])) for r in rows]
