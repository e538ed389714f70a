"""ServiceStack's dates, as the Evo Voice API sends them."""

from __future__ import annotations

import datetime as dt
import re

_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


def parse_timestamp(value: str | None) -> dt.datetime | None:
    """ServiceStack sends ISO 8601 or the WCF form `/Date(1700000000000-0000)/`; None if neither."""
    if not value:
        return None
    match = _MS_DATE.fullmatch(value.strip())
    if match:
        return dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
