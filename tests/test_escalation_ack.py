"""An escalation ends when someone acknowledges the page, end to end in both modes: I'm on it on
the page (the person's DM) or on the escalation's message, a flow outcome listed in
`ack_outcomes`, a voicemail (connected, ended, no acknowledgement) moving the chain on at once, a
call still connected at the deadline, a later click hearing who was first, and an acknowledgement
that lands while the bot restarts.

Deadlines run on the escalation service's clock, moved by hand (see test_escalation.py).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION, STOP_ESCALATION_ACTION
from bot.standins.evovoice import ErrorStatus, Gated, Respond
from bot.standins.slack import Message, block_actions_payload, interactive_body
from tests.conftest import BotFactory, BotUnderTest, until
from tests.databases import on_both_databases
from tests.follow_helpers import audit_records, history, lines, poll_now, services
from tests.escalations import (
    ALICE,
    ALICE_ONLY,
    BOB,
    ROSTER,
    WITH_OUTCOMES,
    acknowledged_on_the_call_alone,
    alice_on_the_phone,
    as_first_drawn,
    click_ack,
    Clock,
    dialled,
    escalation_message,
    hung_up,
    metrics_text,
    open_on_message,
    page_of,
    picked_up_unseen,
    running_escalation,
    session_of,
    start,
    state_of,
    submit,
    wait_for_edit,
    wait_for_post,
    wait_for_state,
)



async def call_seen_connected(bot: BotUnderTest, escalation: Message) -> None:
    """Wait until the card shows Alice's call connected (the follower saw it)."""
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🟢 on the phone, "
                                         "not acknowledged yet")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_i_m_on_it_counts_before_slack_has_answered_the_page_s_post(
    bot_factory: BotFactory, mode: str
) -> None:
    """Alice's page is in her DM, but Slack's answer to its post hasn't reached the bot: she
    clicks at once, and her click counts all the same."""
    bot, clock = await start(bot_factory, mode)
    view, _ = await open_on_message(bot)
    answer = bot.slack.hold("chat.postMessage", after=True,
                            when=lambda c: c.params.get("channel") == "U0ALICE")
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await answer.wait_until_held()
    [page] = bot.slack.channel_messages(bot.slack.dm_channel("U0ALICE"))

    # The page's button counts for the person its step pages, not for whoever sends its value.
    _, bobs = await click_ack(bot, page, user_id="U0BOB")
    [refused] = await bot.slack.wait_for_response(bobs)
    assert refused["response_type"] == "ephemeral"
    assert await state_of(bot) == EscalationState.RUNNING

    clock.advance(30)
    _, url = await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged at <!date^")
    answer.open()
    # Recorded once Slack answers, the page says she is on it, without the button.
    await bot.slack.wait_for_call(
        "chat.update", lambda c: c.params.get("ts") == page.ts
        and "You acknowledged this page" in str(c.params.get("text")), timeout=10.0)
    assert ACK_ESCALATION_ACTION not in json.dumps(page.blocks)
    clock.advance(1000)  # long past every deadline: nobody else is called
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert bot.slack.responses_to(url) == []  # nothing refused
    [event] = await services(bot).db.fetchall(
        "SELECT * FROM audit_events WHERE kind = 'acknowledged'")
    assert event["actor_id"] == "U0ALICE"


