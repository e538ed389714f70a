"""The roster at its edges: overrides taken or ending exactly at a hand-off, a rotation of one,
and overrides that outlive the shift they covered because the roster changed mid-shift."""

from __future__ import annotations

import datetime as dt

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import OnCallPolicy, Policy
from bot.oncall.roster import OnCall, Source
from bot.storage.database import Database
from tests.escalations import on_call

PEOPLE = {"U0ALICE": "+18144043093", "U0BOB": "+18144043094", "U0MANAGER": "+18144043090",
          "U0DAN": "+18144043097"}
WEEKLY = OnCallPolicy(flow="Escalation", rotation=("U0ALICE", "U0BOB", "U0DAN"),
                      timezone="America/New_York", escalate_to=("U0MANAGER",))
TICK = dt.timedelta(microseconds=1)
# Monday 9 March 09:00 EDT: Alice's shift (9) begins; Monday 16 March 09:00 EDT: Bob's.
ALICES_STARTS = dt.datetime(2026, 3, 9, 13, tzinfo=dt.UTC)
BOBS_STARTS = dt.datetime(2026, 3, 16, 13, tzinfo=dt.UTC)
DANS_STARTS = dt.datetime(2026, 3, 23, 13, tzinfo=dt.UTC)


def roster(db: Database, client: AsyncWebClient, oncall: OnCallPolicy = WEEKLY) -> OnCall:
    return on_call(db, client, Policy(roles={"Manager": ("U0MANAGER",)}, people=PEOPLE,
                                      oncall=oncall))


async def test_a_take_at_the_handoff_instant_covers_the_new_shift(
    db: Database, client: AsyncWebClient
) -> None:
    oncall = roster(db, client)
    override, _ = await oncall.take("U0MANAGER", BOBS_STARTS)
    assert (override.replaces, override.starts, override.ends) == (
        "U0BOB", BOBS_STARTS, DANS_STARTS)
    assert (await oncall.status(BOBS_STARTS - TICK)).now.user_id == "U0ALICE"
    assert (await oncall.status(DANS_STARTS - TICK)).now.user_id == "U0MANAGER"
    status = await oncall.status(BOBS_STARTS)
    assert (status.now.user_id, status.next.user_id, status.next_from) == (
        "U0MANAGER", "U0DAN", DANS_STARTS)
    # Read back from the database as instants (aware), the same ones that were taken: a naive
    # reading would be shown in the host's zone, not the team's.
    assert status.override is not None
    assert (status.override.starts, status.override.ends) == (BOBS_STARTS, DANS_STARTS)


async def test_a_take_just_before_the_handoff_ends_at_it(
    db: Database, client: AsyncWebClient
) -> None:
    oncall = roster(db, client)
    override, _ = await oncall.take("U0MANAGER", BOBS_STARTS - TICK)
    assert (override.replaces, override.ends) == ("U0ALICE", BOBS_STARTS)
    assert (await oncall.status(BOBS_STARTS - TICK)).now.user_id == "U0MANAGER"
    at_handoff = (await oncall.status(BOBS_STARTS)).now
    assert (at_handoff.user_id, at_handoff.source) == ("U0BOB", Source.ROTATION)
    assert [p.user_id for p in await oncall.chain(BOBS_STARTS)] == [
        "U0BOB", "U0DAN", "U0ALICE", "U0MANAGER"]


async def test_a_rotation_of_one_is_now_and_next(db: Database, client: AsyncWebClient) -> None:
    alone = WEEKLY.model_copy(update={"rotation": ("U0ALICE",)})
    oncall = roster(db, client, alone)
    status = await oncall.status(ALICES_STARTS)
    assert (status.now.user_id, status.next.user_id, status.next_from) == (
        "U0ALICE", "U0ALICE", BOBS_STARTS)
    assert status.next.until == DANS_STARTS
    chain = await oncall.chain(ALICES_STARTS)
    assert [(p.user_id, p.source) for p in chain] == [
        ("U0ALICE", Source.ROTATION), ("U0MANAGER", Source.ESCALATE_TO)]
    await oncall.take("U0MANAGER", ALICES_STARTS)
    chain = await oncall.chain(ALICES_STARTS)
    assert [(p.user_id, p.source) for p in chain] == [
        ("U0MANAGER", Source.OVERRIDE), ("U0ALICE", Source.ROTATION)]


