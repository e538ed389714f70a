"""The escalation chain at its edges, end to end: what each step's outcome does to the next person
(who is rung, who is not, who is never rung twice) and what the requester is told, where the
plainer cases in test_escalation.py and test_escalation_ack.py don't reach.

Deadlines run on the escalation service's clock, moved by hand (see test_escalation.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus, Gated
from bot.standins.slack import ApiCall, Gate, Message
from tests.budget_clock import Pauses
from tests.conftest import BotFactory, BotUnderTest
from tests.escalations import (
    escalated,
    ALICE,
    BOB,
    MANAGER,
    ROSTER,
    as_first_drawn,
    click_ack,
    click_stop,
    Clock,
    dialled,
    end_from_its_message,
    escalation_message,
    has_stop_button,
    hung_up,
    open_on_message,
    page_of,
    running_escalation,
    session_of,
    start,
    state_of,
    steps_past_alices_refused,
    submit,
    wait_for_edit,
    wait_for_post,
    wait_for_state,
)
from tests.databases import on_both_databases
from tests.follow_helpers import (
    audit_records,
    everything_sent_to_slack,
    history,
    looked_for_long_enough,
    poll_now,
    services,
    stall,
)
from tests.metrics_scrape import scrape, value

DEVELOPER = "U0DEV"  # a full member of the workspace, no role, not in the rotation


async def bob_s_step_begins_while_slack_fails(
    bot: BotUnderTest, clock: Clock, escalation: Message, *failing: tuple[str, str]
) -> None:
    """Alice's phone rings; when Bob's step begins, the user groups' cached members have expired
    and each (Web API method, error) of `failing` fails. Bob is rung all the same."""
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    for method, error in failing:
        bot.slack.fail(method, error)
    services(bot).access.forget_groups()
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")


async def test_slack_failing_to_say_whether_the_requester_may_escalate_still_rings_the_next_person(
    bot_factory: BotFactory,
) -> None:
    """The requester's right is checked again at every step; Slack failing to answer that check
    (a user group it can't list) is no "no": the next person is rung all the same."""
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n')
    bot.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    view, _ = await open_on_message(bot, user_id="U0SRE")
    assert await submit(bot, view, user_id="U0SRE") == {}
    escalation = await escalation_message(bot)
    await bob_s_step_begins_while_slack_fails(bot, clock, escalation,
                                              ("usergroups.users.list", "internal_error"))


async def test_slack_failing_to_say_who_the_requester_is_still_rings_the_next_person(
    bot_factory: BotFactory,
) -> None:
    """A lead, Manager through the user group S0LEADS, escalates. When Bob's step begins, Slack
    fails to list the group and to describe the lead (users.info): that is no "no" either, and
    Bob is rung, not marked as a call that couldn't be made."""
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot, user_id="U0LEAD1")
    assert await submit(bot, view, user_id="U0LEAD1") == {}
    escalation = await escalation_message(bot)
    await bob_s_step_begins_while_slack_fails(bot, clock, escalation,
                                              ("usergroups.users.list", "internal_error"),
                                              ("users.info", "fatal_error"))
    assert "couldn't be called" not in (escalation.text or "")


async def test_a_requester_who_lost_the_right_to_escalate_stops_the_chain_and_is_told(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n')
    bot.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    view, message = await open_on_message(bot, user_id="U0SRE")
    assert await submit(bot, view, user_id="U0SRE") == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    bot.slack.usergroups["S0ONCALL"] = []  # taken out of the group while Alice's phone rings
    services(bot).access.forget_groups()
    clock.advance(91)
    told = await wait_for_post(bot, "The on-call escalation stopped")
    assert told.params["thread_ts"] == message.ts
    assert told.params["text"] == ("⚠️ <@U0SRE> The on-call escalation stopped: <@U0SRE> is no "
                                   "longer allowed to escalate to on-call.")
    await wait_for_state(bot, EscalationState.FAILED)
    await wait_for_edit(bot, escalation, "could not go on.")
    assert not has_stop_button(escalation)
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE]  # nobody else is rung for them
    assert hung_up(bot, session_of(bot, ALICE))  # her step ended at its deadline, as any step
    records = list(reversed(await audit_records(bot)))  # oldest first
    # Bob's step, denied for the requester, is in the audit trail.
    assert [(r.number_masked, r.decision, r.reason) for r in records] == [
        ("+1 814 ••• 3093", "allowed", None), ("+1 814 ••• 3094", "denied", "NotAResponder")]