async def test_the_buttons_act_only_from_the_escalations_own_messages(
    bot_factory: BotFactory,
) -> None:
    """A button's value sent from a message that isn't the escalation's card or one of its pages
    (another channel or team, the page of a step not begun, a copy of a page already recorded) is
    told the button no longer works, whoever clicks; the chain goes on."""
    bot, _ = await start(bot_factory)
    view, _ = await open_on_message(bot)
    answer = bot.slack.hold("chat.postMessage", after=True,
                            when=lambda c: c.params.get("channel") == "U0ALICE")
    assert await submit(bot, view) == {}
    card = await escalation_message(bot)
    await answer.wait_until_held()
    [page] = bot.slack.channel_messages(bot.slack.dm_channel("U0ALICE"))
    [row] = await services(bot).db.fetchall("SELECT id FROM escalations")
    escalation_id = int(row["id"])

    async def refused(action_id: str, value: str, *, user_id: str, channel: str, ts: str,
                      team_id: str | None = None) -> None:
        url = bot.slack.response_url()
        await bot.post_signed(interactive_body(block_actions_payload(
            action_id=action_id, value=value, channel_id=channel, message_ts=ts,
            response_url=url, user_id=user_id, team_id=team_id or bot.slack.team_id,
        )))
        [told] = await bot.slack.wait_for_response(url)
        assert "no longer works" in told["text"], (action_id, value, user_id, channel)
        assert "Escalate to on-call" in told["text"] and "/call to place" not in told["text"]
        assert await state_of(bot) == EscalationState.RUNNING

    ack, stop = ACK_ESCALATION_ACTION, STOP_ESCALATION_ACTION
    # Alice's page, not recorded yet (Slack's answer held): clicked in another team.
    await refused(ack, f"{escalation_id}:0", user_id="U0ALICE", channel=page.channel,
                  ts=page.ts, team_id="T0OTHER")
    # Bob's step has not begun: the value of his page, sent from his own DM.
    await refused(ack, f"{escalation_id}:1", user_id="U0BOB",
                  channel=bot.slack.dm_channel("U0BOB"), ts=page.ts)
    answer.open()
    while not await services(bot).escalations.store.pages(escalation_id):
        await asyncio.sleep(0.01)
    # Alice's page is recorded now: its value, sent from anywhere else.
    await refused(ack, f"{escalation_id}:0", user_id="U0ALICE", channel="C0OTHER", ts=page.ts)
    # Stop escalation: from another channel; from the card's channel and ts in another team.
    await refused(stop, str(escalation_id), user_id="U0ADMIN", channel="C0OTHER", ts=card.ts)
    await refused(stop, str(escalation_id), user_id="U0ADMIN", channel=card.channel, ts=card.ts,
                  team_id="T0OTHER")
    # From the page itself, Alice's click counts.
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_voicemail_moves_the_chain_on_at_once(bot_factory: BotFactory, mode: str) -> None:
    bot, _, escalation = await running_escalation(bot_factory, mode)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Connected", answeredByName="Voicemail")
    await poll_now(bot)
    await call_seen_connected(bot, escalation)
    assert dialled(bot) == [ALICE]  # connected is not acknowledged: still waiting, not moving on
    bot.evo.set_session_state(alice, callState="Disconnected", ended=True, outcome="Completed")
    await poll_now(bot)
    # No clock moved: the call ended without an acknowledgement, so the next person at once.
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was "
                                         "answered but not acknowledged (voicemail?)")
    assert not hung_up(bot, alice)
    assert await state_of(bot) == EscalationState.RUNNING


