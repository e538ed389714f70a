"""Finding the session of a call whose answer named none: ``GET /sessions?to=…&startDate=…``.

What the evidence says (docs/evovoice-api.md): the filters' names are confirmed, their meaning is
not. ``to`` is a *contains* search; ``startDate`` and ``endDate`` are dates in an undocumented
zone (an absent ``endDate`` may mean ``startDate``'s day); ``sortField``'s values are undocumented.
So a lookup asks from the day before to the day after tomorrow, reads every page (bounded), and
keeps only voice sessions to exactly that number created since the given instant; if the server
refuses the sort, it asks without it from then on. A lookup that stopped before it read every
page says so (``SessionsFound.complete``): the call may be among the sessions it did not read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bot.evovoice.budget import Priority
from bot.evovoice.dates import parse_timestamp, times_within
from bot.evovoice.errors import BadRequest
from bot.evovoice.models import Session, is_address_of
from bot.evovoice.reading import read_items
from bot.evovoice.requester import Requester

logger = logging.getLogger("bot.evovoice.client")

# A session lookup pages through one or two days of sessions to one number: a few pages at most.
FIND_MAX_PAGES = 5
FIND_PAGE_SIZE = 50
# Newest first: sortField's values are undocumented (the vendor's CLI passes any through).
SESSIONS_SORT = {"sortField": "DateCreated", "sortOrder": "Descend"}


class SessionsFound(list[Session]):
    """A lookup's sessions, and whether it read every page of its window (``complete``): one
    that stopped at ``FIND_MAX_PAGES``, or at a page of sessions seen already while the server
    said more follow, has not ruled the call out."""

    def __init__(self, sessions: Iterable[Session] = (), *, complete: bool = True) -> None:
        super().__init__(sessions)
        self.complete = complete


class SessionFinder(Requester):
    """``find_sessions``, the client's lookup of a call's session (client.py)."""

    # Session lookups ask for SESSIONS_SORT until the server refuses it (find_sessions).
    sorts_sessions = True

    def find_sessions_query(
        self, account_ids: list[str], to: str, since: datetime
    ) -> dict[str, str]:
        """The query ``find_sessions`` sends first (``callbot check`` sends the same)."""
        # Its dates are on Evo Voice's clock (clock.py).
        since, now = self.clock.on_server(since), self.clock.on_server(datetime.now(UTC))
        # startDate's time zone is undocumented: the day before, in UTC, is on or before `since`
        # in every zone from UTC-12 to UTC+14.
        day_before = (since.astimezone(UTC) - timedelta(days=1)).date().isoformat()
        # endDate too, or a server defaulting it to startDate (a ServiceStack filter may) lists
        # that one day only, and none of today's calls. The day after tomorrow, in UTC, is after
        # today in every zone to UTC+14, whether the server reads it inclusive or exclusive.
        today = max(since, now).astimezone(UTC).date()
        day_after_next = (today + timedelta(days=2)).isoformat()
        query = {"accountIds": ",".join(account_ids), "to": to, "startDate": day_before,
                 "endDate": day_after_next}
        if self.sorts_sessions:
            query |= SESSIONS_SORT
        return query | {"page": "0", "countPerPage": str(FIND_PAGE_SIZE)}

    async def find_sessions(
        self,
        account_ids: list[str],
        *,
        to: str,
        since: datetime,
        priority: Priority = Priority.FIRST,
    ) -> SessionsFound:
        """Voice sessions to exactly ``to`` created at or after ``since`` (on this host's clock,
        moved onto Evo Voice's: clock.py), newest first.

        ``to`` is a *contains* filter on the server and its sort may be ignored, so every page of
        the window is read (at most ``FIND_MAX_PAGES``) and filtered here, by ``toAddress`` and by
        ``dateCreated``; finding nothing, it is asked once more with ``to`` without its plus. A
        session whose ``dateCreated`` can't be read is kept (it can't be ruled out), after the
        others. More pages than that, or a server that repeats a page while saying more follow,
        leave the lookup incomplete (``complete`` False).

        The sort only brings the newest first when a window holds more than ``FIND_MAX_PAGES``
        pages, and its values are undocumented: when the server refuses it (400) and answers the
        same lookup without it, lookups go unsorted from then on. A 400 without the sort is raised.
        """
        query = self.find_sessions_query(account_ids, to, since)
        since = self.clock.on_server(since)
        try:
            return await self._find_sessions(query, to, since, priority)
        except BadRequest as exc:
            if "sortField" not in query:
                raise
            refused = exc
        unsorted = {key: value for key, value in query.items() if key not in SESSIONS_SORT}
        found = await self._find_sessions(unsorted, to, since, priority)
        if self.sorts_sessions:
            self.sorts_sessions = False
            logger.warning(
                "Evo Voice GET /sessions refused sortField=%s (400 %s): looking sessions up "
                "unsorted from now on", SESSIONS_SORT["sortField"], refused.message,
            )
        return found

    async def _find_sessions(
        self, params: dict[str, str], to: str, since: datetime, priority: Priority
    ) -> SessionsFound:
        found: dict[str, Session] = {}
        complete = True
        # Every id listed, the call's or not: a page of ids seen already ends the lookup.
        seen: set[str] = set()
        for page in range(FIND_MAX_PAGES):
            data = await self._get_json(
                "/sessions", params | {"page": str(page)}, priority=priority
            )
            # A session of an odd shape (another call to the number, say) is left out; it might
            # be the one looked for, so the lookup is not complete.
            batch = read_items(Session, data, "/sessions", each=True)
            complete = complete and not batch.left_out
            now = self.clock.on_server(datetime.now(UTC))  # as the page was read
            new = [item for item in batch if item.id not in seen]
            seen.update(item.id for item in new)
            for session in new:
                # A text or a fax to the number (a monitoring system paging the same person) is
                # no call, however close to the attempt.
                if not is_address_of(session.to_address, to) or not session.may_be_a_call:
                    continue
                # A time without a zone is kept if it is after `since` in some zone a server may
                # keep (bot/evovoice/dates.py): read as UTC, a server west of it had every new
                # session before `since`, and one east of it had earlier calls after it.
                created = parse_timestamp(session.date_created)
                if created is None or times_within(session.date_created, since, now=now):
                    found[session.id] = session
            if not (isinstance(data, dict) and data.get("hasMorePages") is True):
                break
            if not new:
                complete = False  # the server ignores `page`: what follows can't be read
                break
        else:
            complete = False
            logger.warning("Evo Voice GET /sessions: stopped after %d pages", FIND_MAX_PAGES)
        if not found and params["to"].startswith("+"):
            # A toAddress written without its plus has no "+1814…" in it; "1814…" is in both (so
            # that lookup's completeness is this one's too).
            return await self._find_sessions(params | {"to": params["to"][1:]}, to, since,
                                             priority)
        oldest = datetime.min.replace(tzinfo=UTC)
        newest_first = sorted(
            found.values(), key=lambda s: parse_timestamp(s.date_created) or oldest, reverse=True
        )
        return SessionsFound(newest_first, complete=complete)
