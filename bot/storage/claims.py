"""At most once: a key claimed in the database before an action that must not happen twice.

Slack can deliver the same thing twice (a Socket Mode envelope redelivered after a reconnect, a
double-clicked Submit, two replicas receiving one event); a phone must still ring once. The claim is
one INSERT on a primary key, atomic across coroutines and processes sharing the database.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from bot.storage.database import Database

# Slack redelivers within minutes; a day is far beyond any retry, and keeps the table small.
CLAIM_LIFETIME_SECONDS = 24 * 3600


class Claims:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def claim(self, key: str) -> bool:
        """True for the first claim of `key`; False for every later one (until it expires)."""
        now = self._clock()

        def claim(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM claims WHERE claimed_at < ?", (now - CLAIM_LIFETIME_SECONDS,))
            inserted = conn.execute(
                "INSERT OR IGNORE INTO claims (key, claimed_at) VALUES (?, ?)", (key, now)
            )
            return inserted.rowcount == 1

        return await self._db.atomic(claim)