@pytest.mark.parametrize("ended", [False, True])
async def test_an_ack_outcome_written_one_poll_after_the_end_acknowledges(
    bot_factory: BotFactory, ended: bool
) -> None:
    # Alice presses 1 and hangs up; her session reads over (Disconnected, `ended` not yet or
    # already set) a poll before its outcome is written. Read as a voicemail, Bob was rung too.
    bot, _, escalation, alice = await alice_on_the_phone(bot_factory)
    gate = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Respond(), Gated(gate))  # the end read, then the next held
    seen = len(bot.evo.reads_of(alice))
    bot.evo.set_session_state(alice, callState="Disconnected", ended=ended,
                              dateCompleted="0001-01-01T00:00:00")
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(alice)) > seen)  # the end read, no outcome
    bot.evo.set_session_state(alice, ended=True, outcome="Acknowledged")
    await poll_now(bot)
    gate.set()
    await acknowledged_on_the_call_alone(bot, escalation)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_i_m_on_it_on_the_page_stops_the_chain_and_a_later_click_hears_who_was_first(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory, mode)
    page = await page_of(bot, "U0ALICE")
    assert page.channel == bot.slack.dm_channel("U0ALICE")
    assert "<@U0ADMIN> escalated to on-call" in (page.text or "")
    assert "db primary is down" in (page.text or "")  # the reason
    assert f"archives/C0OPS/p{escalation.ts.replace('.', '')}" in json.dumps(page.blocks)
    alice = session_of(bot, ALICE)

    clock.advance(30)
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged at <!date^")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ✅ acknowledged at")
    assert ACK_ESCALATION_ACTION not in json.dumps(escalation.blocks)
    assert hung_up(bot, alice)  # her phone stops ringing: she is on it
    await bot.slack.wait_for_call(
        "chat.update", lambda c: c.params.get("ts") == page.ts
        and "You acknowledged this page" in str(c.params.get("text")), timeout=10.0)

    clock.advance(1000)  # long past every deadline: nobody else is called
    stale = as_first_drawn(escalation)  # Bob's client hadn't refreshed
    _, url = await click_ack(bot, stale, user_id="U0BOB")
    [late] = await bot.slack.wait_for_response(url)
    assert late["response_type"] == "ephemeral"
    assert late["text"].startswith("<@U0ALICE> acknowledged this page first, at <!date^")
    # Slack shows the blocks: the mention and the time are drawn there too, not shown as markup.
    [block] = late["blocks"]
    assert block["text"]["text"].startswith("<@U0ALICE> acknowledged this page first, at <!date^")
    await bot.settle()
    assert dialled(bot) == [ALICE]

    db = services(bot).db
    [event] = await db.fetchall("SELECT * FROM audit_events WHERE kind = 'acknowledged'")
    assert event["actor_id"] == "U0ALICE" and "I'm on it" in event["reason"]
    metrics = metrics_text(bot)
    assert 'oncall_acknowledgements_total{via="button"} 1.0' in metrics
    assert 'escalations_total{outcome="acknowledged"} 1.0' in metrics
    assert "oncall_time_to_acknowledge_seconds_count 1.0" in metrics
    assert 'oncall_time_to_acknowledge_seconds_bucket{le="30.0"} 1.0' in metrics
    # The thread stayed calm: the escalation's message, edited, and the call's own messages.
    texts = [m.text or "" for m in bot.slack.thread("C0OPS", escalation.thread_ts or "")]
    assert not any("acknowledged" in t for t in texts if not t.startswith("✅ *On-call"))


@pytest.mark.parametrize("when", ["while connected", "after it connected", "as it ends"])
async def test_a_flow_outcome_in_ack_outcomes_acknowledges(
    bot_factory: BotFactory, when: str
) -> None:
    # Whether a flow's outcome shows while the call is on, or only once it ended, is not known:
    # both are honoured, at once (not at the step's deadline).
    bot, clock, escalation = await running_escalation(bot_factory, policy=WITH_OUTCOMES)
    alice = session_of(bot, ALICE)
    if when == "while connected":
        bot.evo.set_session_state(alice, callState="Connected", outcome="pressed 1")
        await poll_now(bot)
    elif when == "after it connected":
        # She listens a while, then presses 1: the outcome is the only thing that changes.
        bot.evo.set_session_state(alice, callState="Connected")
        await poll_now(bot)
        await wait_for_edit(bot, escalation, "on the phone, not acknowledged yet")
        bot.evo.set_session_state(alice, outcome="pressed 1")
        await poll_now(bot)
    else:
        bot.evo.set_session_state(alice, callState="Disconnected", ended=True,
                                  outcome="Acknowledged")
        await poll_now(bot)
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged on the call at")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert not hung_up(bot, alice)  # it was answered: never cut short
    assert 'oncall_acknowledgements_total{via="outcome"} 1.0' in metrics_text(bot)


