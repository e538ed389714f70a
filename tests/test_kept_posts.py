"""Slack posts whose result matters outlive the bot that sent them: a call's status message whose
`ts` was never saved, and an escalation's thread post Slack refused, are sent again after a restart
(bot/slack/outbox.py), and the call's outcome lands in the status message sent again.

The post is held at a gate in the Slack stand-in, the bot is stopped with no grace (its task is
cancelled there, as a SIGKILL would leave it), then Slack takes the post all the same: its answer,
and the `ts`, never reach the bot.

A stopped replica's posts are sent again once it is gone for a lease. Rather than wait that long,
the tests move the stopped bot's rows (its posts, leases and heartbeat) a lease into the past, as
if it had stopped that long ago: the next bot takes them over in its first round, at start-up.
That they are not taken over sooner: test_a_post_slack_may_still_take_is_left_a_lease_before_it_is_
repaired and test_a_post_its_live_replica_still_sends_again_is_not_taken_over."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.calls.store import CallState
from bot.slack.outbox import REDELIVER_FOR_SECONDS
from bot.standins.slack import ApiCall, Message, SlackStandIn
from bot.storage.database import Database
from tests.budget_clock import LeapingClock
from tests.claim_faults import StatementAnswerLost
from tests.conftest import BotFactory, BotUnderTest, until
from tests.databases import on_both_databases
from tests.follow_helpers import (
    FAST,
    FULL,
    MASKED,
    end_session,
    gone_for_a_lease,
    is_thread_reply,
    services,
    status_message,
)
from tests.follow_helpers import wait_for_edit as wait_for_status
from tests.escalations import (
    ALICE,
    ALICE_ONLY,
    BOB,
    MANAGER,
    Clock,
    dialled,
    escalation_message,
    open_on_message,
    start,
    submit,
    wait_for_edit,
)

# Leases of the shortest length allowed: the lease keeper's rounds come every half second.
QUICK = {**FAST, "LEASE_SECONDS": "3"}


async def on_call_bot(bot_factory: BotFactory, clock: Clock) -> BotUnderTest:
    """A bot with the roster, in Alice's shift, its escalations on `clock` (shared by the bots a
    test starts one after the other), with QUICK leases."""
    bot, _ = await start(bot_factory, clock=clock, LEASE_SECONDS=QUICK["LEASE_SECONDS"])
    return bot


async def crash_while_posting_the_status(
    bot_factory: BotFactory, *, replies_first: int = 0,
) -> tuple[BotUnderTest, ApiCall, str]:
    """A call whose status message Slack took from a bot that died before saving its `ts`: that
    bot, the post, and the call's session. `replies_first`: people's replies in the call's thread
    before it."""
    first = await bot_factory("http", **QUICK)
    gate = first.slack.hold("chat.postMessage", when=is_thread_reply)
    await first.command(f"{FULL} escalation")
    await gate.wait_until_held(1, timeout=20)
    [parent] = first.slack.channel_messages("C0OPS")
    for n in range(replies_first):
        first.slack.add_message("C0OPS", f"update {n}", thread_ts=parent.ts)
    await first.runtime.stop(grace=0)  # dies waiting for Slack's answer: the ts is never saved
    gate.open()  # Slack posts the status message all the same
    lost = await first.slack.wait_for_call("chat.postMessage", is_thread_reply)
    assert lost.ok and "Ringing" in str(lost.params.get("text"))
    [session_id] = first.evo.sessions
    return first, lost, session_id


@on_both_databases
async def test_a_status_message_whose_ts_was_lost_in_a_crash_is_found_and_shows_the_outcome(
    bot_factory: BotFactory,
) -> None:
    first, lost, session_id = await crash_while_posting_the_status(bot_factory)
    assert lost.response is not None

    await gone_for_a_lease(first)
    second = await bot_factory("http", **QUICK)  # the same database
    await second.slack.wait_for_call("conversations.replies", lambda c: c.ok, timeout=30)
    status = second.slack.messages[(lost.response["channel"], lost.response["ts"])]
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended", timeout=30)  # the same message, edited
    assert len([c for c in second.slack.calls_to("chat.postMessage") if is_thread_reply(c)]) == 1
    assert len(second.evo.outgoing_posts) == 1  # never dialled again
    assert await services(second).db.fetchall("SELECT id FROM slack_posts") == []


async def test_a_lost_status_message_past_the_first_page_of_its_thread_is_found(
    bot_factory: BotFactory,
) -> None:
    # An incident's thread is busy: the status message Slack took lands after 200 people's
    # replies, past the first page the bot reads; it is found there, not posted a second time.
    first, lost, session_id = await crash_while_posting_the_status(bot_factory, replies_first=200)
    assert lost.response is not None
    await gone_for_a_lease(first)
    second = await bot_factory("http", **QUICK)  # the same database
    await second.slack.wait_for_call(
        "conversations.replies", lambda c: c.ok and not c.response["has_more"], timeout=30)
    status = second.slack.messages[(lost.response["channel"], lost.response["ts"])]
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended", timeout=30)  # the same message, edited
    assert len([c for c in second.slack.calls_to("chat.postMessage") if is_thread_reply(c)]) == 1


async def test_without_the_history_scopes_the_status_message_is_posted_again(
    bot_factory: BotFactory,
) -> None:
    first, lost, session_id = await crash_while_posting_the_status(bot_factory)
    assert first.slack.bot_scopes is not None  # an app installed without them
    first.slack.bot_scopes = [s for s in first.slack.bot_scopes if not s.endswith(":history")]
    await gone_for_a_lease(first)
    second = await bot_factory("http", **QUICK)
    again = (await second.slack.wait_for_calls("chat.postMessage", 2, is_thread_reply,
                                              timeout=30))[1]
    assert again.ok and again.params["thread_ts"] == lost.params["thread_ts"]
    assert again.response is not None
    status = second.slack.messages[(again.response["channel"], again.response["ts"])]
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended", timeout=30)  # the outcome lands
    assert len(second.evo.outgoing_posts) == 1


async def a_status_message_refused_as_the_bot_died(bot_factory: BotFactory) -> str:
    """A call in the private channel G0INCIDENT whose status message Slack refused (an error of
    its own) while its bot died waiting for the answer: the post is kept, for the next start to
    send again. The call's session."""
    first = await bot_factory("http", **QUICK)
    gate = first.slack.hold("chat.postMessage", when=is_thread_reply)
    first.slack.fail("chat.postMessage", "internal_error", times=1, when=is_thread_reply)
    await first.command(f"{FULL} escalation", channel_id="G0INCIDENT")
    await gate.wait_until_held(1, timeout=20)
    await first.runtime.stop(grace=0)
    gate.open()  # refused: Slack never had it
    await first.slack.wait_for_call("chat.postMessage", lambda c: not c.ok and is_thread_reply(c))
    [session_id] = first.evo.sessions
    await gone_for_a_lease(first)
    return session_id


