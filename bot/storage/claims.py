"""At most once: a key claimed in the database before an action that must not happen twice.

Slack can deliver the same thing twice (a Socket Mode envelope redelivered after a reconnect, a
double-clicked Submit, two replicas receiving one event); a phone must still ring once. The claim is
one INSERT on a primary key, atomic across coroutines and processes sharing the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.storage.database import POSTGRESQL, Connection, Database

# Slack redelivers within minutes; a day is far beyond any retry, and keeps the table small.
CLAIM_LIFETIME_SECONDS = 24 * 3600
# How often, at most, one `Claims` clears the expired claims of other keys on PostgreSQL.
CLAIM_PURGE_EVERY_SECONDS = 60.0


class Claims:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._purged_at: float | None = None

    async def claim(self, key: str) -> bool:
        """True for the first claim of `key`; False for every later one (until it expires)."""
        now = self._clock()
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
                "INSERT INTO claims (key, claimed_at) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at"
                " WHERE claims.claimed_at < ?",
                (key, now, now - CLAIM_LIFETIME_SECONDS),
            )
            return taken == 1
        return await self._db.atomic(lambda conn: claim_in(conn, key, now))

    async def release(self, key: str) -> None:
        """Free `key` again: what it guarded certainly did not happen."""
        await self._db.execute("DELETE FROM claims WHERE key = ?", (key,))


async def claim_in(conn: Connection, key: str, now: float) -> bool:
    """`Claims.claim` within the caller's own transaction (what it guards is written in it too)."""
    await conn.execute("DELETE FROM claims WHERE claimed_at < ?", (now - CLAIM_LIFETIME_SECONDS,))
    inserted = await conn.execute(
        "INSERT INTO claims (key, claimed_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, now)
    )
    return inserted == 1