async def test_an_ack_outcome_the_poll_has_not_brought_back_by_the_deadline_still_counts(
    bot_factory: BotFactory,
) -> None:
    """At the deadline the session is read afresh: Alice pressed 1 while the follower's poll was
    still out, and her acknowledgement counts; nobody else is called, her call is left on."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=WITH_OUTCOMES)
    alice = session_of(bot, ALICE)
    polls = len(bot.evo.requests_to("GET", "/sessions"))
    poll_answered = asyncio.Event()
    bot.evo.queue("GET", "/sessions", Gated(poll_answered))  # the follower's next poll hangs
    await until(lambda: len(bot.evo.requests_to("GET", "/sessions")) > polls)
    bot.evo.set_session_state(alice, callState="Connected", outcome="pressed 1")
    clock.advance(91)
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged on the call at")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    poll_answered.set()
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert not hung_up(bot, alice)
    assert "not acknowledged" not in (escalation.text or "")  # her step says she acknowledged


# The second holds a listed outcome's words: only the whole outcome acknowledges.
@pytest.mark.parametrize("outcome", ["Hung up before pressing 1", "Not acknowledged"])
async def test_an_outcome_not_listed_is_no_acknowledgement(
    bot_factory: BotFactory, outcome: str
) -> None:
    bot, _, escalation = await running_escalation(bot_factory, policy=WITH_OUTCOMES)
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Disconnected", ended=True,
                              outcome=outcome)
    await poll_now(bot)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert await state_of(bot) == EscalationState.RUNNING


async def test_a_call_connected_at_the_deadline_is_left_on_and_the_chain_moves_on(
    bot_factory: BotFactory,
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Connected")
    await poll_now(bot)
    await call_seen_connected(bot, escalation)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert not hung_up(bot, alice)  # she may still be listening
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was "
                                         "answered but not acknowledged")


async def alice_picks_up_unseen_at_the_deadline(
    bot: BotUnderTest, clock: Clock
) -> tuple[str, asyncio.Event]:
    """Alice picks up while the follower's poll is still out (it hangs until the event returned
    is set), and her step's deadline comes: only the deadline's fresh read of her session sees her
    connected. Her session id, and the event that lets the poll answer."""
    alice = session_of(bot, ALICE)
    poll_answered = await picked_up_unseen(bot, alice)
    clock.advance(91)
    return alice, poll_answered


async def test_a_call_answered_just_before_the_deadline_unseen_by_a_poll_is_left_on(
    bot_factory: BotFactory,
) -> None:
    """Alice picks up while the follower's poll is still out: the deadline's fresh read of the
    session sees it connected, and her call is not cut off; the chain moves on."""
    bot, clock, escalation = await running_escalation(bot_factory)
    alice, poll_answered = await alice_picks_up_unseen_at_the_deadline(bot, clock)
    await bot.evo.wait_for_posts(2)
    poll_answered.set()
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was "
                                         "answered but not acknowledged")
    assert not hung_up(bot, alice)  # she may still be listening


async def test_a_call_read_connected_and_ended_at_the_deadline_was_answered(
    bot_factory: BotFactory,
) -> None:
    """Alice picked up and hung up while the follower's poll was out; the deadline's fresh read
    has `ended` set with callState still Connected: she answered (a voicemail, maybe), no "no
    answer" and no hang-up of a call that is over."""
    bot, clock, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    poll_answered = await picked_up_unseen(bot, alice, ended=True)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    poll_answered.set()
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was "
                                         "answered but not acknowledged")
    assert not hung_up(bot, alice)


async def test_with_ack_answer_a_call_answered_just_before_the_deadline_unseen_ends_the_chain(
    bot_factory: BotFactory,
) -> None:
    """`ack = "answer"`: Alice picks up while the follower's poll is still out. The deadline's
    fresh read of the session sees her connected: she answered, and Bob is not rung."""
    bot, clock, escalation = await running_escalation(bot_factory,
                                                      policy=ROSTER + 'ack = "answer"\n')
    alice, poll_answered = await alice_picks_up_unseen_at_the_deadline(bot, clock)
    await wait_for_state(bot, EscalationState.ANSWERED)
    poll_answered.set()
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ✅ answered")
    assert dialled(bot) == [ALICE]
    assert not hung_up(bot, alice)


async def test_a_call_evo_voice_no_longer_knows_at_the_deadline_is_not_said_hung_up(
    bot_factory: BotFactory,
) -> None:
    # The deadline's hang-up is answered 404: the call had ended on its own, nobody hung it up.
    bot, clock, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    for method in ("DELETE", "PATCH"):  # EndSession or PatchSession, whichever the login may use
        bot.evo.queue(method, f"/sessions/{alice}", ErrorStatus(404, "Session not found"))
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    await wait_for_edit(bot, escalation, "<@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s")
    assert "no answer after 90 s (hung up)" not in (escalation.text or "")


