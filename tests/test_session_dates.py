"""A session's `dateCreated` without a zone: nothing public says which zone Evo Voice writes it in
(docs/evovoice-api.md), so a call whose POST answer names no session finds its own session in
every zone a server may keep (UTC-12 to UTC+14), and never an earlier call to the same number."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.evovoice.dates import gap, has_zone, times_within
from bot.standins.evovoice import Acted, Behaviour, EmptyObject, ErrorStatus, Respond
from tests.conftest import BotFactory, BotUnderTest, until
from tests.follow_helpers import (
    FAST,
    FULL,
    end_session,
    services,
    status_message,
    texts,
    wait_for_edit,
)

HOURS = [-12, -10, -5, -3.5, 0, 2, 5.75, 9, 12.75, 14]


async def ended(bot: BotUnderTest, session_id: str) -> None:
    """Evo Voice ends the call after 12 s, unanswered; the bot reads it now (poked, as after a
    hang-up), not at its next poll: how soon it polls is no business of these tests."""
    end_session(bot, session_id, after_seconds=12, outcome="No answer")
    for call in await services(bot).follower.store.being_followed():
        services(bot).follower.poke(call.id)


def stamp(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("answer", [EmptyObject(), Acted(ErrorStatus(500))],
                         ids=["no_session_named", "outcome_unknown"])
@pytest.mark.parametrize("hours", HOURS)
async def test_a_call_finds_its_session_dated_in_the_servers_own_zone(
    bot_factory: BotFactory, hours: float, answer: Behaviour
) -> None:
    # Earlier calls to the number from Evo Voice itself, 20 minutes and 3 hours before, their
    # sessions unclaimed: read as UTC, a server east of it dated them after this call's attempt
    # (and one west of it dated this call's session before it, so it was never found).
    bot = await bot_factory("http", **FAST)
    bot.evo.session_dates_offset = dt.timedelta(hours=hours)
    now = dt.datetime.now(dt.UTC)
    earlier = [
        bot.evo.add_session(toAddress=FULL, accountId="acct-1", flowId="flow-daily",
                            dateCreated=stamp(now - ago), ended=True, callState="Disconnected")
        for ago in (dt.timedelta(minutes=20, seconds=7), dt.timedelta(hours=3, seconds=461))
    ]
    bot.evo.queue_outgoing(answer)  # placed; the answer names no session, or is a 500
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [ours] = [s for s in bot.evo.sessions if s not in {e["id"] for e in earlier}]
    await until(lambda: any(f"`{ours}`" in text for text in texts(status)), timeout=10)
    await ended(bot, ours)
    await wait_for_edit(bot, status, "❌ Ended: No answer, lasted 12 s.")
    assert not any(e["id"] in str(texts(status)) for e in earlier)


@pytest.mark.parametrize("answer", [Respond(), EmptyObject(), Acted(ErrorStatus(500))],
                         ids=["session_named", "no_session_named", "outcome_unknown"])
@pytest.mark.parametrize("hours", [None, -5, 5.75], ids=["utc", "utc-5", "utc+5:45"])
@pytest.mark.parametrize("form", ["wcf", "wcf_unspecified"])
async def test_a_call_is_found_and_timed_with_its_dates_in_servicestack_s_default_form(
    bot_factory: BotFactory, hours: float | None, answer: Behaviour, form: str
) -> None:
    # ServiceStack's default JSON dates are `/Date(ms)/` (a local time with its offset after the
    # milliseconds): nothing public says Evo Voice sends ISO 8601 instead. The call's own session
    # is found among earlier ones to the number, and its length read, all the same. A time of no
    # zone (`/Date(ms-0000)/`) has its milliseconds off by the zone its wall time was in: read
    # as exact, a call's session (5 h off) was taken for one made before the call, and missed.
    bot = await bot_factory("http", **FAST)
    bot.evo.session_dates_form = form
    bot.evo.session_dates_offset = None if hours is None else dt.timedelta(hours=hours)
    now = dt.datetime.now(dt.UTC)
    earlier = [
        bot.evo.add_session(toAddress=FULL, accountId="acct-1", flowId="flow-daily",
                            dateCreated=stamp(now - ago), ended=True, callState="Disconnected")
        for ago in (dt.timedelta(minutes=20, seconds=7), dt.timedelta(hours=3, seconds=461))
    ]
    bot.evo.queue_outgoing(answer)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [ours] = [s for s in bot.evo.sessions if s not in {e["id"] for e in earlier}]
    await until(lambda: any(f"`{ours}`" in text for text in texts(status)), timeout=10)
    await ended(bot, ours)
    await wait_for_edit(bot, status, "❌ Ended: No answer, lasted 12 s.")
    assert not any(e["id"] in str(texts(status)) for e in earlier)


@pytest.mark.parametrize(("value", "zoned"), [
    ("/Date(1764590400000)/", True),  # a UTC DateTime
    ("/Date(1764590400000+0000)/", True),  # a local one, on a server on UTC
    ("/Date(1764590400000-0500)/", True),  # a local one, on a server at UTC-5
    ("/Date(1764590400000-0000)/", False),  # one of no kind: its wall time taken for local
    ("2026-12-01T12:00:00Z", True),
    ("2026-12-01T12:00:00", False),
])
def test_which_dates_name_their_moment(value: str, zoned: bool) -> None:
    assert has_zone(value) is zoned


def test_a_time_without_a_zone_is_read_in_every_zone_a_server_may_keep() -> None:
    attempt = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    eastern = "2026-12-01T07:00:02.000"  # 2 s after the attempt, at UTC-5
    assert not has_zone(eastern) and has_zone("2026-12-01T12:00:02Z")
    assert has_zone("/Date(1764590402000)/")
    assert times_within(eastern, attempt, attempt + dt.timedelta(minutes=1)) == [
        attempt + dt.timedelta(seconds=2)]
    assert gap(eastern, attempt) == 2.0
    # An earlier call (5 min before) is at least that far from the attempt in every zone, and
    # in none after it within the minute.
    assert gap("2026-12-01T06:55:00", attempt) == 5 * 60
    assert times_within("2026-12-01T06:55:00", attempt, attempt + dt.timedelta(minutes=1)) == []
    # A time with its zone is what it says, UTC-12 or not.
    assert gap("2026-12-01T07:00:02Z", attempt) == 5 * 3600 - 2


# .NET's DateTime.MaxValue, as ServiceStack writes it without a zone: a placeholder (a DateTime
# set to "never"), within hours of the last moment a Python datetime holds.
MAX_VALUE = "9999-12-31T23:59:59.9999999"


@pytest.mark.parametrize("answer", [EmptyObject(), Acted(ErrorStatus(500))],
                         ids=["no_session_named", "outcome_unknown"])
async def test_a_session_dated_at_the_end_of_time_does_not_stop_the_lookup(
    bot_factory: BotFactory, answer: Behaviour
) -> None:
    # Another session to the number, its dateCreated .NET's MaxValue: read in every zone, it was
    # beyond what a datetime holds, and the lookup stopped with an error (the call's status left
    # at "looking for it", the requester of an ambiguous call never told).
    bot = await bot_factory("http", **FAST)
    odd = bot.evo.add_session(toAddress=FULL, accountId="acct-1", flowId="flow-daily",
                              dateCreated=MAX_VALUE, ended=True, callState="Disconnected")
    bot.evo.queue_outgoing(answer)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [ours] = [s for s in bot.evo.sessions if s != odd["id"]]
    await until(lambda: any(f"`{ours}`" in text for text in texts(status)), timeout=10)
    await ended(bot, ours)
    await wait_for_edit(bot, status, "❌ Ended: No answer, lasted 12 s.")
    assert len(bot.evo.outgoing_posts) == 1


def test_a_time_at_the_ends_of_a_datetime_is_no_date() -> None:
    attempt = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    for placeholder in (MAX_VALUE, "9999-12-31T23:59:59", "/Date(253402300799999)/"):
        assert times_within(placeholder, attempt) == []
        assert gap(placeholder, attempt) is None
