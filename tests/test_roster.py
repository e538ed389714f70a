"""The on-call service: overrides over the rotation, the escalation order, phone numbers."""

from __future__ import annotations

import datetime as dt

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import OnCallPolicy, Policy
from bot.errors import NoUsableNumber, OnCallNotConfigured
from bot.oncall.roster import OnCall, PhoneBook, Source
from bot.standins.slack import SlackStandIn
from bot.storage.database import Database
from tests.escalations import on_call

PEOPLE = {"U0ALICE": "+18144043093", "U0BOB": "+18144043094", "U0MANAGER": "+18144043090",
          "U0DAN": "+18144043097"}
ONCALL = OnCallPolicy(
    flow="Escalation",
    rotation=("U0ALICE", "U0BOB", "U0CAROL"),
    timezone="America/New_York",
    escalate_to=("U0MANAGER", "U0BOB"),
)
POLICY = Policy(roles={"Manager": ("U0MANAGER",)}, people=PEOPLE, oncall=ONCALL)

# Shift 9 (Alice's): Monday 9 March 09:00 EDT (13:00 UTC) to Monday 16 March 09:00 EDT.
IN_ALICES_SHIFT = dt.datetime(2026, 3, 10, 15, tzinfo=dt.UTC)
ALICES_SHIFT_ENDS = dt.datetime(2026, 3, 16, 13, tzinfo=dt.UTC)


def roster(db: Database, client: AsyncWebClient, policy: Policy = POLICY) -> OnCall:
    return on_call(db, client, policy)


async def test_the_rotation_decides_without_an_override(
    db: Database, client: AsyncWebClient
) -> None:
    person = (await roster(db, client).status(IN_ALICES_SHIFT)).now
    assert (person.user_id, person.source, person.until) == (
        "U0ALICE", Source.ROTATION, ALICES_SHIFT_ENDS
    )
    assert person.number is not None and person.number.e164 == "+18144043093"


async def test_take_lasts_until_the_next_handoff(db: Database, client: AsyncWebClient) -> None:
    oncall = roster(db, client)
    override, person = await oncall.take("U0MANAGER", IN_ALICES_SHIFT)
    assert (override.replaces, override.ends) == ("U0ALICE", ALICES_SHIFT_ENDS)
    assert person.number is not None and person.number.e164 == "+18144043090"
    before = (await oncall.status(IN_ALICES_SHIFT)).now
    assert (before.user_id, before.source, before.until) == (
        "U0MANAGER", Source.OVERRIDE, ALICES_SHIFT_ENDS
    )
    last = (await oncall.status(ALICES_SHIFT_ENDS - dt.timedelta(microseconds=1))).now
    assert last.user_id == "U0MANAGER"
    after = (await oncall.status(ALICES_SHIFT_ENDS)).now
    assert (after.user_id, after.source) == ("U0BOB", Source.ROTATION)
    # Not retroactive: before it was taken, Alice was on call.
    assert (await oncall.status(IN_ALICES_SHIFT - dt.timedelta(minutes=1))).now.user_id == "U0ALICE"


async def test_the_latest_override_wins(db: Database, client: AsyncWebClient) -> None:
    oncall = roster(db, client)
    await oncall.take("U0MANAGER", IN_ALICES_SHIFT)
    later = IN_ALICES_SHIFT + dt.timedelta(hours=2)
    override, _ = await oncall.take("U0DAN", later)
    assert override.replaces == "U0MANAGER"
    assert (await oncall.status(later)).now.user_id == "U0DAN"
    status = await oncall.status(later)
    assert status.override is not None and status.override.user_id == "U0DAN"


async def test_status_shows_now_and_next(db: Database, client: AsyncWebClient) -> None:
    status = await roster(db, client).status(IN_ALICES_SHIFT)
    assert (status.now.user_id, status.next.user_id) == ("U0ALICE", "U0BOB")
    assert status.next_from == ALICES_SHIFT_ENDS
    assert status.override is None and status.handoff == "monday 09:00"


