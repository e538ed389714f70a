"""An escalation's first dial never waits on Slack, and Slack's errors stop no step (#15).

The card is posted alongside the first dial: held at a gate in the Slack stand-in, the phone rings
all the same; refused (`not_in_channel`, a 429 asking for more than a minute, a 5xx), every step is
rung in turn and the requester hears, privately, that the escalation goes on and how it ended.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot.oncall import escalation_card
from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus, Gated
from bot.standins.slack import ApiCall, ApiReply, Message
from bot.storage.database import Database
from tests.claim_faults import AnswerLost
from tests.conftest import BotFactory, BotUnderTest, until
from tests.follow_helpers import services
from tests.escalations import (
    Clock,
    NOT_POSTED,
    ALICE,
    BOB,
    CHANNEL,
    MANAGER,
    ROSTER,
    click_ack,
    dialled,
    escalation_message,
    in_the_channel,
    open_on_message,
    page_of,
    session_of,
    start,
    submit,
    wait_for_edit,
    wait_for_state,
)

@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_the_first_dial_leaves_while_the_card_hangs(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, _ = await start(bot_factory, mode)
    view, _ = await open_on_message(bot)
    gate = bot.slack.hold("chat.postMessage", when=in_the_channel)
    assert await submit(bot, view) == {}
    await gate.wait_until_held()
    await bot.evo.wait_for_posts(1)
    # Alice's phone rings, and Slack has not answered the card's post yet.
    assert dialled(bot) == [ALICE]
    assert bot.slack.calls_to("chat.postMessage") == []
    gate.open()
    card = await escalation_message(bot)
    # Posted late, the card is filled in with what happened meanwhile, and the page links to it.
    await wait_for_edit(bot, card, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    page = await page_of(bot, "U0ALICE")
    assert f"archives/C0OPS/p{card.ts.replace('.', '')}" in json.dumps(page.blocks)
    assert len(bot.evo.outgoing_posts) == 1


async def answered_500(call: ApiCall) -> ApiReply | None:
    """Slack failing with an HTTP 500 in the channel (a 5xx); elsewhere, as usual."""
    if in_the_channel(call):
        return ApiReply({"ok": False, "error": "internal_error"}, 500)
    return None


def refuse_the_card(bot: BotUnderTest, error: str) -> None:
    if error == "5xx":
        bot.slack.on("chat.postMessage", answered_500)
    elif error == "ratelimited":
        # Retry-After longer than a post may wait (a minute): not waited out, and no dial waits.
        bot.slack.fail("chat.postMessage", "ratelimited", when=in_the_channel, retry_after=61)
    else:
        bot.slack.fail("chat.postMessage", error, when=in_the_channel)


async def told_privately(bot: BotUnderTest, text: str, timeout: float = 10.0) -> str:
    """What the requester was told privately (the shortcut's response_url, else a DM)."""

    def found() -> str | None:
        said = [str(p.body.get("text")) for p in bot.slack.response_posts
                if p.status == 200 and isinstance(p.body, dict)]
        said += [m.text or "" for m in bot.slack.channel_messages(bot.slack.dm_channel("U0ADMIN"))]
        return next((t for t in said if text in t), None)

    async def wait() -> str:
        while (seen := found()) is None:
            await asyncio.sleep(0.01)
        return seen

    return await asyncio.wait_for(wait(), timeout)


@pytest.mark.parametrize(
    ("error", "mode"),
    [("not_in_channel", "http"), ("not_in_channel", "socket"), ("ratelimited", "http"),
     ("5xx", "http")],
)
async def test_a_card_slack_refuses_still_rings_every_step_and_the_requester_hears_the_end(
    bot_factory: BotFactory, error: str, mode: str
) -> None:
    bot, clock = await start(bot_factory, mode)
    view, _ = await open_on_message(bot)
    refuse_the_card(bot, error)
    assert await submit(bot, view) == {}
    await bot.evo.wait_for_posts(1)
    notice = await told_privately(bot, NOT_POSTED)
    assert "It goes on all the same" in notice
    for n, user in enumerate(["U0ALICE", "U0BOB", "U0MANAGER"]):  # Carol: no number, skipped
        await bot.evo.wait_for_posts(n + 1)
        await page_of(bot, user)  # paged in Slack too: the step's call is placed, its deadline set
        clock.advance(91)  # nobody acknowledges
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    end = await told_privately(bot, "nobody acknowledged.")
    assert end.startswith("🚨 *On-call escalation* by <@U0ADMIN>: nobody acknowledged.")
    assert "4. <@U0MANAGER> (escalate_to) (+1 814 ••• 3090) — ❌ no answer after 90 s" in end
    await bot.settle()
    assert dialled(bot) == [ALICE, BOB, MANAGER]
    assert not [c for c in bot.slack.calls_to("chat.postMessage") if c.ok and in_the_channel(c)]


async def test_a_card_never_posted_is_posted_after_a_restart_and_no_step_is_dialled_twice(
    bot_factory: BotFactory,
) -> None:
    first, clock = await start(bot_factory)
    view, _ = await open_on_message(first)
    refuse_the_card(first, "not_in_channel")
    await submit(first, view)
    await first.evo.wait_for_posts(1)
    await told_privately(first, NOT_POSTED)
    await page_of(first, "U0ALICE")
    await first.runtime.stop(grace=5)

    first.slack.off("chat.postMessage")  # the bot was invited meanwhile
    second, _ = await start(bot_factory, clock=clock)  # the same database
    posted = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and in_the_channel(c), timeout=10.0)
    assert posted.response is not None and "*On-call escalation*" in posted.params["text"]
    card = second.slack.messages[(CHANNEL, posted.response["ts"])]
    await wait_for_edit(second, card, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    clock.advance(91)
    await second.evo.wait_for_posts(2)
    await wait_for_edit(second, card, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    assert dialled(second) == [ALICE, BOB]  # Alice once, Bob once


async def test_without_a_card_i_m_on_it_on_the_page_ends_it_and_the_requester_hears_who(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    refuse_the_card(bot, "not_in_channel")
    await submit(bot, view)
    await told_privately(bot, NOT_POSTED)
    page = await page_of(bot, "U0ALICE")
    assert "|the escalation>" not in str(page.blocks)  # no card to link to
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    end = await told_privately(bot, "<@U0ALICE> acknowledged at")
    assert "1. <@U0ALICE> (+1 814 ••• 3093) — ✅ acknowledged at" in end
    await bot.slack.wait_for_call(  # her page says so too
        "chat.update", lambda c: c.params.get("ts") == page.ts
        and "You acknowledged this page" in str(c.params.get("text")), timeout=10.0)
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE]


async def test_without_a_card_a_requester_who_lost_the_right_hears_why_the_chain_stopped(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n')
    bot.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    view, _ = await open_on_message(bot, user_id="U0SRE")
    refuse_the_card(bot, "not_in_channel")
    assert await submit(bot, view, user_id="U0SRE") == {}
    await told_privately(bot, NOT_POSTED)
    await page_of(bot, "U0ALICE")
    bot.slack.usergroups["S0ONCALL"] = []  # taken out of the group while Alice's phone rings
    services(bot).access.forget_groups()
    clock.advance(91)
    await wait_for_state(bot, EscalationState.FAILED)
    why = await told_privately(bot, "The on-call escalation stopped")
    assert why == ("⚠️ <@U0SRE> The on-call escalation stopped: <@U0SRE> is no longer allowed "
                   "to escalate to on-call.")
    end = await told_privately(bot, "could not go on.")  # and the card, as it ended
    assert "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s" in end
    await bot.settle()
    assert dialled(bot) == [ALICE]


@pytest.mark.usefixtures("database_retried_quickly")  # the claim tried again at once
async def test_without_a_card_an_end_whose_claim_lost_its_answer_is_told_all_the_same(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim on telling the requester the end committed, its answer lost: tried again under
    # its own holder, it is granted, and the requester hears who acknowledged.
    bot, _ = await start(bot_factory)
    claims = services(bot).claims
    fault = AnswerLost(claims, "escalation:1:told:acknowledged")
    monkeypatch.setattr(claims, "claim", fault)
    view, _ = await open_on_message(bot)
    refuse_the_card(bot, "not_in_channel")
    await submit(bot, view)
    await told_privately(bot, NOT_POSTED)
    page = await page_of(bot, "U0ALICE")
    await click_ack(bot, page, user_id="U0ALICE")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await told_privately(bot, "<@U0ALICE> acknowledged at")
    assert fault.lost == ["escalation:1:told:acknowledged"]


async def test_a_page_slack_refuses_is_sent_again_until_it_goes(bot_factory: BotFactory) -> None:
    # Slack refuses Alice's page twice (a bad incident day): it is sent again, once it goes
    # it is the one page she gets, and it is kept current like any page. (A 429 is waited out by
    # the Slack client itself, Retry-After and all: tests/test_slack_faults.py.)
    bot, _ = await start(bot_factory)
    bot.slack.fail("chat.postMessage", "fatal_error", times=2, when=to_alice)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    card = await escalation_message(bot)
    went = await bot.slack.wait_for_call("chat.postMessage", lambda c: to_alice(c) and c.ok)
    assert went.response is not None
    page = bot.slack.messages[(went.response["channel"], went.response["ts"])]
    assert "You are being paged" in (page.text or "")
    await click_ack(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await bot.slack.wait_for_call(  # recorded, her page shows the end
        "chat.update", lambda c: c.params.get("ts") == page.ts
        and "acknowledged" in str(c.params.get("text")), timeout=10.0)
    tries = [c for c in bot.slack.calls_to("chat.postMessage") if to_alice(c)]
    assert [c.ok for c in tries] == [False, False, True]
    assert dialled(bot) == [ALICE]


@pytest.mark.parametrize("grace", [0, 0.2], ids=["died", "stopped"])
async def test_a_page_slack_refused_until_the_bot_stopped_is_sent_by_the_next_start(
    bot_factory: BotFactory, grace: float
) -> None:
    """Slack refuses Alice's page while her phone rings, and the bot stops (a deploy, its grace
    too short for Slack to come back; or it dies). The next start follows her call, and sends her
    the page nobody got: one page, kept current like any page."""
    first, clock, card = await alices_page_refused_until_the_bot_stops(bot_factory, grace)
    second, _ = await start(bot_factory, clock=clock)
    page = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: to_alice(c) and c.ok, timeout=10.0)
    assert page.response is not None
    assert "You are being paged" in str(page.params.get("text"))
    await click_ack(second, card, user_id="U0ADMIN")
    await wait_for_state(second, EscalationState.ACKNOWLEDGED)
    await second.slack.wait_for_call(  # recorded: her page shows the end
        "chat.update", lambda c: c.params.get("ts") == page.response["ts"]  # type: ignore[index]
        and "acknowledged" in str(c.params.get("text")), timeout=10.0)
    await second.settle()
    assert len([c for c in second.slack.calls_to("chat.postMessage")
                if to_alice(c) and c.ok]) == 1
    assert dialled(second) == [ALICE]  # followed, never dialled again


@pytest.mark.parametrize("meanwhile", ["declined", "refused"])
async def test_a_page_sent_by_the_next_start_never_says_a_phone_rings_that_no_longer_does(
    bot_factory: BotFactory, database_url: str, meanwhile: str
) -> None:
    """Slack refuses Alice's page and the bot dies. While it is down her call ends (she declined
    it), or its row says Evo Voice refused it (a bot that dies after the refusal, before her
    step is concluded). The next start sends her page, with I'm on it, but not "your phone is
    ringing too"; Bob, rung next, is told his phone rings."""
    first, clock, _ = await alices_page_refused_until_the_bot_stops(bot_factory, grace=0)
    if meanwhile == "declined":
        first.evo.set_session_state(session_of(first, ALICE), ended=True,
                                    callState="Disconnected", outcome="Busy")
    else:
        await alices_call_refused(database_url)

    second, _ = await start(bot_factory, clock=clock)
    went = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: to_alice(c) and c.ok, timeout=10.0)
    alice = str(went.params.get("text"))
    assert "You are being paged" in alice and "ringing" not in alice
    assert "I'm on it" in str(went.params.get("blocks"))
    await second.evo.wait_for_posts(2)
    assert "Your phone is ringing too" in ((await page_of(second, "U0BOB")).text or "")
    assert dialled(second) == [ALICE, BOB]


@pytest.mark.parametrize("meanwhile", [
    {"ended": True, "callState": "Disconnected", "outcome": "Busy"},  # she declined it
    {"callState": "Connected"},  # she picked up: she is on the call
], ids=["declined", "picked up"])
async def test_a_page_sent_by_the_next_start_asks_evo_voice_whether_its_call_still_rings(
    bot_factory: BotFactory, meanwhile: dict[str, object]
) -> None:
    """Slack refuses Alice's page and the bot dies; while it is down she declines the call, or
    picks up. The next start's follower has not seen that yet (its poll held), so her call's row
    still says ringing: her page, sent by that start, reads the session from Evo Voice and does
    not say her phone is ringing."""
    first, clock, _ = await alices_page_refused_until_the_bot_stops(bot_factory, grace=0)
    first.evo.set_session_state(session_of(first, ALICE), **meanwhile)
    held = asyncio.Event()  # the restarted follower's polls (GET /sessions?specificIds=…)
    first.evo.queue("GET", "/sessions", *[Gated(held)] * 5)
    second, _ = await start(bot_factory, clock=clock)
    went = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: to_alice(c) and c.ok, timeout=10.0)
    held.set()
    alice = str(went.params.get("text"))
    assert "You are being paged" in alice and "ringing" not in alice
    assert "I'm on it" in str(went.params.get("blocks"))


async def test_a_page_sent_by_the_next_start_says_a_phone_still_ringing_rings(
    bot_factory: BotFactory,
) -> None:
    """Slack refuses Alice's page and the bot dies; her phone rings on. The next start sends her
    page, and Evo Voice, asked, shows her call ringing: her page says her phone is ringing too.
    (Pins step_reads.still_ringing's last line: a mutant reading every session as over survived.)"""
    first, clock, _ = await alices_page_refused_until_the_bot_stops(bot_factory, grace=0)
    alice = session_of(first, ALICE)
    reads = len(first.evo.requests_to("GET", f"/sessions/{alice}"))
    second, _ = await start(bot_factory, clock=clock)
    went = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: to_alice(c) and c.ok, timeout=10.0)
    assert "Your phone is ringing too" in str(went.params.get("text"))
    assert len(second.evo.requests_to("GET", f"/sessions/{alice}")) > reads  # Evo Voice asked
    assert dialled(second) == [ALICE]


async def test_a_page_sent_by_the_next_start_says_a_phone_rings_when_evo_voice_cant_say(
    bot_factory: BotFactory,
) -> None:
    """As above, but Evo Voice refuses every read of Alice's session (500): whether her phone
    still rings is unknown, and it may, so her page says it is ringing, as a page on time does."""
    first, clock, _ = await alices_page_refused_until_the_bot_stops(bot_factory, grace=0)
    alice = session_of(first, ALICE)
    reads = len(first.evo.requests_to("GET", f"/sessions/{alice}"))
    first.evo.queue("GET", f"/sessions/{alice}", *[ErrorStatus(500)] * 10)
    second, _ = await start(bot_factory, clock=clock)
    went = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: to_alice(c) and c.ok, timeout=10.0)
    assert "Your phone is ringing too" in str(went.params.get("text"))
    assert len(second.evo.requests_to("GET", f"/sessions/{alice}")) > reads  # Evo Voice asked