async def test_a_step_cut_short_between_its_claim_and_its_dial_is_dialled_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    """The bot dies after claiming Bob's step, while Slack is slow to answer the checks before his
    call is recorded, so before anything was dialled: the next start takes the claim over and
    rings Bob, once, instead of waiting out his step without ringing anyone."""
    first, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n')
    escalation, gate = await hold_bobs_step(first, clock)
    await first.runtime.stop(grace=0)  # ... when the bot dies
    gate.open()

    second, _ = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n',
                            clock=clock)
    await second.evo.wait_for_posts(2)
    await wait_for_edit(second, escalation, BOB_RINGING)
    await second.settle()
    assert dialled(second) == [ALICE, BOB]  # Bob rung, once
    assert "may have rung" not in (escalation.text or "")
    assert "restarted while" not in everything_sent_to_slack(second)


@on_both_databases
async def test_a_stalled_replica_comes_back_to_a_step_another_took_over_and_does_not_dial_it(
    bot_factory: BotFactory,
) -> None:
    """Replica A claims Bob's step and stalls before recording his call (a paused VM: its lease
    keeper stops too, its leases lapse). Replica B takes the escalation over, takes the step's
    claim over and rings Bob. A then comes back to the step: the record of its call is refused,
    so A dials nothing, and the row it had written for that call says it was not placed (no
    start later reports it as a call that may have rung)."""
    a, b, escalation, gate = await bobs_step_taken_over_from_a_stalled_replica(bot_factory)
    gate.open()  # A comes back to Bob's step
    db = services(b).db
    async with asyncio.timeout(10):
        while len(rows := await db.fetchall(
                "SELECT placement FROM calls WHERE e164 = ? ORDER BY id", (BOB,))) < 2 or (
                rows[1]["placement"] == "dialling"):
            await asyncio.sleep(0.01)
    assert [row["placement"] for row in rows] == ["placed", "failed"]
    await run_ended(a)  # refused, A's run leaves the chain to B at once
    await a.settle()
    await b.settle()
    assert dialled(b) == [ALICE, BOB]  # Bob rung once, by B
    await wait_for_edit(b, escalation, BOB_RINGING)
    # A's attempt is no call that failed: nothing went wrong, the chain went on without it.
    async with asyncio.timeout(10):  # each run records its attempt's result in its own time
        while len(ended := [a for a in await attempts_to_ring_bob(b) if a[0]]) < 2 or (
                await calls_counted(a))["placed"] == sum((await calls_counted(a)).values()):
            await asyncio.sleep(0.01)
    assert sorted(ended) == [("called_off", "StepTakenOver"), ("placed", None)]
    assert await calls_counted(a) == {"placed": 1, "failed": 0, "called_off": 1}
    await the_rest_is_b_s_alone(a, b)


async def test_a_stalled_replica_does_not_stop_a_chain_another_took_over(
    bot_factory: BotFactory,
) -> None:
    """Replica A claims Bob's step and stalls checking the requester's right to escalate. B takes
    the step over and rings Bob. The requester then leaves the responders' group, so A, coming
    back, would stop the whole chain while Bob's phone rings: that is no longer A's to decide.
    (B's own check, at the next step, decides it.)"""
    a, b, escalation, gate = await bobs_step_taken_over_from_a_stalled_replica(bot_factory)
    b.slack.usergroups["S0ONCALL"] = []
    gate.open()  # A comes back to Bob's step, and finds the requester no longer allowed
    await run_ended(a)
    await b.settle()
    assert await state_of(b) == EscalationState.RUNNING
    assert BOB_RINGING in (escalation.text or "")
    assert "escalation stopped" not in everything_sent_to_slack(b)
    services(b).access.forget_groups()  # B's own check, at the next step, stops the chain
    await the_rest_is_b_s_alone(a, b, stops=True)