async def test_overrides_survive_reopening_the_database(
    db: Database, client: AsyncWebClient
) -> None:
    await roster(db, client).take("U0MANAGER", IN_ALICES_SHIFT)
    await db.close()
    reopened = Database(db.url)
    await reopened.open()
    try:
        person = (await roster(reopened, client).status(IN_ALICES_SHIFT + dt.timedelta(days=1))).now
        assert (person.user_id, person.until) == ("U0MANAGER", ALICES_SHIFT_ENDS)
    finally:
        await reopened.close()


async def test_taking_needs_a_usable_number(db: Database, client: AsyncWebClient) -> None:
    oncall = roster(db, client)
    with pytest.raises(NoUsableNumber) as raised:
        await oncall.take("U0NOPHONE", IN_ALICES_SHIFT)
    assert "Slack profile has no phone number" in raised.value.user_message
    assert "[people]" in raised.value.user_message
    assert (await oncall.status(IN_ALICES_SHIFT)).now.user_id == "U0ALICE"


async def test_chain_is_current_then_the_rotation_after_them_then_escalate_to(
    db: Database, client: AsyncWebClient
) -> None:
    oncall = roster(db, client)
    chain = await oncall.chain(IN_ALICES_SHIFT)
    # Bob is in escalate_to too, but is called once, in his rotation place.
    assert [(p.user_id, p.source) for p in chain] == [
        ("U0ALICE", Source.ROTATION),
        ("U0BOB", Source.ROTATION),
        ("U0CAROL", Source.ROTATION),
        ("U0MANAGER", Source.ESCALATE_TO),
    ]
    assert [p.until for p in chain] == [ALICES_SHIFT_ENDS, None, None, None]
    # Carol has no number anywhere: she stays in the chain, with the reason.
    assert chain[2].number is None and chain[2].no_number_reason
    # In Carol's shift the rotation wraps round after her.
    carols = await oncall.chain(dt.datetime(2026, 3, 24, 15, tzinfo=dt.UTC))
    assert [p.user_id for p in carols] == ["U0CAROL", "U0ALICE", "U0BOB", "U0MANAGER"]


async def test_chain_with_an_override_starts_with_the_taker(
    db: Database, client: AsyncWebClient
) -> None:
    oncall = roster(db, client)
    await oncall.take("U0DAN", IN_ALICES_SHIFT)
    chain = await oncall.chain(IN_ALICES_SHIFT)
    assert [(p.user_id, p.source) for p in chain] == [
        ("U0DAN", Source.OVERRIDE),
        ("U0ALICE", Source.ROTATION),
        ("U0BOB", Source.ROTATION),
        ("U0CAROL", Source.ROTATION),
        ("U0MANAGER", Source.ESCALATE_TO),
    ]
    assert chain[0].until == ALICES_SHIFT_ENDS and chain[1].until is None


async def test_without_oncall_section_every_question_says_so(
    db: Database, client: AsyncWebClient
) -> None:
    oncall = roster(db, client, Policy(roles={"Manager": ("U0MANAGER",)}))
    assert not oncall.configured
    for ask in (oncall.status, oncall.chain):
        with pytest.raises(OnCallNotConfigured):
            await ask(IN_ALICES_SHIFT)
    with pytest.raises(OnCallNotConfigured):
        await oncall.take("U0MANAGER", IN_ALICES_SHIFT)


async def test_slack_profile_phone_is_the_fallback_and_is_cached(
    slack: SlackStandIn, client: AsyncWebClient
) -> None:
    slack.users["U0CAROL"] = {"profile": {"phone": "(814) 404-3095"}}
    phones = PhoneBook(client, PEOPLE, POLICY.dial_policy)
    for _ in range(3):
        found = await phones.lookup("U0CAROL")
        assert found.number is not None and found.number.e164 == "+18144043095"
    assert [c.params["user"] for c in slack.calls_to("users.info")] == ["U0CAROL"]
    # [people] wins without asking Slack.
    slack.users["U0ALICE"] = {"profile": {"phone": "+18144043099"}}
    found = await phones.lookup("U0ALICE")
    assert found.number is not None and found.number.e164 == "+18144043093"
    assert len(slack.calls_to("users.info")) == 1