async def test_a_kept_status_message_its_channel_refuses_for_good_is_told_by_dm(
    bot_factory: BotFactory, slack: SlackStandIn,
) -> None:
    # While the bot was down, someone removed it from the private channel: the next start's
    # status message is refused there for good (channel_not_found). Tried again for ten minutes
    # and dropped, the requester would never hear how the call went: they hear it by direct
    # message, with the call's context, at once, as when the first post is refused.
    session_id = await a_status_message_refused_as_the_bot_died(bot_factory)
    slack.channels["G0INCIDENT"] = {"is_private": True, "is_member": False}
    try_again = asyncio.Event()

    async def held(_: float) -> None:
        await try_again.wait()  # a try again waits for the test: none is needed

    second = await bot_factory("http", **QUICK)  # the same database
    services(second).outbox.sleep = held  # before its first lease keeper's round runs
    await slack.wait_for_call(
        "chat.postMessage", lambda c: c["channel"] == "G0INCIDENT" and is_thread_reply(c)
        and c.response is not None and c.response.get("error") == "channel_not_found",
        timeout=30)
    end_session(second, session_id, after_seconds=42, outcome="No answer")
    dm = await slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER", timeout=30)
    assert MASKED in dm["text"] and dm.response is not None
    shown = slack.messages[(dm.response["channel"], dm.response["ts"])]
    await until(lambda: "Ended: No answer" in (shown.text or ""), timeout=30)  # kept current
    await second.settle()
    assert [c["channel"] for c in slack.calls_to("chat.postMessage")].count("U0MANAGER") == 1
    assert await services(second).db.fetchall("SELECT id FROM slack_posts") == []
    assert len(second.evo.outgoing_posts) == 1  # never dialled again


