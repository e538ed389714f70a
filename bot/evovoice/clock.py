"""Evo Voice's clock, as its answers' ``Date`` headers tell it.

A lookup compares the dates Evo Voice writes on its sessions with the moment of the bot's attempt
(bot/evovoice/finding.py): a call's session is dated on Evo Voice's clock, the attempt on the bot
host's. Nothing says the two agree (docs/evovoice-api.md), and the lookup allows them only 30 s
(CLOCKS_APART): a bot host running two minutes fast found no session created "before" the
attempt, and one running slow found someone else's call closer to it than its own. Every HTTP
answer carries a ``Date`` (RFC 9110, 6.6.1), to the second: the bot's instants are moved onto
Evo Voice's clock by the difference seen last. An answer a cache kept says for how long (``Age``,
RFC 9111, 5.1). A header further off than ``MAX_OFFSET`` is a broken one (a proxy's, say), not a
clock, and is ignored; without any, the clocks are taken to agree.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

MAX_OFFSET = timedelta(hours=1)


class ServerClock:
    """How far Evo Voice's clock is ahead of this host's (``offset``), from its last ``Date``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._last: tuple[str | None, str | None] = (None, None)

    def note(
        self, date_header: str | None, age_header: str | None = None,
        received: datetime | None = None,
    ) -> None:
        """An answer's ``Date`` and ``Age`` headers, read as it arrived (``received``: now)."""
        # Answers of one second say the same: read once (a burst of calls answers hundreds).
        if not date_header or (date_header, age_header) == self._last:
            return
        self._last = (date_header, age_header)
        try:
            sent = email.utils.parsedate_to_datetime(date_header)
            age = int(age_header) if age_header and age_header.strip().isdigit() else 0
            sent += timedelta(seconds=age)
        except (TypeError, ValueError, OverflowError):
            return
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
        # Taken as it arrived, to the second: a second or so behind Evo Voice's clock at most,
        # well within the 30 s a lookup allows.
        offset = sent - (received or datetime.now(UTC))
        if abs(offset) <= MAX_OFFSET:
            self.offset = offset

    def on_server(self, when: datetime) -> datetime:
        """``when``, on this host's clock, as Evo Voice's clock reads it."""
        return when + self.offset