async def test_acknowledging_an_earlier_page_hangs_up_the_phone_ringing_now(
    bot_factory: BotFactory,
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    alices_page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    bob = session_of(bot, BOB)
    await click_ack(bot, alices_page, user_id="U0ALICE")  # Alice saw her page late
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — ⏹ called off: "
                                         "someone else acknowledged")
    assert ("1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s (hung up) · "
            "✅ acknowledged at") in (
        escalation.text or "")
    assert hung_up(bot, bob)
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE, BOB]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_guest_cannot_acknowledge(bot_factory: BotFactory, mode: str) -> None:
    bot, _, escalation = await running_escalation(bot_factory, mode)
    bot.slack.users["U0GUEST"] = {"is_restricted": True}
    _, url = await click_ack(bot, escalation, user_id="U0GUEST")
    [answer] = await bot.slack.wait_for_response(url)
    assert "can't acknowledge this page" in answer["text"]
    await bot.settle()
    assert await state_of(bot) == EscalationState.RUNNING
    assert not hung_up(bot, session_of(bot, ALICE))


async def test_i_m_on_it_slack_cannot_check_is_told_to_try_again_not_refused(
    bot_factory: BotFactory,
) -> None:
    """A member of the workspace (a responder, as everyone is by default) clicks I'm on it while
    Slack fails to say who they are: they are told the check failed and to try again, not that
    they may not acknowledge (which would leave them believing their acknowledgement is not
    wanted). Once Slack answers, their click counts."""
    bot, _, escalation = await running_escalation(bot_factory)
    bot.slack.fail("users.info", "internal_error")
    _, url = await click_ack(bot, escalation, user_id="U0DEV")
    [answer] = await bot.slack.wait_for_response(url)
    assert "can't acknowledge this page" not in answer["text"]
    assert "I could not check whether you may acknowledge this page" in answer["text"]
    assert "Try again in a minute" in answer["text"]
    assert await state_of(bot) == EscalationState.RUNNING
    bot.slack.off("users.info")
    await click_ack(bot, escalation, user_id="U0DEV")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    assert hung_up(bot, session_of(bot, ALICE))


async def test_an_acknowledgement_while_the_bot_restarts_is_honoured_and_nobody_is_dialled_twice(
    bot_factory: BotFactory,
) -> None:
    first, clock, escalation = await running_escalation(bot_factory)
    page = await page_of(first, "U0ALICE")
    alice = session_of(first, ALICE)
    # The bot is shutting down: new work is refused and the chains have paused, but Slack is
    # still answered. The click is written then and there.
    await services(first).tasks.drain(5)
    await services(first).escalations.stop()
    await click_ack(first, page, user_id="U0ALICE")
    assert await state_of(first) == EscalationState.ACKNOWLEDGING
    assert not hung_up(first, alice)
    await first.runtime.stop(grace=5)

    clock.advance(1000)  # every deadline passed while the bot was down
    second, _ = await start(bot_factory, clock=clock)
    await wait_for_state(second, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(second, escalation, "<@U0ALICE> acknowledged at")
    assert hung_up(second, alice)
    await second.settle()
    assert dialled(second) == [ALICE]


async def test_nobody_came_then_a_late_i_m_on_it_is_still_heard(bot_factory: BotFactory) -> None:
    policy = ROSTER.replace('rotation = ["U0ALICE", "U0BOB", "U0CAROL"]', 'rotation = ["U0ALICE"]')
    policy = policy.replace('escalate_to = ["U0MANAGER"]', "")
    bot, clock, escalation = await running_escalation(bot_factory, policy=policy)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await click_ack(bot, page, user_id="U0ALICE")
    late = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "they are on it" in str(c.params.get("text")), timeout=10.0)
    assert late.params["reply_broadcast"] in (True, "true", "1")  # as loud as "nobody came"
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged at")
    assert await state_of(bot) == EscalationState.ACKNOWLEDGED