async def test_a_kept_status_message_given_up_on_after_a_restart_is_told_by_dm(
    bot_factory: BotFactory, slack: SlackStandIn,
) -> None:
    # Slack fails the call's thread through the next start's ten minutes of tries too: given up
    # on there, the status message goes to the requester by direct message rather than nowhere.
    session_id = await a_status_message_refused_as_the_bot_died(bot_factory)
    slack.fail("chat.postMessage", "internal_error", when=is_thread_reply)
    skipped = 0.0

    async def sleep(seconds: float) -> None:  # the pauses between tries take no real time
        nonlocal skipped
        skipped += seconds
        await asyncio.sleep(0)

    second = await bot_factory("http", **QUICK)  # the same database
    outbox = services(second).outbox
    outbox.sleep, outbox.clock = sleep, lambda: time.time() + skipped
    dm = await slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER", timeout=30)
    assert MASKED in dm["text"] and dm.response is not None
    assert skipped >= REDELIVER_FOR_SECONDS - 60  # tried again in the thread first
    end_session(second, session_id, after_seconds=42, outcome="No answer")
    shown = slack.messages[(dm.response["channel"], dm.response["ts"])]
    await until(lambda: "Ended: No answer" in (shown.text or ""), timeout=30)  # kept current
    await second.settle()
    assert [c["channel"] for c in slack.calls_to("chat.postMessage")].count("U0MANAGER") == 1
    assert await services(second).db.fetchall("SELECT id FROM slack_posts") == []


@pytest.mark.parametrize("failure", ["ratelimited", "internal_error"])
async def test_a_thread_slack_fails_to_show_for_a_moment_is_read_again_not_posted_twice(
    bot_factory: BotFactory, failure: str,
) -> None:
    # The next bot looks for the lost status message, and Slack fails to show the thread for a
    # moment (rate-limited past the client's own tries, or an error of its own). That says
    # nothing about the message: the thread is read again and the message found there, not a
    # second one posted beside it while the first stays at "Ringing" for good.
    first, lost, session_id = await crash_while_posting_the_status(bot_factory)
    assert lost.response is not None
    first.slack.fail("conversations.replies", failure, times=3, retry_after=0)
    await gone_for_a_lease(first)
    pauses = LeapingClock()  # the pauses after a 429 and between the outbox's tries: none
    second = await bot_factory("http", slack_sleep=pauses.sleep, **QUICK)  # the same database
    services(second).outbox.sleep = pauses.sleep  # before its first lease keeper's round runs
    await second.slack.wait_for_call("conversations.replies", lambda c: c.ok, timeout=30)
    status = second.slack.messages[(lost.response["channel"], lost.response["ts"])]
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended", timeout=30)  # the same message, edited
    await second.settle()
    assert len([c for c in second.slack.calls_to("chat.postMessage") if is_thread_reply(c)]) == 1
    assert await services(second).db.fetchall("SELECT id FROM slack_posts") == []


