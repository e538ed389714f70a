"""The rotation's arithmetic: hand-off boundaries, time zones, daylight saving, before the start."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bot.oncall.rotation import DEFAULT_START, HandoffRule, Rotation, parse_handoff

UTC = dt.UTC
NEW_YORK = ZoneInfo("America/New_York")
PEOPLE = ("U0ALICE", "U0BOB", "U0CAROL")
HOUR = dt.timedelta(hours=1)
TICK = dt.timedelta(microseconds=1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def rotation(handoff: str = "monday 09:00", tz: str = "UTC",
             start: dt.date = DEFAULT_START) -> Rotation:
    return Rotation(PEOPLE, parse_handoff(handoff), ZoneInfo(tz), start)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("monday 09:00", "monday 09:00"),
        ("Mon 9:00", "monday 09:00"),
        ("  FRI   17:30 ", "friday 17:30"),
        ("thu 00:00", "thursday 00:00"),
        ("sunday 23:59", "sunday 23:59"),
        ("daily 08:30", "daily 08:30"),
        ("Daily 8:05", "daily 08:05"),
    ],
)
def test_handoff_grammar(text: str, normalised: str) -> None:
    assert str(parse_handoff(text)) == normalised


@pytest.mark.parametrize(
    "text",
    ["mon 9am", "monday", "09:00", "someday 09:00", "t 09:00", "tu 09:00", "monday 24:00",
     "monday 09:60", "monday 9:5", "", "monday 09:00 UTC", "weekly 09:00",
     # Neither glued together, nor a longer or foreign word that begins like a day or "daily"
     # (a German Tuesday must not become every day).
     "monday09:00", "tues 09:00", "mondays 09:00", "dienstag 09:00", "dailyish 09:00"],
)
def test_handoff_grammar_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_handoff(text)


def test_weekly_boundary_at_the_handoff_instant() -> None:
    r = rotation()
    first = r.shift_at(utc(2026, 1, 5, 9))
    assert (first.person, first.index) == ("U0ALICE", 0)
    assert (first.starts, first.ends) == (utc(2026, 1, 5, 9), utc(2026, 1, 12, 9))
    assert r.shift_at(utc(2026, 1, 12, 9) - TICK).person == "U0ALICE"
    second = r.shift_at(utc(2026, 1, 12, 9))
    assert (second.person, second.index, second.starts) == ("U0BOB", 1, utc(2026, 1, 12, 9))
    assert r.shift_at(utc(2026, 1, 19, 9)).person == "U0CAROL"
    # The rotation wraps round: week 4 is Alice's again.
    assert r.shift_at(utc(2026, 1, 26, 9)).person == "U0ALICE"
    assert r.shift_at(utc(2026, 1, 26, 9)).index == 3


def test_the_shift_after_the_current_one() -> None:
    r = rotation()
    upcoming = r.shift(r.shift_at(utc(2026, 1, 7, 12)).index + 1)
    assert (upcoming.person, upcoming.index, upcoming.starts) == ("U0BOB", 1, utc(2026, 1, 12, 9))
    assert r.shift(r.shift_at(utc(2026, 1, 12, 9)).index + 1).person == "U0CAROL"


def test_first_handoff_is_the_first_matching_weekday_on_or_after_start() -> None:
    # Start on a Thursday with a Monday hand-off: the rotation begins the following Monday.
    r = rotation(start=dt.date(2026, 1, 1))
    assert r.handoff(0) == utc(2026, 1, 5, 9)
    # A Friday hand-off with the default start (Monday 5 January): Friday 9 January.
    r = rotation("friday 17:00")
    assert r.handoff(0) == utc(2026, 1, 9, 17)
    assert r.shift_at(utc(2026, 1, 16, 17)).person == "U0BOB"


def test_daily_handoff() -> None:
    r = rotation("daily 09:00")
    assert r.handoff(0) == utc(2026, 1, 5, 9)  # the start date at the hand-off time
    assert r.shift_at(utc(2026, 1, 6, 9) - TICK).person == "U0ALICE"
    shift = r.shift_at(utc(2026, 1, 6, 9))
    assert (shift.person, shift.ends) == ("U0BOB", utc(2026, 1, 7, 9))
    assert r.shift_at(utc(2026, 1, 8, 8, 59)).person == "U0CAROL"
    assert r.shift_at(utc(2026, 1, 8, 9)).person == "U0ALICE"


def test_handoff_follows_local_time_in_the_rotations_zone() -> None:
    r = rotation(tz="America/New_York")
    # 09:00 EST is 14:00 UTC.
    assert r.shift_at(utc(2026, 1, 12, 14) - TICK).person == "U0ALICE"
    assert r.shift_at(utc(2026, 1, 12, 14)).person == "U0BOB"
    # 09:00 EDT (summer) is 13:00 UTC.
    summer = r.shift_at(utc(2026, 7, 6, 13))
    assert summer.starts == utc(2026, 7, 6, 13)
    assert summer.starts.astimezone(NEW_YORK).hour == 9


def test_a_zone_ahead_of_utc_hands_off_on_the_previous_utc_day() -> None:
    # Monday 09:00 in Auckland (NZDT, +13) is Sunday 20:00 UTC.
    r = rotation(tz="Pacific/Auckland")
    assert r.handoff(1) == utc(2026, 1, 11, 20)
    assert r.shift_at(utc(2026, 1, 11, 19, 59)).person == "U0ALICE"
    assert r.shift_at(utc(2026, 1, 11, 20)).person == "U0BOB"


def test_the_instant_may_be_given_in_any_zone() -> None:
    r = rotation(tz="America/New_York")
    tokyo = dt.datetime(2026, 1, 12, 23, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 14:00 UTC
    assert r.shift_at(tokyo) == r.shift_at(utc(2026, 1, 12, 14))
    # The hand-off is the instant, whatever zone names it: a minute before, in Tokyo's words, is
    # still Alice's shift (read as UTC, 22:59 would be Bob's).
    assert r.shift_at(tokyo - dt.timedelta(minutes=1)).person == "U0ALICE"
    assert r.shift_at(tokyo).person == "U0BOB"
    assert r.next_handoff(tokyo - dt.timedelta(minutes=1)) == utc(2026, 1, 12, 14)


def test_spring_forward_shift_lasts_167_hours() -> None:
    # Clocks in New York jump from 02:00 to 03:00 on Sunday 8 March 2026.
    r = rotation(tz="America/New_York")
    shift = r.shift_at(utc(2026, 3, 5, 12))
    assert shift.starts == utc(2026, 3, 2, 14)  # 09:00 EST
    assert shift.ends == utc(2026, 3, 9, 13)  # 09:00 EDT
    assert shift.ends - shift.starts == 167 * HOUR
    for instant in (shift.starts, shift.ends):
        local = instant.astimezone(NEW_YORK)
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
    assert r.shift_at(utc(2026, 3, 9, 13) - TICK).index == shift.index
    assert r.shift_at(utc(2026, 3, 9, 13)).index == shift.index + 1


def test_fall_back_shift_lasts_169_hours() -> None:
    # Clocks in New York fall back from 02:00 to 01:00 on Sunday 1 November 2026.
    r = rotation(tz="America/New_York")
    shift = r.shift_at(utc(2026, 10, 29, 12))
    assert shift.starts == utc(2026, 10, 26, 13)  # 09:00 EDT
    assert shift.ends == utc(2026, 11, 2, 14)  # 09:00 EST
    assert shift.ends - shift.starts == 169 * HOUR
    assert r.shift_at(utc(2026, 11, 2, 14) - TICK).index == shift.index
    assert r.shift_at(utc(2026, 11, 2, 14)).index == shift.index + 1


def test_daily_shifts_last_23_and_25_hours_across_the_changes() -> None:
    r = rotation("daily 09:00", tz="America/New_York")
    spring = r.shift_at(utc(2026, 3, 7, 20))
    assert spring.ends - spring.starts == 23 * HOUR
    autumn = r.shift_at(utc(2026, 10, 31, 20))
    assert autumn.ends - autumn.starts == 25 * HOUR


def test_a_handoff_time_the_clocks_skip_happens_an_hour_later_on_the_wall_clock() -> None:
    # 02:30 does not exist in New York on 8 March 2026 (02:00 → 03:00). The rule (fold=0): the
    # hand-off is when the clock would have shown 02:30 had it not jumped, i.e. 03:30 EDT.
    r = rotation("sunday 02:30", tz="America/New_York")
    boundary = utc(2026, 3, 8, 7, 30)
    assert r.shift_at(boundary - TICK).ends == boundary
    shift = r.shift_at(boundary)
    assert shift.starts == boundary
    local = boundary.astimezone(NEW_YORK)
    assert (local.hour, local.minute, local.tzname()) == (3, 30, "EDT")
    previous = r.shift(shift.index - 1)
    assert shift.starts - previous.starts == 168 * HOUR  # 02:30 EST to "02:30" EST
    assert shift.ends - shift.starts == 167 * HOUR  # to 02:30 EDT the week after


def test_a_handoff_time_that_happens_twice_uses_the_first() -> None:
    # 01:30 happens twice in New York on 1 November 2026: first EDT (05:30 UTC), then EST.
    r = rotation("sunday 01:30", tz="America/New_York")
    boundary = utc(2026, 11, 1, 5, 30)
    assert r.shift_at(boundary - TICK).ends == boundary
    assert r.shift_at(boundary).starts == boundary
    assert boundary.astimezone(NEW_YORK).tzname() == "EDT"
    assert r.shift_at(utc(2026, 11, 1, 6, 30)).starts == boundary  # the repeat is mid-shift


def test_before_the_start_the_first_shift_is_in_effect() -> None:
    r = rotation()
    for before in (utc(2025, 12, 1), utc(2026, 1, 5, 9) - TICK, utc(1999, 1, 1)):
        shift = r.shift_at(before)
        assert (shift.person, shift.index, shift.ends) == ("U0ALICE", 0, utc(2026, 1, 12, 9))
        assert r.shift(shift.index + 1).person == "U0BOB"


def test_every_instant_of_a_year_falls_in_exactly_one_shift() -> None:
    r = rotation("wednesday 02:30", tz="America/New_York")
    instant = utc(2026, 1, 7, 8)
    step = dt.timedelta(minutes=97)
    while instant < utc(2027, 1, 10):
        shift = r.shift_at(instant)
        assert shift.starts <= instant < shift.ends
        assert shift.person == PEOPLE[shift.index % 3]
        assert r.shift(shift.index + 1).starts == shift.ends
        instant += step


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rotation().shift_at(dt.datetime(2026, 1, 5, 9))


def test_a_rotation_needs_people() -> None:
    with pytest.raises(ValueError):
        Rotation((), HandoffRule(dt.time(9)), ZoneInfo("UTC"), DEFAULT_START)


def test_shifts_are_numbered_from_zero() -> None:
    with pytest.raises(ValueError, match="from 0"):
        rotation().shift(-1)