@on_both_databases
async def test_a_stalled_replica_does_not_skip_a_step_another_took_over_and_is_ringing(
    bot_factory: BotFactory,
) -> None:
    """Replica A claims Bob's step and stalls reading his Slack profile (his number is there). B
    takes the step over and rings him. His profile loses its number meanwhile, so A, coming back,
    would skip his step and move the chain on (the next person rung while his phone rings):
    refused, A writes nothing, and the chain stays with B."""
    policy = ROSTER.replace('U0BOB = "+18144043094"\n', "")
    a, clock = await start(bot_factory, policy=policy, LEASE_SECONDS="3")
    a.slack.users["U0BOB"] = {"profile": {"phone": "+18144043094"}}
    view, _ = await open_on_message(a)
    assert await submit(a, view) == {}
    escalation = await escalation_message(a)
    await wait_for_edit(a, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    services(a).oncall.phones.forget()  # read when the form showed who comes next
    gate = hold_the_first(a, "users.info", user="U0BOB")
    clock.advance(91)
    await gate.wait_until_held()
    await stall(a)

    b, _ = await start(bot_factory, policy=policy, clock=clock, LEASE_SECONDS="3")
    await b.evo.wait_for_posts(2)
    await wait_for_edit(b, escalation, BOB_RINGING)
    a.slack.users["U0BOB"] = {"profile": {"phone": ""}}
    gate.open()  # A comes back to Bob's step, and finds no number: its run ends there
    await run_ended(a)
    await b.settle()
    assert dialled(b) == [ALICE, BOB]  # Carol is not rung while Bob's phone rings
    assert BOB_RINGING in (escalation.text or "") and "skipped" not in (escalation.text or "")
    await the_rest_is_b_s_alone(a, b)


async def the_rest_is_b_s_alone(a: BotUnderTest, b: BotUnderTest, *, stops: bool = False) -> None:
    """After A's run came back to Bob's step and was refused it: Bob's deadline is met by B
    alone (his call hung up once, the next person rung once, or the chain stopped, `stops`, for
    a requester no longer allowed), and A's run has ended."""
    services(b).escalations.clock.advance(91)  # type: ignore[attr-defined]
    if stops:
        await wait_for_state(b, EscalationState.FAILED)
    else:
        await b.evo.wait_for_posts(3)
    await run_ended(a)
    await a.settle()
    await b.settle()
    assert len(b.evo.hang_ups(session_of(b, BOB))) == 1
    # Carol, without a number, is skipped.
    assert dialled(b) == [ALICE, BOB] if stops else [ALICE, BOB, MANAGER]


async def test_a_stalled_replica_whose_step_cannot_be_called_leaves_the_step_to_the_other(
    bot_factory: BotFactory,
) -> None:
    """Replica A claims Bob's step and stalls; B takes it over and rings Bob. The flow then
    disappears from the account, so A, coming back, finds Bob's step can't be called: that is no
    longer A's to write. Bob's step is not marked "couldn't be called" while his phone rings, he
    is not paged again, and A's run leaves the chain to B at once."""
    a, b, escalation, gate = await bobs_step_taken_over_from_a_stalled_replica(bot_factory)
    a.evo.flows = []
    services(a).catalog.forget()
    gate.open()  # A comes back to Bob's step, and finds no flow to call him with
    await run_ended(a)
    await page_of(b, "U0BOB")  # B's page: its post may wait for the calls being dialled
    await a.settle()
    await b.settle()
    assert dialled(b) == [ALICE, BOB]
    assert BOB_RINGING in (escalation.text or "")
    assert "couldn't be called" not in (escalation.text or "")
    assert len([c for c in b.slack.calls if c.method == "chat.postMessage"
                and c.params.get("channel") == "U0BOB"]) == 1  # paged once, by B


BOB_RINGING = "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…"


async def bobs_step_taken_over_from_a_stalled_replica(
    bot_factory: BotFactory,
) -> tuple[BotUnderTest, BotUnderTest, Message, Gate]:
    """Replica A holds in Bob's step (hold_bobs_step) and stalls; B starts, takes the step over
    and rings Bob. A, B, the card, and the gate that holds A."""
    policy = ROSTER + 'responders = ["S0ONCALL"]\n'
    a, clock = await start(bot_factory, policy=policy, LEASE_SECONDS="3")
    escalation, gate = await hold_bobs_step(a, clock)
    await stall(a)
    b, _ = await start(bot_factory, policy=policy, clock=clock, LEASE_SECONDS="3")
    await b.evo.wait_for_posts(2)
    await wait_for_edit(b, escalation, BOB_RINGING)
    return a, b, escalation, gate


async def run_ended(bot: BotUnderTest) -> None:
    """Until the replica drives no escalation any more."""
    async with asyncio.timeout(10):
        while services(bot).escalations.running:
            await asyncio.sleep(0.01)


async def hold_bobs_step(bot: BotUnderTest, clock: Clock) -> tuple[Message, Gate]:
    """U0SRE, a responder by user group, escalates; Alice's phone rings; at her deadline the bot
    claims Bob's step, and its check of the requester's group (read afresh) holds on Slack."""
    bot.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    view, _ = await open_on_message(bot, user_id="U0SRE")
    assert await submit(bot, view, user_id="U0SRE") == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    services(bot).access.forget_groups()
    gate = hold_the_first(bot, "usergroups.users.list")
    clock.advance(91)
    await gate.wait_until_held()
    return escalation, gate


def hold_the_first(bot: BotUnderTest, method: str, *, user: str | None = None,
                   channel: str | None = None) -> Gate:
    """Hold the next call to `method` (about `user`, or to `channel`, if given) only: the replica
    that makes it, not the calls after it."""
    held: list[ApiCall] = []

    def only_the_first(call: ApiCall) -> bool:
        if user is not None and call.params.get("user") != user:
            return False
        if channel is not None and call.params.get("channel") != channel:
            return False
        held.append(call)
        return len(held) == 1

    return bot.slack.hold(method, when=only_the_first)


async def test_a_step_whose_call_evo_voice_cannot_find_by_its_deadline_says_it_may_still_ring(
    bot_factory: BotFactory,
) -> None:
    """Alice's POST is answered 500: her call may have been placed, but no session is known to hang
    up at her deadline. The card says her phone may still ring, and Bob is called."""
    bot, clock = await start(bot_factory)
    bot.evo.queue_outgoing(ErrorStatus(500, "Internal server error"))
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 📞 calling…")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after "
                        "90 s (Its call could not be found in Evo Voice to hang it up; it may "
                        "still ring.)")