async def ended_then_taken_over(
    bot_factory: BotFactory, first: BotUnderTest, status: Message
) -> BotUnderTest:
    """`first`'s call ended and shown ended in `status`, `first` stopped, and a lease later a
    second bot on the same database past its first lease keeper's round of the outbox."""
    [session_id] = first.evo.sessions
    end_session(first, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(first, status, "Ended")
    await first.runtime.stop()

    await gone_for_a_lease(first)
    second = await bot_factory("http", **QUICK)  # the same database
    await services(second).outbox.take_over()  # a lease keeper's round, now
    await second.settle()
    return second


async def test_a_delivered_status_message_is_not_posted_again_after_a_restart(
    bot_factory: BotFactory,
) -> None:
    # Slack took the status message and the bot heard it: nothing is left to repair at the next
    # start, even for an app without the history scopes, which can't look for it first.
    first = await bot_factory("http", **QUICK)
    assert first.slack.bot_scopes is not None
    first.slack.bot_scopes = [s for s in first.slack.bot_scopes if not s.endswith(":history")]
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    second = await ended_then_taken_over(bot_factory, first, status)
    assert len([c for c in second.slack.calls_to("chat.postMessage") if is_thread_reply(c)]) == 1


@on_both_databases
async def test_a_status_message_kept_though_its_answer_was_lost_is_not_posted_again(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The row keeping the status message until Slack takes it commits, and its answer is lost
    # (the connection dropped after COMMIT, a PostgreSQL failover): the message is posted all the
    # same, Slack takes it, and it is kept current to the call's end. The row must not outlive
    # it: found after a restart (or by another replica), it would be sent again, a second status
    # message in the thread, left at "Ringing" for good.
    first = await bot_factory("http", **QUICK)
    fault = StatementAnswerLost(services(first).db, "INSERT INTO slack_posts")
    monkeypatch.setattr(services(first).db, "fetchone", fault)
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    assert fault.lost
    second = await ended_then_taken_over(bot_factory, first, status)
    replies = [c.params.get("text") for c in second.slack.calls_to("chat.postMessage")
               if is_thread_reply(c)]
    assert len(replies) == 1, replies


async def test_an_escalation_post_refused_by_slack_is_delivered_after_a_restart(
    bot_factory: BotFactory,
) -> None:
    clock = Clock()

    first = await on_call_bot(bot_factory, clock)
    view, _ = await open_on_message(first)
    await submit(first, view)
    escalation = await escalation_message(first)
    refusing = True

    def loud(c: ApiCall) -> bool:
        return "Nobody acknowledged" in str(c.params.get("text"))

    first.slack.fail("chat.postMessage", "internal_error", when=lambda c: refusing and loud(c))
    steps = [("<@U0ALICE> (+1 814 ••• 3093)", "1. "), ("<@U0BOB> (+1 814 ••• 3094)", "2. "),
             ("<@U0MANAGER> (escalate_to) (+1 814 ••• 3090)", "4. ")]
    for person, place in steps:
        await wait_for_edit(first, escalation, f"{place}{person} — 🔔")
        clock.advance(91)
        await wait_for_edit(first, escalation, f"{place}{person} — ❌ no answer after 90 s")
    assert dialled(first) == [ALICE, BOB, MANAGER]
    await first.slack.wait_for_call("chat.postMessage", lambda c: not c.ok and loud(c))
    await first.runtime.stop()  # restarted while Slack still refuses it
    refusing = False

    await gone_for_a_lease(first)
    second = await on_call_bot(bot_factory, clock)
    delivered = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and loud(c), timeout=30)
    assert delivered.params["reply_broadcast"] in (True, "true", "1")
    assert delivered.params["thread_ts"] == (escalation.thread_ts or escalation.ts)
    await second.settle()
    assert sum(1 for c in second.slack.calls_to("chat.postMessage") if c.ok and loud(c)) == 1
    assert dialled(second) == [ALICE, BOB, MANAGER]  # nobody dialled again


async def test_a_post_refused_past_a_long_restart_is_sent_again_not_given_up_at_once(
    bot_factory: BotFactory,
) -> None:
    # "Nobody acknowledged" is refused until the bot stops, and the next start comes more than
    # REDELIVER_FOR_SECONDS later (a host lost, its pod rescheduled). Slack refuses its first try
    # then too: it is sent again, as a post refused while its bot runs is, not given up on.
    clock = Clock()
    first, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock, **QUICK)
    view, _ = await open_on_message(first)
    await submit(first, view)
    escalation = await escalation_message(first)
    refusing = True

    def loud(c: ApiCall) -> bool:
        return "Nobody acknowledged" in str(c.params.get("text"))

    first.slack.fail("chat.postMessage", "internal_error", when=lambda c: refusing and loud(c))
    await wait_for_edit(first, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔")
    clock.advance(91)
    await first.slack.wait_for_call("chat.postMessage", lambda c: not c.ok and loud(c))
    await first.runtime.stop()
    refusing = False
    first.slack.fail("chat.postMessage", "internal_error", times=1, when=loud)
    db = Database(first.runtime.settings.database_url)
    await db.open()
    try:  # stopped REDELIVER_FOR_SECONDS and more ago
        for table, column in (("slack_posts", "created_at"), ("leases", "expires_at"),
                              ("replicas", "seen_at")):
            await db.execute(f"UPDATE {table} SET {column} = {column} - ?",
                             (REDELIVER_FOR_SECONDS + 60,))
    finally:
        await db.close()

    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock, **QUICK)
    services(second).outbox.sleep = LeapingClock().sleep  # its pauses take no real time
    delivered = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and loud(c), timeout=30)
    assert delivered.params["thread_ts"] == (escalation.thread_ts or escalation.ts)


