"""The rotation's arithmetic in zones other than New York: half-hour and two-hour clock changes,
a day a zone skipped, UTC, and a rotation of one. Each hand-off is checked against an oracle that
tries every offset the zone has near that day, rather than against the rule's own arithmetic."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bot.oncall.rotation import Rotation, parse_handoff

UTC = dt.UTC
PEOPLE = ("U0ALICE", "U0BOB", "U0CAROL")
TICK = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def expected_handoff(day: dt.date, time: dt.time, tz: ZoneInfo) -> dt.datetime:
    """When `time` on `day` happens in `tz`: the first instant the clock shows it, or, when the
    clocks skip it, the instant it would have shown it under the offset in force before the jump."""
    wall = dt.datetime.combine(day, time)
    offsets = set()
    for hours in range(-48, 49, 3):
        probe = dt.datetime.combine(day, dt.time(12), tzinfo=UTC) + dt.timedelta(hours=hours)
        offset = probe.astimezone(tz).utcoffset()
        assert offset is not None
        offsets.add(offset)
    shown = sorted(
        (wall - offset).replace(tzinfo=UTC) for offset in offsets
        if ((wall - offset).replace(tzinfo=UTC)).astimezone(tz).replace(tzinfo=None) == wall
    )
    if shown:
        return shown[0]
    # Skipped: the offset in force just before the jump, found by walking back to it.
    before = (wall - max(offsets)).replace(tzinfo=UTC)
    offset_before = (before - HOUR * 3).astimezone(tz).utcoffset()
    assert offset_before is not None
    return (wall - offset_before).replace(tzinfo=UTC)


def check_shifts(r: Rotation, first: int, count: int) -> list[dt.timedelta]:
    """Every hand-off agrees with the oracle, and every instant at and around the boundaries
    belongs to the right shift. Returns the shifts' lengths."""
    lengths = []
    for index in range(first, first + count):
        day = r.handoff(0).astimezone(r.tz).date() + dt.timedelta(
            days=index * r.rule.period_days)
        boundary = expected_handoff(day, r.rule.time, r.tz)
        assert r.handoff(index) == boundary, (index, day)
        shift = r.shift_at(boundary)
        assert (shift.index, shift.person) == (index, r.people[index % len(r.people)])
        assert shift.starts == boundary
        if index > 0:
            assert r.shift_at(boundary - TICK).index == index - 1
            assert r.shift_at(boundary - TICK).ends == boundary
        lengths.append(shift.ends - shift.starts)
    return lengths


def test_lord_howe_half_hour_spring_forward_skips_the_handoff_time() -> None:
    # Lord Howe Island goes from +10:30 to +11 at 02:00 on Sunday 4 October 2026: 02:00–02:29
    # never happen. A Sunday 02:15 hand-off happens when the clock would have shown 02:15, 02:45.
    tz = ZoneInfo("Australia/Lord_Howe")
    r = Rotation(PEOPLE, parse_handoff("sunday 02:15"), tz, dt.date(2026, 1, 4))
    spring = r.shift_at(utc(2026, 10, 3, 16))
    local = spring.starts.astimezone(tz)
    assert (local.date(), local.hour, local.minute) == (dt.date(2026, 10, 4), 2, 45)
    assert spring.starts == utc(2026, 10, 3, 15, 45)
    assert r.shift(spring.index - 1).ends == spring.starts
    assert spring.ends - spring.starts == 168 * HOUR - HOUR / 2
    check_shifts(r, 0, 60)


def test_lord_howe_half_hour_fall_back_hands_off_at_the_first_of_the_two() -> None:
    # On Sunday 5 April 2026 Lord Howe goes back from +11 to +10:30 at 02:00: 01:30–01:59 happen
    # twice. A 01:45 hand-off is the first 01:45 (+11), and that shift is half an hour longer.
    tz = ZoneInfo("Australia/Lord_Howe")
    r = Rotation(PEOPLE, parse_handoff("sunday 01:45"), tz, dt.date(2026, 1, 4))
    boundary = utc(2026, 4, 4, 14, 45)  # 01:45 +11
    assert r.shift_at(boundary).starts == boundary
    assert r.shift_at(boundary - TICK).ends == boundary
    second_time = utc(2026, 4, 4, 15, 15)  # 01:45 again, +10:30
    assert second_time.astimezone(tz).replace(tzinfo=None) == dt.datetime(2026, 4, 5, 1, 45)
    assert r.shift_at(second_time).starts == boundary  # the repeat is mid-shift
    assert r.shift_at(boundary).ends - boundary == 168 * HOUR + HOUR / 2
    check_shifts(r, 0, 60)


@pytest.mark.parametrize(
    ("zone", "handoff", "start"),
    [
        ("UTC", "daily 00:00", dt.date(2026, 1, 1)),
        ("UTC", "sunday 23:59", dt.date(2026, 1, 1)),
        ("Australia/Lord_Howe", "daily 02:15", dt.date(2026, 1, 1)),
        ("Australia/Lord_Howe", "daily 01:45", dt.date(2026, 1, 1)),
        ("Antarctica/Troll", "daily 01:30", dt.date(2026, 1, 1)),  # a two-hour change
        ("Europe/London", "sunday 01:30", dt.date(2026, 1, 1)),
        ("America/St_Johns", "daily 00:30", dt.date(2026, 1, 1)),
        ("Pacific/Chatham", "sunday 03:00", dt.date(2026, 1, 1)),
        ("Pacific/Apia", "daily 09:00", dt.date(2026, 1, 1)),  # no daylight saving since 2021
        ("Asia/Kolkata", "friday 09:00", dt.date(2026, 1, 1)),
    ],
)
def test_every_handoff_of_a_year_matches_the_wall_clock(
    zone: str, handoff: str, start: dt.date
) -> None:
    r = Rotation(PEOPLE, parse_handoff(handoff), ZoneInfo(zone), start)
    count = 400 if r.rule.period_days == 1 else 60
    lengths = check_shifts(r, 0, count)
    assert all(length > dt.timedelta(0) for length in lengths)


def test_apia_skipping_a_friday_moves_the_weekly_handoff_to_saturday() -> None:
    # Samoa skipped Friday 30 December 2011 (Thursday 23:59 -10 was followed by Saturday 00:00
    # +14). A Friday 09:00 hand-off that day happens when the clock would have shown it.
    tz = ZoneInfo("Pacific/Apia")
    r = Rotation(PEOPLE, parse_handoff("friday 09:00"), tz, dt.date(2011, 12, 2))
    skipped = r.shift_at(utc(2011, 12, 31, 0))
    assert skipped.starts == utc(2011, 12, 30, 19)  # Saturday 09:00 local, not a day later
    assert skipped.starts.astimezone(tz).replace(tzinfo=None) == dt.datetime(2011, 12, 31, 9)
    assert skipped.ends - skipped.starts == 6 * 24 * HOUR
    assert r.shift(skipped.index - 1).ends == skipped.starts
    check_shifts(r, 0, 10)


def test_a_rotation_of_one_is_always_the_same_person() -> None:
    r = Rotation(("U0ALICE",), parse_handoff("daily 02:30"), ZoneInfo("America/New_York"),
                 dt.date(2026, 3, 1))
    for instant in (utc(2020, 1, 1), utc(2026, 3, 8, 7, 30) - TICK, utc(2026, 3, 8, 7, 30),
                    utc(2026, 11, 1, 6, 30), utc(2040, 6, 1)):
        shift = r.shift_at(instant)
        assert shift.person == "U0ALICE"
        assert r.shift(shift.index + 1).person == "U0ALICE"
    check_shifts(r, 0, 300)
