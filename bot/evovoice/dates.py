"""ServiceStack's dates, as the Evo Voice API sends them."""

from __future__ import annotations

import datetime as dt
import re

_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")
# A DateTime never set comes as .NET's MinValue (0001-01-01) or the epoch: a placeholder.
_PLACEHOLDER_YEAR = 1970


def parse_timestamp(value: str | None) -> dt.datetime | None:
    """ServiceStack sends ISO 8601 or the WCF form `/Date(1700000000000-0000)/`; None if neither,
    or if it is a placeholder (`0001-01-01`, the epoch). An ISO time without an offset is UTC."""
    if not value:
        return None
    match = _MS_DATE.fullmatch(value.strip())
    if match:
        try:
            parsed = dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.UTC)
        except (ValueError, OverflowError, OSError):
            # Beyond what a datetime holds (a malformed answer): no date, as for any other text,
            # rather than an error that stops the follower of the call that carries it.
            return None
    else:
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed if parsed.year > _PLACEHOLDER_YEAR else None
