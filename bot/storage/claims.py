"""At most once: a key claimed in the database before an action that must not happen twice.

Slack can deliver the same thing twice (a Socket Mode envelope redelivered after a reconnect, a
double-clicked Submit, two replicas receiving one event); a phone must still ring once. The claim is
one INSERT on a primary key, atomic across coroutines and processes sharing the database.

A claim whose write committed but whose answer was lost (the connection dropped after COMMIT, a
PostgreSQL failover) is tried again by its caller, and would find the key taken by itself: what it
guards (a page, an escalation step's call) would then be done by nobody. A caller that tries again
names itself (`holder`, a token of its own for that one action): a claim by the same holder is
granted again, a claim by anyone else is not. `claim_when_answered` does both for work in the
background (an escalation's step, its page, the telling of its end).

What a claim guards can be written in the claim's own transaction (`then`): a post kept in the
outbox (bot/slack/outbox.py) is then never claimed without being written, nor written without
being claimed, whenever the bot dies.

A request's claim keeps a note of whom to tell (`untold`) until its call's row is written, in the
same statement as the claim: should its replica die in between, nothing was dialled and a take-over
round tells the requester so (bot/calls/untold.py). The note is compared as written, whole.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bot.storage.database import POSTGRESQL, Connection, Database
from bot.storage.faults import DATABASE_FAULTS, until_database_answers, wrote_nothing

logger = logging.getLogger(__name__)

# Slack redelivers within minutes; a day is far beyond any retry, and keeps the table small.
CLAIM_LIFETIME_SECONDS = 24 * 3600
# The key written as claimed by a holder, whoever held it: a takeover (`take_over_in`).
_TAKE = (
    "INSERT INTO claims (key, claimed_at, holder, untold) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, holder = excluded.holder,"
    " untold = excluded.untold"
)
# The claim itself, one statement on both databases: a new key, an expired claim of it, or the same
# named holder's own claim again is taken (one row written); anyone else's live claim is left as
# it is (none). A NULL holder equals nothing: only a claim that named itself is granted again.
_CLAIM = _TAKE + " WHERE claims.claimed_at < ? OR claims.holder = excluded.holder"
# How often, at most, one `Claims` clears the expired claims of other keys on PostgreSQL.
CLAIM_PURGE_EVERY_SECONDS = 60.0
# What a claim guards, written in the claim's transaction if it is granted.
Guarded = Callable[[Connection], Awaitable[None]]
# A request's note cleared, if it is there as written: (key, note).
_TOLD = "UPDATE claims SET untold = NULL WHERE key = ? AND untold = ?"


@dataclass(frozen=True)
class Untold:
    """A claimed request's note of whom to tell (bot/calls/untold.py), as its claim keeps it."""

    key: str
    note: str