async def test_a_late_i_m_on_it_whose_bot_stops_before_showing_it_is_shown_after_a_restart(
    bot_factory: BotFactory,
) -> None:
    """Nobody came, then Alice clicks I'm on it on her page. The acknowledgement is written, and
    the bot stops (a crash, a deploy cutting it short) while Slack has yet to answer its "they
    are on it" broadcast: the next start shows the end the click left unshown, as any end a
    stopped bot was showing (the card says who acknowledged, not that nobody came)."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    await wait_for_edit(bot, escalation, "nobody acknowledged")
    held = bot.slack.hold("chat.postMessage",
                          when=lambda c: "they are on it" in str(c.params.get("text")))
    await click_ack(bot, page, user_id="U0ALICE")
    await held.wait_until_held()
    await bot.runtime.stop(grace=0)
    held.open()

    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock)
    assert await state_of(second) == EscalationState.ACKNOWLEDGED
    await wait_for_edit(second, escalation, "<@U0ALICE> acknowledged at")
    assert "nobody acknowledged" not in (escalation.text or "")


async def test_a_late_i_m_on_it_while_the_bot_restarts_is_told_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    """Nobody came, and the chain's run is over. The bot is shutting down when Alice clicks I'm
    on it on her page: the acknowledgement is written at once, and the next start tells the
    channel she is on it, as loudly as "nobody came", and the card says so."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)
    await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    await wait_for_edit(bot, escalation, "nobody acknowledged")
    async with asyncio.timeout(10):  # Alice's call, hung up, ends: nothing left to watch
        while services(bot).escalations.running:
            await asyncio.sleep(0.01)
    await services(bot).tasks.drain(5)
    await services(bot).escalations.stop()
    await click_ack(bot, page, user_id="U0ALICE")
    assert await state_of(bot) == EscalationState.ACKNOWLEDGED
    await bot.runtime.stop(grace=5)

    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock)
    late = await wait_for_post(second, "they are on it")
    assert late.params["reply_broadcast"] in (True, "true", "1")
    await wait_for_edit(second, escalation, "<@U0ALICE> acknowledged at")
    assert "nobody acknowledged" not in (escalation.text or "")


async def test_an_ack_outcome_on_a_call_left_on_past_its_deadline_acknowledges(
    bot_factory: BotFactory,
) -> None:
    """Alice answered but had not pressed 1 by her deadline: her call is left on (she may still be
    listening) and Bob's phone rings. She then presses 1: that is her acknowledgement, as I'm on
    it on her page would be. Nobody else is called, and Bob's phone, still ringing, is hung up."""
    bot, clock, escalation, alice = await alice_on_the_phone(bot_factory)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    bob = session_of(bot, BOB)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    bot.evo.set_session_state(alice, outcome="pressed 1")  # still on the phone, she presses 1
    await poll_now(bot)
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — ⏹ called off: "
                                         "someone else acknowledged")
    assert "<@U0ALICE> acknowledged on the call at" in (escalation.text or "")
    assert hung_up(bot, bob)
    assert not hung_up(bot, alice)
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE, BOB]
    [event] = await services(bot).db.fetchall(
        "SELECT * FROM audit_events WHERE kind = 'acknowledged'")
    assert event["actor_id"] == "U0ALICE"


async def test_pressing_1_on_a_call_whose_hang_up_failed_at_its_deadline_acknowledges(
    bot_factory: BotFactory,
) -> None:
    """Alice's phone rang unanswered to her deadline and hanging it up failed: it may still ring,
    and Bob's phone rings. She then answers and presses 1: that is her acknowledgement, as on a
    call left on. Nobody else is called, and Bob's phone, still ringing, is hung up."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=WITH_OUTCOMES)
    alice = session_of(bot, ALICE)
    bot.evo.queue("PATCH", f"/sessions/{alice}", ErrorStatus(500, "Internal server error"))
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    bob = session_of(bot, BOB)
    await wait_for_edit(bot, escalation, "Internal server error. It may still ring.)")
    bot.evo.set_session_state(alice, callState="Connected", outcome="pressed 1")
    await poll_now(bot)
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — ⏹ called off: "
                                         "someone else acknowledged")
    assert "<@U0ALICE> acknowledged on the call at" in (escalation.text or "")
    assert hung_up(bot, bob)
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE, BOB]


LEFT_ON_POLICY = ALICE_ONLY + 'ack_outcomes = ["Acknowledged", "Pressed 1"]\n'


async def nobody_came_with_alice_still_on(
    bot_factory: BotFactory,
) -> tuple[BotUnderTest, Clock, Message, str]:
    """Alice alone answered and had not pressed 1 by her deadline: her call is left on, and the
    channel was told nobody acknowledged. The bot, its clock, the card, her session."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=LEFT_ON_POLICY)
    alice = session_of(bot, ALICE)
    bot.evo.set_session_state(alice, callState="Connected")
    await poll_now(bot)
    await call_seen_connected(bot, escalation)
    clock.advance(91)
    await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    return bot, clock, escalation, alice


