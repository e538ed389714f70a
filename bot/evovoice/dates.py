"""ServiceStack's dates, as the Evo Voice API sends them.

A session's ``dateCreated`` may come without a zone (an ISO time with no offset, or ServiceStack's
``/Date(ms-0000)/``: see ``has_zone``): nothing public says which zone the server writes it in
(docs/evovoice-api.md), so such a time is never compared with the bot's clock as if it were UTC.
``times_within`` reads it in every zone a server may keep, UTC-12 to UTC+14 in quarter hours, and
``gap`` measures it from a moment in the zone that brings it closest. Differences between two
times of one session (a call's duration) need no zone.
"""

from __future__ import annotations

import datetime as dt
import re

_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")
# The suffix ServiceStack.Text writes after the milliseconds of a DateTime of unspecified kind (as
# read from a database column without a zone); a local time gets its real offset ("+0000" on a
# server on UTC), a UTC one none.
UNSPECIFIED_OFFSET = "-0000"
# The offsets from UTC that zones use: quarter hours (Nepal's +05:45, Chatham's +12:45), UTC-12
# to UTC+14.
ZONE_OFFSETS = tuple(dt.timedelta(minutes=m) for m in range(-12 * 60, 14 * 60 + 1, 15))
# How far the bot's clock and Evo Voice's may be apart (as the lookups' 30 s before the attempt).
CLOCKS_APART = dt.timedelta(seconds=30)
# A DateTime never set comes as .NET's MinValue (0001-01-01) or the epoch: a placeholder.
_PLACEHOLDER_YEAR = 1970
# ...or as its MaxValue (9999-12-31T23:59:59.9999999), hours from the last moment a datetime holds:
# read in a zone east of UTC it is beyond it (OverflowError), so it is no date either.
_LAST_YEAR = 9999


def parse_timestamp(value: str | None) -> dt.datetime | None:
    """ServiceStack sends ISO 8601 or the WCF form `/Date(1700000000000-0000)/`; None if neither,
    or if it is a placeholder (`0001-01-01`, the epoch, `9999-12-31`). An ISO time without an
    offset is given as if it were UTC: good for the difference of two such times, not for
    comparing one with now (`has_zone`, `times_within`, `gap`)."""
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
    return parsed if _PLACEHOLDER_YEAR < parsed.year < _LAST_YEAR else None


def has_zone(value: str | None) -> bool:
    """Whether a date says which moment it is (an offset, a `Z`, or `/Date(ms)/`, but not
    `/Date(ms-0000)/`: ServiceStack's form of a time of no zone, whose milliseconds took its wall
    time for the server process's own zone, which nothing says it was written in)."""
    if not value:
        return False
    if (match := _MS_DATE.fullmatch(value.strip())) is not None:
        return match.group(2) != UNSPECIFIED_OFFSET
    try:
        return dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def times_within(
    value: str | None, earliest: dt.datetime, latest: dt.datetime | None = None, *,
    now: dt.datetime | None = None,
) -> list[dt.datetime]:
    """The moments `value` may be that lie in [`earliest`, `latest`]: the one it names, or, for a
    time without a zone, that time in each zone from UTC-12 to UTC+14 (`latest` None: no bound
    for a time with its zone; for one without, `now` (default this host's), give or take how far
    clocks may be apart)."""
    parsed = parse_timestamp(value)
    if parsed is None:
        return []
    if has_zone(value):
        return [parsed] if parsed >= earliest and (latest is None or parsed <= latest) else []
    latest = latest or (now or dt.datetime.now(dt.UTC)) + CLOCKS_APART
    return [t for t in (parsed - offset for offset in ZONE_OFFSETS) if earliest <= t <= latest]


def gap(value: str | None, when: dt.datetime) -> float | None:
    """Seconds between `value` and `when`, a time without a zone read in the zone from UTC-12 to
    UTC+14 that brings it closest; None for no date."""
    parsed = parse_timestamp(value)
    if parsed is None:
        return None
    if has_zone(value):
        return abs((parsed - when).total_seconds())
    return min(abs((parsed - offset - when).total_seconds()) for offset in ZONE_OFFSETS)
