"""Rate limits in the database: sliding windows, atomic check-and-record, hashed numbers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot.calls.limits import CallLimits, LimitReached, RecentlyCalled
from bot.calls.rates import Rate, describe_wait, parse_rate
from bot.storage.database import Database
from tests.databases import BACKENDS, fresh_database

A = "+18144043093"
B = "+18144043094"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limits(db: Database, clock: Clock, *, per_user: str = "5/10m", per_number: str = "3/10m",
           per_day: int = 200) -> CallLimits:
    return CallLimits(db, per_user=parse_rate(per_user), per_number=parse_rate(per_number),
                      per_day=per_day, clock=clock)


@pytest.mark.parametrize(
    ("text", "count", "seconds", "words"),
    [("5/10m", 5, 600, "10 minutes"), ("20/1h", 20, 3600, "hour"), ("3/30s", 3, 30, "30 seconds"),
     (" 2 / 2d ", 2, 172800, "2 days"), ("7/h", 7, 3600, "hour"), ("1/7d", 1, 604800, "7 days")],
)
def test_rates_parse(text: str, count: int, seconds: float, words: str) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.seconds, rate.window_words) == (count, seconds, words)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5", "is not a rate"), ("5/10", "is not a rate"), ("five/10m", "is not a rate"),
     ("5/10y", "is not a rate"), ("0/10m", "at least 1"), ("5/0m", "empty window"),
     ("5/8d", "at most 7 days"), ("-1/10m", "is not a rate"), ("５/10m", "is not a rate")],
)
def test_bad_rates_say_how_to_write_them(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_rate(text)


def test_waits_read_naturally() -> None:
    assert describe_wait(0.2) == "1 s"
    assert describe_wait(45) == "45 s"
    assert describe_wait(200.5) == "3 min 21 s"
    assert describe_wait(3725) == "1 h 3 min"  # rounded up: "1 h 2 min" would be too early
    assert describe_wait(3600) == "1 h" and describe_wait(3601) == "1 h 1 min"
    assert describe_wait(24 * 3600 - 30) == "24 h"


async def test_a_call_made_when_the_refusal_says_it_may_be_fits(db: Database, clock: Clock) -> None:
    # Told "You may call again in 1 h 30 min" while 1 h 30 min 5 s were left, the requester came
    # back at the time told and was refused again.
    lim = limits(db, clock, per_user="1/2h")
    await lim.acquire("U1", A, "f")
    clock.now += 1795
    with pytest.raises(LimitReached) as refused:
        await lim.acquire("U1", B, "f")
    told = re.search(r"You may call again in (\d+) h (\d+) min\.", refused.value.user_message)
    assert told is not None, refused.value.user_message
    clock.now += int(told.group(1)) * 3600 + int(told.group(2)) * 60
    await lim.acquire("U1", B, "f")


async def test_per_user_limit_says_when_to_try_again(db: Database, clock: Clock) -> None:
    lim = limits(db, clock, per_user="2/10m")
    await lim.acquire("U1", A, "f")
    clock.now += 100
    await lim.acquire("U1", B, "f")
    with pytest.raises(LimitReached) as refused:
        await lim.acquire("U1", "+18144043095", "f")
    # The oldest call leaves the window 600 s after it was made, 500 s from now.
    assert refused.value.retry_after == pytest.approx(500)
    assert refused.value.scope == "per_user"
    text = refused.value.user_message
    assert "2 calls in the last 10 minutes" in text and "8 min 20 s" in text
    assert "can't be lifted from Slack" in text
    await lim.acquire("U2", "+18144043095", "f")  # another person is not affected
    clock.now += 499
    with pytest.raises(LimitReached):  # the oldest call is still inside the whole window
        await lim.acquire("U1", "+18144043095", "f")
    clock.now += 1
    await lim.acquire("U1", "+18144043095", "f")  # the window has moved on


async def test_per_number_limit_counts_every_requester(db: Database, clock: Clock) -> None:
    lim = limits(db, clock, per_number="2/1h")
    await lim.acquire("U1", A, "f")
    clock.now += 600
    await lim.acquire("U2", A, "g")
    with pytest.raises(LimitReached) as refused:
        await lim.acquire("U3", A, "h")
    assert refused.value.scope == "per_number"
    assert refused.value.retry_after == pytest.approx(3000)  # when the oldest call leaves
    assert "+1 814 ••• 3093 has been called 2 times in the last hour" in refused.value.user_message
    assert A not in refused.value.user_message
    await lim.acquire("U3", B, "h")  # another number is not affected
    clock.now += 2999
    with pytest.raises(LimitReached):  # the oldest call is still inside the whole window
        await lim.acquire("U4", A, "i")
    clock.now += 1
    await lim.acquire("U4", A, "i")  # the window has moved on


async def test_per_day_limit_counts_all_calls(db: Database, clock: Clock) -> None:
    # per_number's window, longer than the day, keeps the events past the day: the day's own
    # window, not their clearing, lets the fourth call in.
    lim = limits(db, clock, per_day=3, per_number="3/2d")
    for i in range(3):
        await lim.acquire(f"U{i}", f"+1814404300{i}", "f")
        clock.now += 3600
    with pytest.raises(LimitReached) as refused:
        await lim.acquire("U9", B, "f")
    assert refused.value.scope == "per_day"
    assert refused.value.retry_after == pytest.approx(24 * 3600 - 3 * 3600)
    assert "3 calls in the last 24 hours" in refused.value.user_message
    assert "per_day = 3" in refused.value.user_message
    clock.now += 21 * 3600 - 1
    with pytest.raises(LimitReached):  # the oldest call is still inside the whole day
        await lim.acquire("U9", B, "f")
    clock.now += 1
    await lim.acquire("U9", B, "f")  # the day has moved on


async def test_clearing_old_events_keeps_every_call_a_window_still_counts(
    db: Database, clock: Clock
) -> None:
    # Each attempt clears the events no window needs any more; a call 23 h ago is still in the day.
    lim = limits(db, clock, per_day=2)
    await lim.acquire("U1", A, "f")
    clock.now += 23 * 3600
    await lim.acquire("U2", B, "f")
    clock.now += 1800
    with pytest.raises(LimitReached) as refused:
        await lim.acquire("U3", "+18144043095", "f")
    assert refused.value.scope == "per_day"


async def test_a_repeat_window_longer_than_every_limit_still_finds_the_call(
    db: Database, clock: Clock
) -> None:
    # `repeat_window` may be up to 7 days, longer than any rate's window: the events it needs are
    # kept that long.
    lim = CallLimits(db, per_user=parse_rate("5/10m"), per_number=parse_rate("3/10m"),
                     per_day=200, repeat_window=3 * 24 * 3600, clock=clock)
    await lim.acquire("U1", A, "f")
    clock.now += 2 * 24 * 3600
    await lim.acquire("U2", B, "f")  # clears what no window needs
    with pytest.raises(RecentlyCalled) as recent:
        await lim.acquire("U1", A, "f")
    assert recent.value.seconds_ago == pytest.approx(2 * 24 * 3600)


async def test_a_refused_attempt_consumes_nothing(db: Database, clock: Clock) -> None:
    lim = limits(db, clock, per_user="1/10m", per_number="5/10m")
    await lim.acquire("U1", A, "f")
    for _ in range(3):
        with pytest.raises(LimitReached):
            await lim.acquire("U1", B, "f")
    # U2 may still call B three more times: U1's refusals were not counted against B.
    for flow in ("f", "g", "h", "i"):
        await lim.acquire(f"U2{flow}", B, flow)


async def test_released_slot_is_given_back(db: Database, clock: Clock) -> None:
    lim = limits(db, clock, per_user="1/10m")
    slot = await lim.acquire("U1", A, "f")
    await lim.release(slot)
    await lim.acquire("U1", A, "f")


async def test_repeat_within_a_minute_is_reported(db: Database, clock: Clock) -> None:
    lim = limits(db, clock)
    await lim.acquire("U1", A, "f")
    clock.now += 20
    with pytest.raises(RecentlyCalled) as recent:
        await lim.acquire("U1", A, "f")
    assert recent.value.seconds_ago == pytest.approx(20)
    assert await lim.last_call("U1", A, "f") == pytest.approx(20)
    # Another flow, another number or another person is not a repeat.
    assert await lim.last_call("U1", A, "g") is None
    assert await lim.last_call("U2", A, "f") is None
    await lim.acquire("U1", A, "g")
    await lim.acquire("U1", A, "f", check_repeat=False)  # confirmed
    clock.now += 61
    assert await lim.last_call("U1", A, "f") is None


async def test_racing_requests_cannot_both_take_the_last_slot(
    db: Database, clock: Clock, tmp_path: Path
) -> None:
    # Two Database objects on one file: two replicas of the bot.
    other = Database(db.url)
    await other.open()
    try:
        replicas = [limits(db, clock, per_user="1/10m"), limits(other, clock, per_user="1/10m")]
        results = await asyncio.gather(
            *(replicas[i % 2].acquire("U1", f"+1814404300{i}", "f") for i in range(10)),
            return_exceptions=True,
        )
    finally:
        await other.close()
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, LimitReached) for r in results if isinstance(r, BaseException))


async def test_limits_hold_across_restarts_and_store_no_numbers(
    db: Database, clock: Clock
) -> None:
    await limits(db, clock, per_number="1/10m").acquire("U1", A, "f")
    reopened = Database(db.url)
    await reopened.open()
    try:
        with pytest.raises(LimitReached):
            await limits(reopened, clock, per_number="1/10m").acquire("U2", A, "g")
        rows = await reopened.fetchall("SELECT * FROM rate_events")
        dump = repr([tuple(r) for r in rows])
        assert "8144043093" not in dump and "4043093" not in dump
        key = await limits(reopened, clock).number_key(A)
        assert len(key) == 64 and key in dump
    finally:
        await reopened.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_number_hash_is_keyed_per_database(
    backend: str, tmp_path: Path, clock: Clock
) -> None:
    keys = []
    for name in ("one", "two"):
        async with fresh_database(backend, tmp_path, name) as url:
            database = Database(url)
            await database.open()
            keys.append(await limits(database, clock).number_key(A))
            await database.close()
    assert keys[0] != keys[1], "a plain hash of a phone number is reversible by trying them all"


async def test_old_events_are_cleared(db: Database, clock: Clock) -> None:
    lim = limits(db, clock)
    await lim.acquire("U1", A, "f")
    clock.now += 2 * 24 * 3600
    await lim.acquire("U1", B, "f")
    [row] = await db.fetchall("SELECT COUNT(*) FROM rate_events")
    assert row[0] == 1


def test_rate_is_a_value() -> None:
    assert parse_rate("5/10m") == Rate(5, 600.0, "5/10m")


async def test_a_refusal_names_the_full_window_that_frees_last(db: Database, clock: Clock) -> None:
    # The requester's own window frees in 9 minutes, the number's in 59: "call again in 9 min"
    # would send them back to be refused again.
    lim = limits(db, clock, per_user="1/10m", per_number="1/1h")
    await lim.acquire("U1", A, "f")
    clock.now += 60
    with pytest.raises(LimitReached) as refused:
        await lim.acquire("U1", A, "g")
    assert refused.value.scope == "per_number"
    assert refused.value.retry_after == pytest.approx(3540)
    assert "You may call again in 59 min." in refused.value.user_message
    with pytest.raises(LimitReached) as other:  # another number: only the requester's window
        await lim.acquire("U1", B, "g")
    assert other.value.scope == "per_user" and other.value.retry_after == pytest.approx(540)