async def heard_late_once(bot: BotUnderTest, escalation: Message, alice: str) -> None:
    """Alice, still on the phone, presses 1: a late acknowledgement, announced once."""
    bot.evo.set_session_state(alice, outcome="pressed 1")
    await poll_now(bot)
    late = await wait_for_post(bot, "they are on it")
    assert late.params["reply_broadcast"] in (True, "true", "1")
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged on the call at")
    assert await state_of(bot) == EscalationState.ACKNOWLEDGED
    await bot.settle()
    assert [c.ok for c in bot.slack.calls_to("chat.postMessage")
            if "they are on it" in str(c.params.get("text"))] == [True]
    assert not hung_up(bot, alice)
    [event] = await services(bot).db.fetchall(
        "SELECT * FROM audit_events WHERE kind = 'acknowledged'")
    assert event["actor_id"] == "U0ALICE"


async def test_an_ack_outcome_on_the_last_call_left_on_after_nobody_came_is_still_heard(
    bot_factory: BotFactory,
) -> None:
    """Alice, the only person in the order, answered but had not pressed 1 by her deadline: her
    call is left on, and the channel is told nobody acknowledged. She then presses 1: that is a
    late acknowledgement, announced as loudly as a late I'm on it."""
    bot, _, escalation, alice = await nobody_came_with_alice_still_on(bot_factory)
    assert await state_of(bot) == EscalationState.EXHAUSTED
    await heard_late_once(bot, escalation, alice)


async def test_an_ack_outcome_on_the_last_call_not_hung_up_after_nobody_came_is_still_heard(
    bot_factory: BotFactory,
) -> None:
    """Alice, the only person in the order, didn't answer by her deadline, and hanging her call up
    failed: the channel is told nobody acknowledged, her phone may still ring. She then answers
    and presses 1: a late acknowledgement, announced as loudly as a late I'm on it."""
    bot, clock, escalation = await running_escalation(bot_factory, policy=LEFT_ON_POLICY)
    alice = session_of(bot, ALICE)
    bot.evo.queue("PATCH", f"/sessions/{alice}", ErrorStatus(500, "Internal server error"))
    clock.advance(91)
    await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    bot.evo.set_session_state(alice, callState="Connected", outcome="pressed 1")
    await poll_now(bot)
    late = await wait_for_post(bot, "they are on it")
    assert late.params["reply_broadcast"] in (True, "true", "1")
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged on the call at")
    assert await state_of(bot) == EscalationState.ACKNOWLEDGED
    assert dialled(bot) == [ALICE]


@on_both_databases
async def test_an_ack_outcome_on_the_last_call_left_on_is_still_heard_after_a_restart(
    bot_factory: BotFactory,
) -> None:
    """As above, but the bot restarts after telling the channel nobody acknowledged, with Alice's
    call still on: the next start watches her call, and her pressing 1 is a late acknowledgement
    all the same, announced once."""
    first, clock, escalation, alice = await nobody_came_with_alice_still_on(bot_factory)
    await first.runtime.stop()
    second, _ = await start(bot_factory, policy=LEFT_ON_POLICY, clock=clock)
    await heard_late_once(second, escalation, alice)


