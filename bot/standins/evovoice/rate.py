"""A request rate limit for the stand-in, answering 429 past it.

Nothing public says whether Evo Voice limits request rates, how it answers past the limit, or what
``Retry-After`` it sends (docs/evovoice-api.md lists no 429). So a test sets the limit it needs and
the form of ``Retry-After``: ``"seconds"`` (delta-seconds), ``"date"`` (an HTTP-date), or ``None``
(no header). The window slides on ``clock``, which the test may drive.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web

from bot.standins.evovoice.behaviours import error


@dataclass
class RateLimit:
    """At most ``requests`` authenticated requests per ``seconds``; 429 for the rest."""

    requests: int
    seconds: float = 60.0
    retry_after: str | None = "seconds"  # or "date", or None
    clock: Callable[[], float] = time.monotonic
    refused: int = 0  # how many requests it answered 429
    _seen: deque[float] = field(default_factory=deque, repr=False)

    def refusal(self) -> web.Response | None:
        """None when this request is within the limit (and counted); else its 429."""
        now = self.clock()
        while self._seen and self._seen[0] <= now - self.seconds:
            self._seen.popleft()
        if len(self._seen) < self.requests:
            self._seen.append(now)
            return None
        self.refused += 1
        response = error(429, "TooManyRequests", "Too many requests")
        frees = self._seen[0] + self.seconds if self._seen else now + self.seconds
        wait = max(1, math.ceil(frees - now))
        if self.retry_after == "seconds":
            response.headers["Retry-After"] = str(wait)
        elif self.retry_after == "date":
            when = datetime.now(UTC) + timedelta(seconds=wait)
            response.headers["Retry-After"] = format_datetime(when, usegmt=True)
        return response