async def test_a_step_whose_post_failed_is_not_recorded_with_another_call_s_session(
    bot_factory: BotFactory,
) -> None:
    """A /call rang Alice a moment ago; then her step's POST is answered 500, and the one session
    Evo Voice shows for her number is that /call's. The audit trail does not record it as her
    step's call (an operator would read that the step rang her): her step's attempt names no
    session, the /call's still names its own."""
    bot, clock = await start(bot_factory)
    await bot.command(f"{ALICE} escalation")
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    [earlier] = bot.evo.sessions
    bot.evo.queue_outgoing(ErrorStatus(500, "Internal server error"))
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 📞 calling…")
    async with asyncio.timeout(10):  # the step's result is written as its card is drawn
        while (step := (await audit_records(bot))[0]).result is None:
            await asyncio.sleep(0.01)
    call = (await audit_records(bot))[1]
    assert step.origin != call.origin
    assert step.result is not None and call.result is not None
    assert (step.result.kind, step.result.session_id) == ("unknown", None)
    assert (call.result.kind, call.result.session_id) == ("placed", earlier)
    assert list(bot.evo.sessions) == [earlier]


async def alice_given_up_as_not_found(
    bot_factory: BotFactory,
) -> tuple[BotUnderTest, Clock, Message]:
    """A chain whose first step, Alice's, has a call the follower gave up looking for: her POST
    was answered 500 and no session showed up within CALL_FIND_SECONDS. Her phone may still ring."""
    bot, clock = await start(bot_factory)
    bot.evo.queue_outgoing(ErrorStatus(500, "Internal server error"))
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 📞 calling…")
    await looked_for_long_enough(bot)  # on the follower's clock: the chain's stays put
    db = services(bot).db
    async with asyncio.timeout(10):
        while (await db.fetchone("SELECT state FROM calls"))["state"] != "not_found":
            await asyncio.sleep(0.01)
    return bot, clock, escalation


async def test_a_step_whose_call_is_given_up_as_not_found_waits_for_its_deadline(
    bot_factory: BotFactory,
) -> None:
    """Alice's POST is answered 500, and Evo Voice shows no session for it until the follower gives
    up looking (CALL_FIND_SECONDS, shorter here than answer_timeout). Her phone may still ring:
    that is no call that ended, so her step lasts until its deadline, where the card says her
    phone may still ring, and only then is Bob called."""
    bot, clock, escalation = await alice_given_up_as_not_found(bot_factory)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after "
                        "90 s (Its call could not be found in Evo Voice to hang it up; it may "
                        "still ring.)")
    assert "didn't answer (the call ended)" not in (escalation.text or "")


@pytest.mark.parametrize("ending", ["stop", "ack"])
async def test_stop_or_i_m_on_it_while_a_call_is_given_up_as_not_found_says_it_may_still_ring(
    bot_factory: BotFactory, ending: str,
) -> None:
    """Alice's POST is answered 500 and no session shows up until the follower gives up looking:
    her phone may still ring. Stop escalation, or I'm on it by the requester, ends the chain, and
    the card says her phone may still ring rather than that her call was ended or no longer
    followed; nobody else is rung."""
    bot, _, escalation = await alice_given_up_as_not_found(bot_factory)
    await end_from_its_message(bot, escalation, ending, acknowledged_by="U0ADMIN")
    await wait_for_edit(bot, escalation, "(Its call could not be found in Evo Voice to hang it "
                                         "up; it may still ring.)")
    assert "no longer followed" not in (escalation.text or "")
    assert dialled(bot) == [ALICE]