class Claims:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._purged_at: float | None = None

    async def claim(self, key: str, *, holder: str | None = None, then: Guarded | None = None,
                    untold: str | None = None) -> bool:
        """True for the first claim of `key`; False for every later one (until it expires),
        except one by the same `holder` (its earlier try committed, its answer was lost).
        `then`: written in the claim's own transaction, if it is granted (again, to its holder:
        `then` finds its own earlier write). `untold`: the request's note, kept with the claim."""
        now = self._clock()
        if then is not None:
            async def claim_and_write(conn: Connection) -> bool:
                if not await claim_in(conn, key, now, holder=holder, untold=untold):
                    return False
                await then(conn)
                return True

            return await self._db.atomic(claim_and_write)
        if self._db.dialect == POSTGRESQL:
            # One statement, atomic on its own: the key's own expired claim is taken over in it.
            # The other keys' expired claims are cleared now and then, not in every request's
            # round trips (one during a burst of calls, where two were).
            if self._purged_at is None or now - self._purged_at >= CLAIM_PURGE_EVERY_SECONDS:
                await self._db.execute(
                    "DELETE FROM claims WHERE claimed_at < ?", (now - CLAIM_LIFETIME_SECONDS,)
                )
                self._purged_at = now
            taken = await self._db.execute(
                _CLAIM, (key, now, holder, untold, now - CLAIM_LIFETIME_SECONDS)
            )
            return taken == 1
        return await self._db.atomic(
            lambda conn: claim_in(conn, key, now, holder=holder, untold=untold))

    async def claim_or_give_back(self, key: str, *, untold: str | None = None) -> bool:
        """`claim(key)` for a request whose person is told to try again when the database fails
        on it: made under a holder of its own and, when the database fails, given back (only if
        it is that holder's: it committed and lost its answer), so that the try the refusal asks
        for is not refused as a repeat. Not after SQLite's "database is locked": nothing was
        written, and giving back would wait out the busy timeout a second time. Raises what the
        claim raised."""
        holder = secrets.token_hex(16)
        try:
            return await self.claim(key, holder=holder, untold=untold)
        except DATABASE_FAULTS as exc:
            if not wrote_nothing(exc):
                try:
                    await self.release(key, holder=holder)
                except DATABASE_FAULTS as again:
                    logger.warning("claim %s may be kept until it expires (%s)", key, again)
            raise

    async def first_or_unsure(self, key: str, what: str) -> bool:
        """`claim(key)` for a request whose copy would only answer again (a click or a refusal
        Slack delivers twice): True for the first delivery, and when the database fails to say
        (logged with `what`): the request then goes ahead rather than stay silent, and its own
        work meets the database."""
        try:
            return await self.claim(key)
        except DATABASE_FAULTS as exc:
            logger.warning("%s without its claim (%s)", what, type(exc).__name__)
            return True

    async def claim_when_answered(self, key: str, what: str, *,
                                  extra: Mapping[str, object] | None = None,
                                  holder: str | None = None, then: Guarded | None = None
                                  ) -> bool:
        """`claim(key)` for work done in the background: tried again for as long as the
        database fails (until_database_answers; `what`, `extra`: its warnings), under a holder of
        its own (`holder`, else a new token), so that a try which committed but lost its answer
        is granted the key again. `then`: as for claim()."""
        named = holder or secrets.token_hex(16)
        return await until_database_answers(lambda: self.claim(key, holder=named, then=then), what,
                                            extra=extra)

    async def take_over_in(self, conn: Connection, key: str, *, holder: str) -> None:
        """`key` claimed by `holder`, whoever held it, within the caller's transaction (which
        decided that the claim's holder will never act on it: bot/oncall/step_claims.py)."""
        await conn.execute(_TAKE, (key, self._clock(), holder, None))

    async def holder(self, key: str, *, on: Connection | None = None) -> str | None:
        """Who holds `key`: None if nobody does, or a claim that named no holder. `on`: the
        caller's transaction."""
        row = await (on or self._db).fetchone("SELECT holder FROM claims WHERE key = ?", (key,))
        return None if row is None else row["holder"]

    async def taken(self, key: str) -> bool:
        """Whether `key` is claimed now, by anyone (a request already handled, seen again)."""
        row = await self._db.fetchone("SELECT key FROM claims WHERE key = ? AND claimed_at >= ?",
                                      (key, self._clock() - CLAIM_LIFETIME_SECONDS))
        return row is not None

    async def release(self, key: str, *, holder: str | None = None) -> None:
        """Free `key` again: what it guarded certainly did not happen. `holder`: only if it is
        that holder's claim (it may have committed and lost its answer, or never been made)."""
        if holder is None:
            await self._db.execute("DELETE FROM claims WHERE key = ?", (key,))
        else:
            await self._db.execute("DELETE FROM claims WHERE key = ? AND holder = ?",
                                   (key, holder))


    # ------------------------------------------------------------------ requests' notes

    async def untold(self) -> list[tuple[str, str, float]]:
        """The notes kept (key, note, when claimed): requests whose call's row is not written yet,
        nor their requester told otherwise."""
        rows = await self._db.fetchall(
            "SELECT key, untold, claimed_at FROM claims WHERE untold IS NOT NULL")
        return [(str(row[0]), str(row[1]), float(row[2])) for row in rows]

    async def renote(self, key: str, note: str, new: str) -> bool:
        """`note` replaced with `new`, if it is there as written (a take-over round adopting it)."""
        return await self._db.execute("UPDATE claims SET untold = ? WHERE key = ? AND untold = ?",
                                      (new, key, note)) == 1

    async def told(self, untold: Untold, *, release: bool = False) -> None:
        """The request's requester was told (its note goes), if the note is there as written.
        `release`: the claim goes with it (what it guards may be asked for again)."""
        if release:
            await self._db.execute("DELETE FROM claims WHERE key = ? AND untold = ?",
                                   (untold.key, untold.note))
        else:
            await self._db.execute(_TOLD, (untold.key, untold.note))


async def claim_in(conn: Connection, key: str, now: float, *, holder: str | None = None,
                   untold: str | None = None) -> bool:
    """`Claims.claim` within the caller's own transaction (what it guards is written in it too)."""
    cutoff = now - CLAIM_LIFETIME_SECONDS
    await conn.execute("DELETE FROM claims WHERE claimed_at < ?", (cutoff,))
    return await conn.execute(_CLAIM, (key, now, holder, untold, cutoff)) == 1


async def note_in(conn: Connection, key: str, untold: str) -> None:
    """The note of `key`'s request, written within the transaction that claimed it."""
    await conn.execute("UPDATE claims SET untold = ? WHERE key = ?", (untold, key))


async def told_in(conn: Connection, untold: Untold) -> bool:
    """`untold` cleared within the caller's transaction (the one writing the call's row); False
    if it is not there as written (a take-over round told the requester)."""
    return await conn.execute(_TOLD, (untold.key, untold.note)) == 1