async def test_a_late_page_does_not_wait_on_a_slow_evo_voice_to_say_whether_its_call_rings(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next start asks Evo Voice whether Alice's call still rings before sending her page;
    Evo Voice doesn't answer (held): her page goes all the same, saying her phone rings, as a
    page on time does."""
    # The page gives up on the answer after 0.1 s of real time, not the bot's 1 s.
    monkeypatch.setattr(escalation_card, "PHONE_CHECK_SECONDS", 0.1)
    first, clock, _ = await alices_page_refused_until_the_bot_stops(bot_factory, grace=0)
    held = asyncio.Event()  # every read of her session: the restarted follower's, the page's
    first.evo.queue("GET", f"/sessions/{session_of(first, ALICE)}", *[Gated(held)] * 5)
    # Its client would wait a minute for an answer (the tests' bots give up after 2 s).
    second, _ = await start(bot_factory, clock=clock, EVOVOICE_TIMEOUT="60")
    went = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: to_alice(c) and c.ok, timeout=10.0)
    assert "Your phone is ringing too" in str(went.params.get("text"))
    held.set()


async def test_a_step_whose_call_was_refused_as_the_bot_died_says_it_could_not_be_called(
    bot_factory: BotFactory, database_url: str
) -> None:
    """Evo Voice refused Alice's call and the bot died before concluding her step (her call's
    row says so, the step does not; the bot is stopped as in the tests above). The next start
    ends her step with why she was not rung, not as a call she didn't answer, and rings Bob."""
    first, clock, card = await alices_page_refused_until_the_bot_stops(bot_factory, grace=0)
    await alices_call_refused(database_url)
    second, _ = await start(bot_factory, clock=clock)
    await second.evo.wait_for_posts(2)
    await wait_for_edit(second, card, "1. <@U0ALICE> (+1 814 ••• 3093) — ⚠️ couldn't be called: "
                                      "Evo Voice refused the call")
    assert dialled(second) == [ALICE, BOB]


