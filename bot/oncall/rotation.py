"""Who is on call when: the rotation's arithmetic. Pure functions and values, no I/O, no clock.

The hand-off rule (the policy file's `oncall.handoff`), case-insensitive:

    "<weekday> HH:MM"   weekly, e.g. "monday 09:00", "Fri 17:30" (an English day name or its
                        first three letters)
    "daily HH:MM"       every day, e.g. "daily 08:00"

HH:MM is a 24-hour wall-clock time in the rotation's time zone (`oncall.timezone`).

Shifts are numbered 0, 1, 2, …: shift k belongs to `people[k % len(people)]` and runs from
hand-off k to hand-off k + 1. Hand-off 0 is the first hand-off on or after the `start` date: the
start date itself at HH:MM when its weekday matches (always, for a daily rule), else the next
matching weekday.

Hand-offs follow the wall clock, so across a daylight-saving change the boundary stays at HH:MM
local time and that shift is an hour shorter or longer (a weekly shift lasts 167 h or 169 h, a
daily one 23 h or 25 h). When HH:MM does not exist that day (the clocks jump over it, e.g. 02:30
on a spring-forward Sunday in New York) the hand-off happens at the instant the clock would have
shown HH:MM had it not jumped: one hour later on the wall clock (03:30). When HH:MM happens twice
(the clocks fall back) the hand-off is at the first of the two. Both are Python's `fold=0`
(PEP 495).

Before hand-off 0, shift 0 is in effect: `shift_at()` returns shift 0 for any earlier instant (even
though that instant precedes `shift.starts`), so there is always somebody on call and the person
whose first shift it is, `people[0]`, covers the time until the rotation begins.

All instants returned are timezone-aware UTC datetimes; convert with `.astimezone(rotation.tz)` to
show them. Instants passed in must be timezone-aware (naive ones raise ValueError).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_HANDOFF",
    "DEFAULT_START",
    "HANDOFF_GRAMMAR",
    "WEEKDAYS",
    "HandoffRule",
    "Rotation",
    "Shift",
    "parse_handoff",
]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAILY = "daily"
DEFAULT_HANDOFF = "monday 09:00"
DEFAULT_START = dt.date(2026, 1, 5)  # the first Monday of 2026
HANDOFF_GRAMMAR = (
    'write "<weekday> HH:MM" for a weekly hand-off (like "monday 09:00") or "daily HH:MM" '
    "(24-hour local time)"
)

_RULE = re.compile(r"\s*([A-Za-z]+)\s+([0-9]{1,2}):([0-9]{2})\s*")


@dataclass(frozen=True)
class HandoffRule:
    """When the duty passes on: at `time` (local) every day, or on one weekday (0 = Monday)."""

    time: dt.time
    weekday: int | None = None  # None: daily

    @property
    def period_days(self) -> int:
        return 1 if self.weekday is None else 7

    def __str__(self) -> str:
        day = DAILY if self.weekday is None else WEEKDAYS[self.weekday]
        return f"{day} {self.time:%H:%M}"


def parse_handoff(text: str) -> HandoffRule:
    """`"monday 09:00"` → HandoffRule; ValueError with the grammar when the text doesn't fit it."""
    match = _RULE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a hand-off rule: {HANDOFF_GRAMMAR}")
    word, hours, minutes = match.group(1).lower(), int(match.group(2)), int(match.group(3))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r} has no such time of day: {HANDOFF_GRAMMAR}")
    time = dt.time(hours, minutes)
    if word == DAILY:
        return HandoffRule(time)
    for number, day in enumerate(WEEKDAYS):
        if word in (day, day[:3]):
            return HandoffRule(time, number)
    raise ValueError(f"{word!r} is not a day of the week or \"daily\": {HANDOFF_GRAMMAR}")


@dataclass(frozen=True)
class Shift:
    """Shift `index`: `person` is on call from `starts` (inclusive) to `ends` (exclusive); UTC."""

    person: str
    starts: dt.datetime
    ends: dt.datetime
    index: int


class Rotation:
    def __init__(
        self, people: Sequence[str], rule: HandoffRule, tz: ZoneInfo, start: dt.date
    ) -> None:
        if not people:
            raise ValueError("a rotation needs at least one person")
        self.people = tuple(people)
        self.rule = rule
        self.tz = tz
        self.start = start
        ahead = 0 if rule.weekday is None else (rule.weekday - start.weekday()) % 7
        self._first_day = start + dt.timedelta(days=ahead)

    def handoff(self, index: int) -> dt.datetime:
        """The instant of hand-off `index` (the start of shift `index`), in UTC."""
        day = self._first_day + dt.timedelta(days=index * self.rule.period_days)
        # fold=0 (the default) is the documented rule for skipped and repeated local times.
        local = dt.datetime.combine(day, self.rule.time, tzinfo=self.tz)
        return local.astimezone(dt.UTC)

    def shift(self, index: int) -> Shift:
        if index < 0:
            raise ValueError("shifts are numbered from 0")
        return Shift(
            person=self.people[index % len(self.people)],
            starts=self.handoff(index),
            ends=self.handoff(index + 1),
            index=index,
        )

    def shift_at(self, when: dt.datetime) -> Shift:
        """The shift in effect at `when` (shift 0 for any instant before the rotation begins)."""
        instant = _utc(when)
        local_day = instant.astimezone(self.tz).date()
        # The local date gives the index to within one; compare instants (in UTC, where
        # comparisons never depend on fold) to settle it.
        index = max((local_day - self._first_day).days // self.rule.period_days, 0)
        while index > 0 and self.handoff(index) > instant:
            index -= 1
        while self.handoff(index + 1) <= instant:
            index += 1
        return self.shift(index)

    def next_handoff(self, when: dt.datetime) -> dt.datetime:
        """The first hand-off after `when`: the end of the shift in effect, except before the
        rotation begins, where it is hand-off 0 (shift 0 starts there, though its person is
        already on call)."""
        instant = _utc(when)
        first = self.handoff(0)
        return first if instant < first else self.shift_at(instant).ends


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required (rotation times are instants)")
    return when.astimezone(dt.UTC)
