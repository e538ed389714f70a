"""Erasing the full numbers of calls kept past their retention (README: Audit trail).

A call's full number is kept for Call again and for finding an unconfirmed call's session, then
erased (`CallStore.forget_numbers`; `Database.erase` makes it gone from the files too). Erasing
needs only the database, so it begins as soon as the database is open: a bot waiting at start-up
for Slack or Evo Voice (bot/runtime.py), for minutes or for days, erases what falls due meanwhile.
Once the bot is up, the lease keeper's rounds run it (`CallFollower.erase_numbers`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.calls.polling import FollowTiming
from bot.calls.store import CallStore
from bot.storage.database import Database
from bot.storage.faults import DATABASE_FAULTS

logger = logging.getLogger(__name__)

# Numbers are looked for at most this often (but when asked to `force`): their retention is a day,
# and a round every few seconds would read the calls table for nothing.
NUMBER_PURGE_EVERY_SECONDS = 3600.0


class NumberRetention:
    def __init__(
        self, store: CallStore, retention: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock
        self._last_purge: float | None = None

    @classmethod
    def of(cls, db: Database) -> NumberRetention:
        """The retention every call's number has (`FollowTiming.number_retention`)."""
        return cls(CallStore(db), FollowTiming().number_retention)

    async def erase_due(self, *, force: bool = False) -> int:
        """Erase the full numbers of calls over for longer than the retention, unless that was
        done less than NUMBER_PURGE_EVERY_SECONDS ago; how many were erased."""
        now = self._clock()
        if not force and self._last_purge is not None and (
                now - self._last_purge < NUMBER_PURGE_EVERY_SECONDS):
            return 0
        erased = await self._store.forget_numbers(now - self._retention)
        self._last_purge = now
        if erased:
            logger.info("erased the numbers of %d finished call(s)", erased)
        return erased

    async def erase_due_meanwhile(self) -> None:
        """`erase_due` while the bot waits to start: the database failing now is said and tried
        again at the next wait, never a reason to stop waiting."""
        try:
            await self.erase_due()
        except DATABASE_FAULTS as exc:
            logger.warning("could not erase the numbers past their retention (%s); trying again "
                           "later", type(exc).__name__)