async def carol_read_once(
    slack: SlackStandIn, client: AsyncWebClient
) -> tuple[PhoneBook, list[float]]:
    """A phone book on a clock the test moves (`now[0]`, seconds), that has read Carol's profile
    phone, (814) 404-3095, once."""
    now = [1000.0]
    phones = PhoneBook(client, {}, POLICY.dial_policy, clock=lambda: now[0])
    slack.users["U0CAROL"] = {"profile": {"phone": "(814) 404-3095"}}
    assert (await phones.lookup("U0CAROL")).number is not None
    return phones, now


async def test_a_fixed_profile_phone_is_read_again_within_two_minutes(
    slack: SlackStandIn, client: AsyncWebClient
) -> None:
    # Someone fixing their profile's number mid-incident waits two minutes at most (README).
    phones, now = await carol_read_once(slack, client)
    slack.users["U0CAROL"] = {"profile": {"phone": "(814) 404-3096"}}
    now[0] += 119
    found = await phones.lookup("U0CAROL")
    assert found.number is not None and found.number.e164 == "+18144043095"
    now[0] += 2
    found = await phones.lookup("U0CAROL")
    assert found.number is not None and found.number.e164 == "+18144043096"


@pytest.mark.parametrize(
    ("profile_phone", "expected"),
    [
        ("", "the Slack profile has no phone number"),
        ("   ", "the Slack profile has no phone number"),
        ("+1 900 555 0123",
         "the Slack profile's phone number can't be dialled: +1 900 ••• 0123 is a premium-rate"),
        ("+44 20 7946 0018", "calls may only go to"),
        ("ring me maybe", "can't be dialled"),
    ],
)
async def test_an_unusable_profile_phone_is_explained(
    slack: SlackStandIn, client: AsyncWebClient, profile_phone: str, expected: str
) -> None:
    slack.users["U0CAROL"] = {"profile": {"phone": profile_phone}}
    found = await PhoneBook(client, {}, POLICY.dial_policy).lookup("U0CAROL")
    assert found.number is None
    assert found.problem is not None and expected in found.problem


async def test_an_unreadable_profile_is_explained_and_not_cached(
    slack: SlackStandIn, client: AsyncWebClient
) -> None:
    slack.users["U0CAROL"] = {"profile": {"phone": "(814) 404-3095"}}
    phones = PhoneBook(client, {}, POLICY.dial_policy)
    slack.fail("users.info", "missing_scope")
    found = await phones.lookup("U0CAROL")
    assert found.number is None and found.problem is not None
    assert "missing_scope" in found.problem and "users:read" in found.problem
    slack.off("users.info")
    found = await phones.lookup("U0CAROL")
    assert found.number is not None


async def test_a_slack_that_cannot_be_reached_is_explained(refused_port: int) -> None:
    # A connection failure reading a profile is a reason, like an error answer: the roster and an
    # escalation chain still list the person, flagged, instead of failing altogether.
    # No retry handlers: slack_sdk's default tries a refused connection again after a back-off.
    unreachable = AsyncWebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{refused_port}/api/",
                                 retry_handlers=[])
    found = await PhoneBook(unreachable, {}, POLICY.dial_policy).lookup("U0CAROL")
    assert found.number is None
    assert found.problem is not None and "could not be read: ClientConnectorError" in found.problem


async def test_a_profile_phone_read_more_than_a_day_ago_is_not_used_when_slack_fails(
    slack: SlackStandIn, client: AsyncWebClient
) -> None:
    # The phone last read stands in for a failing Slack for a day at most (README): a number
    # from last week may be someone else's by now, and the reason is said instead.
    phones, now = await carol_read_once(slack, client)
    slack.fail("users.info", "internal_error")
    now[0] += 24 * 3600
    found = await phones.lookup("U0CAROL")
    assert found.number is not None and found.number.e164 == "+18144043095"
    now[0] += 1
    found = await phones.lookup("U0CAROL")
    assert found.number is None
    assert found.problem is not None and "could not be read: internal_error" in found.problem
