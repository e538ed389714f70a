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


class Claims:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def claim(self, key: str) -> bool:
        """True for the first claim of `key`; False for every later one (until it expires)."""
        now = self._clock()
        if self._db.dialect == POSTGRESQL:
            # No transaction around the two statements: each is atomic on its own, and clearing
            # expired claims first is all the order they need. Two round trips instead of four.
            return await claim_in(self._db, key, now)
        return await self._db.atomic(lambda conn: claim_in(conn, key, now))


async def claim_in(conn: Connection, key: str, now: float) -> bool:
    """`Claims.claim` within the caller's own transaction (what it guards is written in it too)."""
    await conn.execute("DELETE FROM claims WHERE claimed_at < ?", (now - CLAIM_LIFETIME_SECONDS,))
    inserted = await conn.execute(
        "INSERT INTO claims (key, claimed_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, now)
    )
    return inserted == 1