async def test_a_post_its_live_replica_still_sends_again_is_not_taken_over(
    bot_factory: BotFactory,
) -> None:
    """Slack refused "Nobody acknowledged" for longer than a lease, but its replica is alive and
    still trying: another replica leaves it alone, and it is delivered once."""
    clock = Clock()

    first = await on_call_bot(bot_factory, clock)
    try_again = asyncio.Event()

    async def held(_: float) -> None:
        await try_again.wait()

    services(first).outbox.sleep = held  # its next try waits for the test
    view, _ = await open_on_message(first)
    await submit(first, view)
    escalation = await escalation_message(first)

    def loud(c: ApiCall) -> bool:
        return "Nobody acknowledged" in str(c.params.get("text"))

    first.slack.fail("chat.postMessage", "internal_error", times=1, when=loud)
    for person, place in [("<@U0ALICE> (+1 814 ••• 3093)", "1. "),
                          ("<@U0BOB> (+1 814 ••• 3094)", "2. "),
                          ("<@U0MANAGER> (escalate_to) (+1 814 ••• 3090)", "4. ")]:
        await wait_for_edit(first, escalation, f"{place}{person} — 🔔")
        clock.advance(91)
    await first.slack.wait_for_call("chat.postMessage", lambda c: not c.ok and loud(c))
    # The post has been waiting longer than a lease; its replica's heartbeat is current.
    db = services(first).db
    await db.execute("UPDATE slack_posts SET created_at = created_at - ?",
                     (first.runtime.settings.lease_seconds,))

    second = await on_call_bot(bot_factory, clock)
    await services(second).outbox.take_over()  # a lease keeper's round, now
    await second.settle()
    assert not any(c.ok and loud(c) for c in second.slack.calls_to("chat.postMessage"))
    try_again.set()
    await first.slack.wait_for_call("chat.postMessage", lambda c: c.ok and loud(c))
    await first.settle()
    await second.settle()
    assert sum(1 for c in first.slack.calls_to("chat.postMessage") if c.ok and loud(c)) == 1