async def test_an_override_longer_than_the_new_shifts_hands_back_to_the_rotation_at_its_end(
    db: Database, client: AsyncWebClient
) -> None:
    # Taken under a weekly rotation, then the team moves to daily hand-offs mid-shift: the
    # override still runs to the weekly hand-off it was taken until, and the rotation follows.
    await roster(db, client).take("U0MANAGER", ALICES_STARTS)
    daily = roster(db, client, WEEKLY.model_copy(update={"handoff": "daily 09:00"}))
    wednesday = ALICES_STARTS + dt.timedelta(days=2)
    status = await daily.status(wednesday)
    assert (status.now.user_id, status.now.until) == ("U0MANAGER", BOBS_STARTS)
    following = daily.rotation.shift_at(BOBS_STARTS)
    assert (status.next.user_id, status.next_from) == (following.person, BOBS_STARTS)


async def test_a_later_take_replaces_an_earlier_one_even_when_that_one_runs_longer(
    db: Database, client: AsyncWebClient
) -> None:
    # Dan covers Alice's week; the team then moves to daily hand-offs and, on Wednesday, the
    # manager takes the day. At Thursday's hand-off the rotation resumes: Dan's override was
    # replaced and must not come back for the rest of the week.
    await roster(db, client).take("U0DAN", ALICES_STARTS)
    daily = roster(db, client, WEEKLY.model_copy(update={"handoff": "daily 09:00"}))
    wednesday = ALICES_STARTS + dt.timedelta(days=2, hours=1)
    override, _ = await daily.take("U0MANAGER", wednesday)
    thursday = ALICES_STARTS + dt.timedelta(days=3)
    assert (override.replaces, override.ends) == ("U0DAN", thursday)
    assert (await daily.status(thursday - TICK)).now.user_id == "U0MANAGER"
    rotation_person = daily.rotation.shift_at(thursday).person
    after = (await daily.status(thursday)).now
    assert (after.user_id, after.source) == (rotation_person, Source.ROTATION)
    assert (await daily.chain(thursday))[0].user_id == rotation_person
    status = await daily.status(thursday)
    assert status.override is None and status.now.user_id == rotation_person


async def test_a_take_before_the_rotation_begins_ends_at_its_first_handoff(
    db: Database, client: AsyncWebClient
) -> None:
    # The rotation starts on Monday 6 April; until then Alice covers. A take on the Wednesday
    # before lasts until that first hand-off, where Alice's first shift begins, not a week more.
    later = WEEKLY.model_copy(update={"start": dt.date(2026, 4, 6)})
    oncall = roster(db, client, later)
    first_handoff = dt.datetime(2026, 4, 6, 13, tzinfo=dt.UTC)
    wednesday = dt.datetime(2026, 4, 1, 15, tzinfo=dt.UTC)
    override, person = await oncall.take("U0MANAGER", wednesday)
    assert (override.replaces, override.ends, person.until) == (
        "U0ALICE", first_handoff, first_handoff)
    status = await oncall.status(wednesday)
    assert (status.now.user_id, status.next.user_id, status.next_from) == (
        "U0MANAGER", "U0ALICE", first_handoff)
    # The escalation form's "until" for whoever is on call: the override's end, not the shift's.
    now = (await oncall.status(wednesday)).now
    assert (now.user_id, now.source, now.until) == ("U0MANAGER", Source.OVERRIDE, first_handoff)
    at_start = (await oncall.status(first_handoff)).now
    assert (at_start.user_id, at_start.source) == ("U0ALICE", Source.ROTATION)
    # Taken at the first hand-off itself, it covers Alice's first shift, to the second one.
    override, _ = await oncall.take("U0DAN", first_handoff)
    assert override.ends == first_handoff + dt.timedelta(days=7)
    assert (await oncall.status(first_handoff)).now.user_id == "U0DAN"