async def alices_call_refused(database_url: str) -> None:
    """Her call's row says Evo Voice refused it, as a bot that died after the refusal, before
    concluding her step, leaves it (the bot is stopped)."""
    db = Database(database_url)
    await db.open()
    try:
        await db.execute("UPDATE calls SET state = 'failed', placement = 'failed', following = 0,"
                         " note = 'Evo Voice refused the call'", ())
    finally:
        await db.close()


def to_alice(call: ApiCall) -> bool:
    return call.params.get("channel") == "U0ALICE"


async def alices_page_refused_until_the_bot_stops(
    bot_factory: BotFactory, grace: float
) -> tuple[BotUnderTest, Clock, Message]:
    """Alice's phone rings; Slack refuses her page until the bot has stopped (given `grace`).
    The stopped bot, its clock, and the escalation's card."""
    first, clock = await start(bot_factory)
    first.slack.fail("chat.postMessage", "fatal_error", when=to_alice)
    view, _ = await open_on_message(first)
    await submit(first, view)
    card = await escalation_message(first)
    await first.evo.wait_for_posts(1)
    await first.slack.wait_for_call("chat.postMessage", lambda c: to_alice(c) and not c.ok)
    await first.runtime.stop(grace=grace)
    first.slack.off("chat.postMessage")
    return first, clock, card