async def test_a_post_slack_may_still_take_is_left_a_lease_before_it_is_repaired(
    bot_factory: BotFactory,
) -> None:
    # The bot stopped while Slack had not yet answered its status message, which Slack may still
    # take: the next bot leaves it alone for a lease, then finds it rather than posting another.
    first = await bot_factory("http", **QUICK)
    gate = first.slack.hold("chat.postMessage", when=is_thread_reply)
    await first.command(f"{FULL} escalation")
    await gate.wait_until_held(1, timeout=20)
    await first.runtime.stop(grace=0)
    second = await bot_factory("http", **QUICK)  # the same database
    await services(second).outbox.take_over()  # a lease keeper's round, too soon
    gate.open()  # Slack takes it now
    await second.slack.wait_for_call("chat.postMessage", lambda c: c.ok and is_thread_reply(c))
    db = services(second).db
    await db.execute("UPDATE slack_posts SET created_at = created_at - ?",
                     (second.runtime.settings.lease_seconds,))
    await services(second).outbox.take_over()  # a lease later
    await second.settle()
    # Found by this round, or by the keeper's own, which runs beside the others and may still be
    # reading the thread: either way once.
    async with asyncio.timeout(10):
        while await db.fetchall("SELECT id FROM slack_posts"):
            await asyncio.sleep(0.01)
    assert len([c for c in second.slack.calls_to("chat.postMessage") if is_thread_reply(c)]) == 1


async def test_a_status_message_found_after_its_call_ended_is_edited_to_the_outcome(
    bot_factory: BotFactory,
) -> None:
    # The call ended while the bot was down, and the next start learned it before finding the
    # message Slack took: the message found is edited then, not left at "Ringing".
    first, lost, session_id = await crash_while_posting_the_status(bot_factory)
    assert lost.response is not None
    end_session(first, session_id, after_seconds=20, outcome="Completed")
    await gone_for_a_lease(first)
    reading = first.slack.hold("conversations.replies")  # the thread is read once the call ended
    second = await bot_factory("http", **QUICK)  # the same database
    await reading.wait_until_held(1, timeout=30)
    store = services(second).follower.store

    async def ended() -> None:
        while (call := await store.get(1)) is None or call.state != CallState.ENDED:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(ended(), 30)
    reading.open()
    status = second.slack.messages[(lost.response["channel"], lost.response["ts"])]
    await wait_for_status(second, status, "Ended", timeout=30)


async def test_a_status_message_sent_again_after_its_call_ended_is_edited_to_the_outcome(
    bot_factory: BotFactory,
) -> None:
    # The status message never reached Slack before the bot died; the next start sends it again,
    # Slack refuses it until the call is over, and the message it finally takes (drawn when it
    # was first asked for: "Ringing") is brought up to date at once, not left at "Ringing".
    first = await bot_factory("http", **QUICK)
    gate = first.slack.hold("chat.postMessage", when=is_thread_reply)
    refusing = True
    first.slack.fail("chat.postMessage", "internal_error",
                     when=lambda c: refusing and is_thread_reply(c))
    await first.command(f"{FULL} escalation")
    await gate.wait_until_held(1, timeout=20)
    await first.runtime.stop(grace=0)
    gate.open()  # refused: Slack never had it
    [parent] = first.slack.channel_messages("C0OPS")
    [session_id] = first.evo.sessions

    await gone_for_a_lease(first)
    second = await bot_factory("http", **QUICK)  # the same database
    await second.slack.wait_for_call("conversations.replies", lambda c: c.ok, timeout=30)
    try_again = asyncio.Event()

    async def held(_: float) -> None:
        await try_again.wait()

    services(second).outbox.sleep = held  # its next try waits for the test
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await second.slack.wait_for_call(
        "reactions.add", lambda c: c.params.get("timestamp") == parent.ts, timeout=30)
    refusing = False
    try_again.set()
    sent = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and is_thread_reply(c), timeout=30)
    assert sent.response is not None and "Ringing" in str(sent.params.get("text"))
    status = second.slack.messages[(sent.response["channel"], sent.response["ts"])]
    await wait_for_status(second, status, "Ended", timeout=30)
    assert len(second.evo.outgoing_posts) == 1