async def test_a_call_left_on_after_nobody_came_is_watched_by_one_replica_then_by_the_next(
    bot_factory: BotFactory,
) -> None:
    """Two replicas on one database: the one that ran the chain watches Alice's call left on, the
    other leaves it alone; once the first dies, the other watches it, and her pressing 1 is
    heard, once."""
    first, clock, escalation, alice = await nobody_came_with_alice_still_on(bot_factory)
    second, _ = await start(bot_factory, policy=LEFT_ON_POLICY, clock=clock)
    await services(second).escalations.take_over()  # a lease keeper's round
    assert (services(first).escalations.running, services(second).escalations.running) == (1, 0)
    await first.runtime.stop(grace=0)  # dies: its leases are left lapsed
    await services(second).follower.take_over()  # the next round: Alice's call, followed again
    await services(second).escalations.take_over()
    assert services(second).escalations.running == 1
    await heard_late_once(second, escalation, alice)


async def test_a_late_i_m_on_it_whose_replica_stops_while_another_watches_is_still_told(
    bot_factory: BotFactory,
) -> None:
    """Two replicas on one database. Nobody came, and replica A watches Alice's call left on
    (the chain's lease is A's); Bob's late I'm on it lands on replica B, which waits for A's
    lease to tell it, and B stops (or dies) before A lets go. A's watch, seeing the escalation
    acknowledged, tells the channel and shows the card: it is the only one left that can."""
    first, clock, escalation, _ = await nobody_came_with_alice_still_on(bot_factory)
    second, _ = await start(bot_factory, policy=LEFT_ON_POLICY, clock=clock)
    await click_ack(second, escalation, user_id="U0BOB")
    await second.settle()  # recorded; B waits for the lease A holds to tell it
    assert await state_of(second) == EscalationState.ACKNOWLEDGED
    await second.runtime.stop(grace=0)

    late = await wait_for_post(first, "they are on it")
    assert late.params["reply_broadcast"] in (True, "true", "1")
    await wait_for_edit(first, escalation, "<@U0BOB> acknowledged at")
    await first.settle()
    assert [c.ok for c in first.slack.calls_to("chat.postMessage")
            if "they are on it" in str(c.params.get("text"))] == [True]


async def test_i_m_on_it_by_the_person_who_answered_is_told_it_was_them(
    bot_factory: BotFactory,
) -> None:
    """`ack = "answer"`: Alice picks up, which ends the escalation, and then clicks I'm on it on
    her page (her client hadn't redrawn it): she is told it was her, not about herself as
    someone else."""
    bot, _, escalation = await running_escalation(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    page = as_first_drawn(await page_of(bot, "U0ALICE"))
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected")
    await poll_now(bot)
    await wait_for_state(bot, EscalationState.ANSWERED)
    _, url = await click_ack(bot, page, user_id="U0ALICE")
    [told] = await bot.slack.wait_for_response(url)
    assert told["response_type"] == "ephemeral"
    assert told["text"].startswith("You "), told["text"]
    assert "<@U0ALICE>" not in told["text"]


async def test_with_ack_answer_the_answer_is_in_the_audit_trail_as_an_acknowledgement(
    bot_factory: BotFactory,
) -> None:
    """`ack = "answer"`: the call connecting is the acknowledgement, counted as one (via
    "answer"); the README's audit trail has every acknowledgement as an `acknowledged` event on
    the acknowledging person's call, and `/call history` says so as the card does."""
    bot, _, escalation = await running_escalation(bot_factory, policy=ROSTER + 'ack = "answer"\n')
    bot.evo.set_session_state(session_of(bot, ALICE), callState="Connected")
    await poll_now(bot)
    await wait_for_state(bot, EscalationState.ANSWERED)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — ✅ answered")
    await bot.settle()
    assert 'oncall_acknowledgements_total{via="answer"} 1.0' in metrics_text(bot)
    [record] = await audit_records(bot)
    acknowledged = [e for e in record.events if e.kind == "acknowledged"]
    assert [e.actor_id for e in acknowledged] == ["U0ALICE"], record.events
    [line] = lines(await history(bot, user_id="U0ADMIN"))
    assert "✅ acknowledged by <@U0ALICE>" in line, line