async def test_a_chain_run_again_in_the_same_process_does_not_send_a_page_on_its_way(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The chain's task is dropped (its lease read as another replica's) while Slack holds
    Alice's page, then adopted again: the new run leaves the page to the send still on its way,
    and Alice gets one page."""
    caplog.set_level(logging.INFO, logger="bot.oncall.escalation_card")
    bot, _ = await start(bot_factory)  # the lease keeper's rounds are the test's own below
    gate = bot.slack.hold("chat.postMessage", when=lambda c: c.params.get("channel") == "U0ALICE")
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await gate.wait_until_held()
    db, escalations = services(bot).db, services(bot).escalations
    await db.execute("UPDATE leases SET owner = 'another replica' WHERE kind = 'escalation'")
    await escalations.take_over()  # a lease keeper's round
    await until(lambda: escalations.running == 0)  # dropped
    await db.execute("UPDATE leases SET expires_at = 0 WHERE kind = 'escalation'")  # lapsed
    await escalations.take_over()  # the next round
    # Adopted again: its run has left her page alone, or sent it a second time.
    await until(lambda: gate.waiting > 1 or any(
        "still being sent by an earlier run" in r.getMessage() for r in caplog.records))
    gate.open()
    await page_of(bot, "U0ALICE")
    await bot.settle()
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1


async def test_a_page_recorded_before_a_restart_is_not_sent_again(bot_factory: BotFactory) -> None:
    first, clock = await start(bot_factory)
    view, _ = await open_on_message(first)
    await submit(first, view)
    await page_of(first, "U0ALICE")
    await first.settle()
    await first.runtime.stop(grace=1)
    second, _ = await start(bot_factory, clock=clock)
    card = await escalation_message(second)
    await click_ack(second, card, user_id="U0ADMIN")
    await wait_for_state(second, EscalationState.ACKNOWLEDGED)
    await second.settle()
    assert len([c for c in second.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1


async def test_a_page_delayed_past_its_step_is_still_sent(bot_factory: BotFactory) -> None:
    # Alice's page waits for the card's first try (it links to the card), and Slack holds the
    # card while her step runs out: her page goes all the same, once, when the card is through.
    bot, clock = await start(bot_factory)
    gate = bot.slack.hold("chat.postMessage", when=in_the_channel)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await gate.wait_until_held(1, timeout=20)
    await bot.evo.wait_for_posts(1)  # Alice's phone rings: Slack delays no dial

    async def alices_step_runs_out() -> None:
        # Counted from when her call was placed, which no card edit shows here: time moves on
        # until Bob is dialled (never again once he is, so his step stays his).
        while len(bot.evo.outgoing_posts) < 2:
            clock.advance(91)
            await asyncio.sleep(0.05)

    await asyncio.wait_for(alices_step_runs_out(), 20)
    gate.open()
    alice, bob = [(await page_of(bot, person)).text or "" for person in ("U0ALICE", "U0BOB")]
    assert "You are being paged" in alice and "You are being paged" in bob
    # Hers went once her step was over: it doesn't say her phone rings. Bob's does.
    assert "ringing" not in alice and "Your phone is ringing too" in bob
    await bot.settle()
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1