@on_both_databases
async def test_nobody_acknowledged_claimed_as_the_bot_died_is_broadcast_after_a_restart(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alice alone, and she doesn't answer: the bot takes the claim on telling the end and dies
    right after it commits (held there, stopped with no grace, as a SIGKILL would leave it). The
    next start still broadcasts "Nobody acknowledged", once."""
    clock = Clock()
    first, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock,
                           LEASE_SECONDS=QUICK["LEASE_SECONDS"])
    claims = services(first).claims
    real_claim, committed = claims.claim, asyncio.Event()

    async def claim_then_die(key: str, **kwargs: Any) -> bool:
        taken = await real_claim(key, **kwargs)
        if key == "escalation:1:end":
            committed.set()
            await asyncio.Event().wait()  # the bot dies here, its claim committed
        return taken

    monkeypatch.setattr(claims, "claim", claim_then_die)
    view, _ = await open_on_message(first)
    await submit(first, view)
    escalation = await escalation_message(first)
    await wait_for_edit(first, escalation, "🔔")
    clock.advance(91)  # nobody answered
    await asyncio.wait_for(committed.wait(), 10.0)
    await first.runtime.stop(grace=0)

    await gone_for_a_lease(first)
    second = await on_call_bot(bot_factory, clock)
    delivered = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and "Nobody acknowledged" in str(c.params.get("text")),
        timeout=10)
    assert delivered.params["thread_ts"] == (escalation.thread_ts or escalation.ts)
    await services(second).outbox.take_over()  # another lease keeper's round: nothing more
    await second.settle()
    assert [c.ok for c in second.slack.calls_to("chat.postMessage")
            if "Nobody acknowledged" in str(c.params.get("text"))] == [True]


async def test_an_escalation_whose_channel_refuses_its_posts_for_good_tells_its_end_privately(
    bot_factory: BotFactory, slack: SlackStandIn,
) -> None:
    """Nobody came, and Slack refused both "Nobody acknowledged" and the card's end until the
    bot stopped; meanwhile the bot was removed from the (private) channel. The next start can
    post neither there, ever: the requester hears how the escalation ended privately, once."""
    clock = Clock()
    first, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock, **QUICK)
    view, _ = await open_on_message(first)
    await submit(first, view)
    escalation = await escalation_message(first)
    refusing = True

    def nobody(c: ApiCall) -> bool:
        return refusing and "obody acknowledged" in str(c.params.get("text"))

    slack.fail("chat.postMessage", "internal_error", when=nobody)
    slack.fail("chat.update", "internal_error", when=nobody)
    await wait_for_edit(first, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔")
    clock.advance(91)
    await slack.wait_for_call("chat.postMessage", lambda c: not c.ok and nobody(c))
    await slack.wait_for_call("chat.update", lambda c: not c.ok and nobody(c))
    await first.runtime.stop()
    refusing = False
    slack.channels[escalation.channel] = {"is_private": True, "is_member": False}

    await gone_for_a_lease(first)
    second, _ = await start(bot_factory, policy=ALICE_ONLY, clock=clock, **QUICK)
    dm = await slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0ADMIN"
        and "nobody acknowledged." in str(c["text"]), timeout=30)
    assert "Alice" in str(dm["text"]) or "U0ALICE" in str(dm["text"])
    await services(second).outbox.take_over()  # another lease keeper's round: nothing more
    await second.settle()
    assert [c["channel"] for c in slack.calls_to("chat.postMessage")].count("U0ADMIN") == 1
    assert await services(second).db.fetchall("SELECT id FROM slack_posts") == []