async def test_a_responder_s_own_limit_holds_for_its_whole_window(bot_factory: BotFactory) -> None:
    """`escalations_per_person = "1/1h"`: refused for the whole hour after the first, allowed
    once it has passed (the window is the escalation service's clock, moved here)."""
    bot, clock = await start(bot_factory, policy=ROSTER + 'escalations_per_person = "1/1h"\n')
    view, _ = await open_on_message(bot, user_id=DEVELOPER)
    assert await submit(bot, view, user_id=DEVELOPER) == {}
    await bot.evo.wait_for_posts(1)
    await click_ack(bot, await page_of(bot, "U0ALICE"), user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    clock.advance(59 * 60)
    view, _ = await open_on_message(bot, text="down again", user_id=DEVELOPER)
    answer = await submit(bot, view, user_id=DEVELOPER)
    assert "You have started 1 escalation in the last hour" in str(answer.get("errors"))
    clock.advance(2 * 60)  # an hour and a minute after the first
    view, _ = await open_on_message(bot, text="down once more", user_id=DEVELOPER)
    assert await submit(bot, view, user_id=DEVELOPER) == {}
    await bot.evo.wait_for_posts(2)


async def test_a_second_i_m_on_it_by_the_same_person_hears_it_was_theirs(
    bot_factory: BotFactory,
) -> None:
    bot, _, escalation = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    stale = as_first_drawn(page)  # her client hadn't refreshed
    _, url = await click_ack(bot, stale, user_id="U0ALICE")
    [again] = await bot.slack.wait_for_response(url)
    assert again["text"].startswith("You acknowledged this page first, at <!date^")


async def test_i_m_on_it_after_stop_escalation_is_told_it_is_over_and_changes_nothing(
    bot_factory: BotFactory,
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    await click_stop(bot, escalation, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    stale = as_first_drawn(page)  # her client hadn't refreshed
    _, url = await click_ack(bot, stale, user_id="U0ALICE")
    [late] = await bot.slack.wait_for_response(url)
    assert "This escalation is already over" in late["text"]
    clock.advance(1000)
    await bot.settle()
    assert await state_of(bot) == EscalationState.STOPPED
    assert "they are on it" not in everything_sent_to_slack(bot)  # no broadcast
    assert "stopped by <@U0ADMIN>." in (escalation.text or "")
    assert dialled(bot) == [ALICE]


async def test_i_m_on_it_by_a_responder_not_paged_is_in_the_audit_trail_of_the_ringing_call(
    bot_factory: BotFactory,
) -> None:
    bot, _, escalation = await running_escalation(bot_factory)
    await click_ack(bot, escalation, user_id=DEVELOPER)  # not paged, allowed to escalate
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    [record] = await audit_records(bot)  # Alice's call, rung for this step
    acknowledged = [e for e in record.events if e.kind == "acknowledged"]
    assert len(acknowledged) == 1 and DEVELOPER in (acknowledged[0].reason or "")


async def test_a_page_acknowledged_with_i_m_on_it_reads_acknowledged_in_the_history(
    bot_factory: BotFactory,
) -> None:
    # Alice clicks I'm on it while her phone rings: the card says she acknowledged, and her
    # ringing call is hung up. The history must not call that page "not answered".
    bot, _, escalation = await running_escalation(bot_factory)
    await page_of(bot, "U0ALICE")
    await click_ack(bot, escalation, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await bot.settle()
    [line] = str((await history(bot, user_id="U0ADMIN"))["text"]).splitlines()[1:]
    assert "✅ acknowledged by <@U0ALICE>" in line and "not answered" not in line, line


async def test_stop_escalation_leaves_a_call_already_answered_on(bot_factory: BotFactory) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Connected")
    await poll_now(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🟢 on the phone")
    await click_stop(bot, escalation, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    # Not "no longer followed": she answered.
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was "
                                         "answered but not acknowledged")
    assert "stopped by <@U0ADMIN>." in (escalation.text or "")
    clock.advance(1000)
    await bot.settle()
    assert not hung_up(bot, alice)  # she is on the phone: Stop hangs up only a ringing call
    assert dialled(bot) == [ALICE]


async def test_stop_clicked_as_the_answer_is_written_down_ends_the_chain_at_once(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ack = "answer"`: Alice answers, and Stop escalation lands between the chain seeing it and
    writing it down. The Stop wins (the row no longer says running), and the chain that saw the
    answer winds the escalation down itself, not a lease round later (here 100 s: LEASE_SECONDS
    300)."""
    bot, _ = await start(bot_factory, policy=ROSTER + 'ack = "answer"\n', LEASE_SECONDS="300")
    store = services(bot).escalations.store
    real = store.set_state
    raced: list[bool] = []

    async def set_state(escalation_id: int, before: Any, after: str, **values: Any) -> bool:
        if after == EscalationState.ANSWERED and not raced:
            await click_stop(bot, escalation, user_id="U0ADMIN")
            await wait_for_state(bot, EscalationState.STOPPING)
            raced.append(await real(escalation_id, before, after, **values))
            return raced[-1]
        return await real(escalation_id, before, after, **values)

    monkeypatch.setattr(store, "set_state", set_state)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Connected")
    await wait_for_state(bot, EscalationState.STOPPED)
    assert raced == [False]  # the Stop came first
    await wait_for_edit(bot, escalation, "stopped by <@U0ADMIN>.")
    assert not hung_up(bot, alice)  # she is on the phone
    assert dialled(bot) == [ALICE]


async def test_acknowledging_an_earlier_page_leaves_the_next_person_s_answered_call_on(
    bot_factory: BotFactory,
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    alices_page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    bob = session_of(bot, BOB)
    bot.evo.set_session_state(bob, callState="Connected")  # Bob is listening to the page
    await poll_now(bot)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🟢 on the phone")
    await click_ack(bot, alices_page, user_id="U0ALICE")  # Alice saw her page late
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — ❌ the call was "
                                         "answered but not acknowledged")
    assert "call ended" not in (escalation.text or "")  # his call goes on
    assert not hung_up(bot, bob)


async def test_with_ack_answer_a_later_i_m_on_it_hears_who_answered_first(
    bot_factory: BotFactory,
) -> None:
    bot, _, escalation = await running_escalation(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected")
    await poll_now(bot)
    await wait_for_state(bot, EscalationState.ANSWERED)
    stale = as_first_drawn(escalation)  # Bob's client hadn't refreshed
    _, url = await click_ack(bot, stale, user_id="U0BOB")
    [late] = await bot.slack.wait_for_response(url)
    assert late["text"].startswith("<@U0ALICE> acknowledged this page first, at <!date^")



@pytest.mark.parametrize("button", ["stop", "ack"])
async def test_stop_or_i_m_on_it_while_the_next_step_waits_on_slack_s_checks_rings_nobody_else(
    bot_factory: BotFactory, button: str
) -> None:
    """At Alice's deadline the bot claims Bob's step and checks the requester's right, Slack slow
    to answer. Stop escalation (or I'm on it) is clicked meanwhile: when Slack answers, Bob is not
    rung, and the card says he was not called; the chain ends as the click said, in the run that
    was dialling (a lease round, here minutes away, picking the chain up later would leave the
    card unchanged meanwhile)."""
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n',
                             LEASE_SECONDS="300")
    escalation, gate = await hold_bobs_step(bot, clock)
    if button == "stop":
        await click_stop(bot, escalation, user_id="U0SRE")
    else:
        await click_ack(bot, escalation, user_id="U0SRE")
    gate.open()
    await wait_for_state(bot, EscalationState.STOPPED if button == "stop"
                         else EscalationState.ACKNOWLEDGED)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert "<@U0BOB> (+1 814" not in (escalation.text or "")
    await wait_for_edit(bot, escalation, "2. <@U0BOB> — – not called")  # not "call ended"
    # Bob's attempt was called off, not failed: no alert on failed calls fires for a Stop.
    assert await attempts_to_ring_bob(bot) == [("called_off", "ChainNotRunning")]
    assert await calls_counted(bot) == {"placed": 1, "failed": 0, "called_off": 1}
    [line] = [line for line in (await history(bot))["text"].splitlines() if "3094" in line]
    assert "⏹️ not dialled: the escalation went on without it (ChainNotRunning)" in line


@pytest.mark.parametrize("button", ["stop", "ack"])
async def test_stop_or_i_m_on_it_while_the_next_step_reads_a_profile_pages_nobody_else(
    bot_factory: BotFactory, button: str
) -> None:
    """At Alice's deadline Bob's step reads his Slack profile (he is not in [people]), Slack slow
    to answer. Stop escalation (or I'm on it) is clicked meanwhile, and his profile has no phone:
    he is neither skipped nor paged in Slack afterwards (nobody else is called, in Slack either),
    and the card says he was not called."""
    policy = ROSTER.replace('U0BOB = "+18144043094"\n', "")
    bot, clock = await start(bot_factory, policy=policy, LEASE_SECONDS="300")
    bot.slack.users["U0BOB"] = {"profile": {"phone": ""}}
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    services(bot).oncall.phones.forget()  # read when the form showed who comes next
    gate = hold_the_first(bot, "users.info", user="U0BOB")
    clock.advance(91)
    await gate.wait_until_held()
    if button == "stop":
        await click_stop(bot, escalation, user_id="U0ADMIN")
    else:
        await click_ack(bot, escalation, user_id="U0ADMIN")
    await wait_for_state(bot, "stopping" if button == "stop" else "acknowledging")
    gate.open()
    await wait_for_state(bot, EscalationState.STOPPED if button == "stop"
                         else EscalationState.ACKNOWLEDGED)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert not [c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0BOB"]  # no page after the end
    await wait_for_edit(bot, escalation, "2. <@U0BOB> — – not called")
    assert "skipped" not in (escalation.text or "")


async def test_stop_while_the_next_step_finds_the_requester_no_longer_allowed_is_no_failure(
    bot_factory: BotFactory,
) -> None:
    """At Alice's deadline the check of the requester's right holds on Slack; meanwhile they
    are taken out of the group, and they click Stop. Slack then says they may no longer
    escalate: the Stop came first, so the thread is not told the escalation could not go on."""
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n',
                             LEASE_SECONDS="300")
    escalation, gate = await hold_bobs_step(bot, clock)
    bot.slack.usergroups["S0ONCALL"] = []
    await click_stop(bot, escalation, user_id="U0SRE")
    gate.open()
    await wait_for_state(bot, EscalationState.STOPPED)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert not any("The on-call escalation stopped" in str(c.params.get("text"))
                   for c in bot.slack.calls_to("chat.postMessage"))


async def test_each_step_s_call_is_recorded_with_the_session_it_rang(
    bot_factory: BotFactory,
) -> None:
    """The audit trail names the Evo Voice session each step's call rang (what an operator looks
    up in Evo Voice after an incident), Alice's and Bob's alike."""
    bot, clock = await start(bot_factory)
    escalation = await escalated(bot)
    clock.advance(91)
    await wait_for_edit(bot, escalation, BOB_RINGING)

    async def recorded() -> dict[str, tuple[str, str | None] | None]:
        return {r.number_masked: (r.result.kind, r.result.session_id) if r.result else None
                for r in await audit_records(bot)}

    async with asyncio.timeout(10):  # the step's result is written as its card is drawn
        while None in (await recorded()).values():
            await asyncio.sleep(0.01)
    assert await recorded() == {"+1 814 ••• 3093": ("placed", session_of(bot, ALICE)),
                        "+1 814 ••• 3094": ("placed", session_of(bot, BOB))}


async def attempts_to_ring_bob(bot: BotUnderTest) -> list[tuple[str | None, str | None]]:
    """How each attempt to ring Bob ended in the audit trail: (result, reason)."""
    return [(r.result.kind, r.result.reason) if r.result else (None, None)
            for r in reversed(await audit_records(bot)) if r.number_masked == "+1 814 ••• 3094"]


async def calls_counted(bot: BotUnderTest) -> dict[str, float]:
    samples = await scrape(bot)
    return {outcome: value(samples, "callbot_calls_total", outcome=outcome)
            for outcome in ("placed", "failed", "called_off")}


@pytest.mark.parametrize("error", ["internal_error", "ratelimited"])
async def test_slack_failing_to_show_a_profile_read_before_still_rings_its_number(
    bot_factory: BotFactory, error: str,
) -> None:
    """Carol's number is in her Slack profile, read when the escalation started. When her step
    begins, that read has expired and Slack fails to answer users.info: she is rung at the number
    read before, not skipped (Slack failing stops no dial), and at once: a 429's Retry-After (30 s)
    was waited out twice before that number was used."""
    pauses = Pauses()
    bot, clock = await start(bot_factory, slack_sleep=pauses)
    bot.slack.users["U0CAROL"] = {"profile": {"phone": "+18144043095"}}
    escalation = await escalated(bot)
    clock.advance(91)
    await wait_for_edit(bot, escalation, BOB_RINGING)
    bot.slack.fail("users.info", error, retry_after=30)  # Slack fails for a while...
    services(bot).oncall.phones.forget()  # ... once the profiles read at the start have expired
    clock.advance(91)
    await bot.evo.wait_for_posts(3)
    assert dialled(bot) == [ALICE, BOB, "+18144043095"]
    await wait_for_edit(bot, escalation, "3. <@U0CAROL> (+1 814 ••• 3095) — 🔔 ringing…")
    assert "skipped" not in (escalation.text or "")
    assert pauses == []


async def test_a_deactivated_person_s_profile_phone_is_not_dialled(
    bot_factory: BotFactory,
) -> None:
    # Carol left: her Slack account is deactivated, its profile still holds her own phone. An
    # escalation must not ring someone who left (`callbot check` flags her; the chain can't wait).
    bot, clock = await start(bot_factory)
    bot.slack.users["U0CAROL"] = {"deleted": True, "profile": {"phone": "+18144043095"}}
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    for person in ("1. <@U0ALICE>", "2. <@U0BOB>"):
        await wait_for_edit(bot, escalation, f"{person} (+1 814 ••• ")
        await wait_for_edit(bot, escalation, "🔔 ringing…")
        clock.advance(91)
    await wait_for_edit(bot, escalation, "3. <@U0CAROL> — ⏭ skipped: no usable phone number")
    await wait_for_edit(bot, escalation, "4. <@U0MANAGER> (escalate_to) (+1 814 ••• 3090)")
    assert "+18144043095" not in dialled(bot)
    assert "deactivated" in (escalation.text or "")


async def test_a_step_whose_call_its_checks_refuse_is_counted_as_the_audit_trail_records_it(
    bot_factory: BotFactory,
) -> None:
    """Evo Voice can't list its flows when Bob's and then the manager's steps come: neither is
    dialled ("couldn't be called"), each is in the audit trail, and each is counted in
    callbot_calls_total, as a `/call` its checks refuse is: the metrics and the trail agree."""
    bot, clock, escalation = await running_escalation(bot_factory)
    await steps_past_alices_refused(bot, clock)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    records = await audit_records(bot)
    assert sorted(r.decision for r in records) == ["allowed", "failed", "failed"]
    samples = await scrape(bot)
    assert {outcome: value(samples, "callbot_calls_total", outcome=outcome)
            for outcome in ("placed", "failed", "refused")} == {
        "placed": 1, "failed": 0, "refused": 2}


ALICE_RINGING = "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…"


@on_both_databases
async def test_a_stalled_replica_s_run_leaves_the_step_it_watched_to_the_one_that_took_it_over(
    bot_factory: BotFactory,
) -> None:
    """Replica A rings Alice and stalls while her phone rings (its leases lapse); B takes the
    escalation over. A's run of the chain is still there, as a replica's is when it comes back,
    before its lease keeper's next round lets go of it. At Alice's deadline A's run sees the
    chain is B's and ends, doing nothing: her call is hung up once and Bob rung once, by B; and
    so on at Bob's deadline, with no second run driving the chain beside B's."""
    a, clock = await start(bot_factory, LEASE_SECONDS="3")
    view, _ = await open_on_message(a)
    assert await submit(a, view) == {}
    escalation = await escalation_message(a)
    await wait_for_edit(a, escalation, ALICE_RINGING)
    await stall(a)
    b, _ = await start(bot_factory, clock=clock, LEASE_SECONDS="3")
    async with asyncio.timeout(10):
        while not services(b).escalations.running:  # B's lease keeper took the chain over
            await asyncio.sleep(0.01)
    clock.advance(91)
    await b.evo.wait_for_posts(2)
    await wait_for_edit(b, escalation, BOB_RINGING)
    await run_ended(a)
    await b.settle()
    assert dialled(b) == [ALICE, BOB]
    assert len(b.evo.hang_ups(session_of(b, ALICE))) == 1
    clock.advance(91)  # Bob's deadline: B alone ends his step and moves on
    await b.evo.wait_for_posts(3)
    await b.settle()
    assert len(b.evo.hang_ups(session_of(b, BOB))) == 1
    assert dialled(b) == [ALICE, BOB, MANAGER]  # Carol, without a number, is skipped


@on_both_databases
async def test_a_replica_that_stalled_reading_a_step_at_its_deadline_leaves_the_step_to_the_other(
    bot_factory: BotFactory,
) -> None:
    """Replica A reads Alice's call afresh at her deadline, and stalls while that read is out. B
    takes the escalation over, hangs her call up and rings Bob; his page is on its way. A then
    comes back with its read (not answered): the step is B's. Alice's call is not hung up a
    second time, and Bob is paged once."""
    a, clock = await start(bot_factory, LEASE_SECONDS="3")
    view, _ = await open_on_message(a)
    assert await submit(a, view) == {}
    escalation = await escalation_message(a)
    await wait_for_edit(a, escalation, ALICE_RINGING)
    alice = session_of(a, ALICE)
    read_answered = asyncio.Event()
    a.evo.queue("GET", f"/sessions/{alice}", Gated(read_answered))  # A's read at her deadline
    clock.advance(91)
    async with asyncio.timeout(10):
        while not a.evo.requests_to("GET", f"/sessions/{alice}"):
            await asyncio.sleep(0.01)
    await stall(a)
    bobs_page = hold_the_first(a, "chat.postMessage", channel="U0BOB")

    b, _ = await start(bot_factory, clock=clock, LEASE_SECONDS="3")
    await b.evo.wait_for_posts(2)
    await bobs_page.wait_until_held()  # B's page to Bob, on its way
    read_answered.set()  # A comes back with its read: Alice's call, not answered
    await run_ended(a)
    bobs_page.open()
    await page_of(b, "U0BOB")
    await a.settle()
    await b.settle()
    assert dialled(b) == [ALICE, BOB]
    assert len(b.evo.hang_ups(alice)) == 1  # by B
    pages = [c for c in b.slack.calls_to("chat.postMessage") if c.params.get("channel") == "U0BOB"]
    assert len(pages) == 1
