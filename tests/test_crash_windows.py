"""The bot stopped (crashed, or past its shutdown grace) in the middle of dialling: Evo Voice got
the POST, the bot never recorded its answer. The next start finds the call instead of forgetting it.

The POST is held at a gate in the Evo Voice stand-in, the bot is stopped with a grace too short to
wait for it (its task is cancelled there, as a SIGKILL would leave it), then Evo Voice places the
call. Nothing here waits on a timing guess.
"""

from __future__ import annotations

import asyncio
import logging
import json

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus, Gated
from bot.standins.slack import Message
from bot.storage.database import Database
from tests.budget_clock import LeapingClock
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import (
    FAST,
    FULL,
    announced,
    audit_records,
    died_while_dialling,
    buttons,
    come_back,
    died_before_telling,
    end_session,
    is_thread_reply,
    parent_of,
    services,
    stall,
    status_message,
    wait_for_mark,
)
from tests.follow_helpers import wait_for_edit as wait_for_status
from tests.metrics_scrape import scrape, value
from tests.escalations import (
    ALICE,
    BOB,
    alices_post_held,
    ROSTER,
    Clock,
    dialled,
    died_dialling_alice,
    escalation_message,
    session_of,
    start,
    wait_for_edit,
    wait_for_state,
)


async def not_in_the_channel(bot_factory: BotFactory) -> BotUnderTest:
    """A bot (HTTP mode, following FAST) that can't post in the private channel G0PRIV."""
    first = await bot_factory("http", **FAST)
    first.slack.fail("chat.postMessage", "channel_not_found",
                     when=lambda c: c["channel"] == "G0PRIV")
    return first


async def test_a_call_dialled_as_the_bot_died_is_found_followed_and_reported(
    bot_factory: BotFactory,
) -> None:
    first = await bot_factory("http", **FAST)
    session_id = await died_while_dialling(first)

    second = await bot_factory("http", **FAST)  # the same database
    assert services(second).follower.following == 1
    status = await announced(second)
    await wait_for_status(second, status, session_id)  # found in Evo Voice, and followed
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended")
    assert len(second.evo.outgoing_posts) == 1  # never dialled again
    # The parent the next start posted for it tells the channel how it went, as any call's does.
    parent = parent_of(second, status)
    assert await wait_for_mark(second, parent) == "x"
    assert (parent.text or "").endswith("❌ Not answered.")


async def test_a_call_dialled_as_the_bot_died_long_before_is_not_told_unplaced_on_a_failed_look(
    bot_factory: BotFactory,
) -> None:
    # The next start comes long after (a host lost, its pod rescheduled minutes later: more than
    # CALL_FIND_SECONDS since the attempt), and Evo Voice fails its first look for the call (a
    # 5xx). That is no sign the call was not placed: it rang. The call is looked for again, found,
    # and followed, never shown as "most likely not placed".
    first = await bot_factory("http", **FAST)
    session_id = await died_while_dialling(first)
    db = Database(first.runtime.settings.database_url)
    await db.open()
    try:  # the attempt was made ten minutes before the next start
        await db.execute("UPDATE calls SET created_at = created_at - 600")
    finally:
        await db.close()
    first.evo.queue("GET", "/sessions", *[ErrorStatus(500)] * 3)

    second = await bot_factory("http", **FAST)  # the same database
    status = await announced(second)
    await wait_for_status(second, status, session_id)  # found in Evo Voice, and followed
    assert "not placed" not in (status.text or "")
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended")
    assert not [v for v in status.versions if "not placed" in json.dumps(v)]


async def test_a_found_call_s_status_slack_refused_at_first_is_posted_again_and_followed(
    bot_factory: BotFactory,
) -> None:
    # The next start finds the call, and Slack refuses the status message it posts about it (a
    # 5xx, three times): the message is kept and sent again, and it is the one edited as the call
    # goes on.
    first = await bot_factory("http", **FAST)
    session_id = await died_while_dialling(first)
    first.slack.fail("chat.postMessage", "internal_error", times=3,
                     when=lambda c: "restarted while placing" in str(c.params.get("text")))

    second = await bot_factory("http", **FAST)  # the same database
    services(second).outbox.sleep = LeapingClock().sleep  # its pauses take no real time
    status = await announced(second)
    await wait_for_status(second, status, session_id)  # found in Evo Voice, and followed
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended")
    refused = [c for c in second.slack.calls_to("chat.postMessage")
               if "restarted while placing" in str(c.params.get("text"))]
    assert [c.ok for c in refused] == [False, False, False, True]


async def test_a_call_dialled_as_the_bot_died_in_a_channel_it_can_t_post_in_is_followed_by_dm(
    bot_factory: BotFactory,
) -> None:
    # The next start has no response URL for it: the requester is told by direct message, and
    # that message (not one in the channel) is edited as the call goes on.
    first = await not_in_the_channel(bot_factory)
    session_id = await died_while_dialling(first, channel_id="G0PRIV")

    second = await bot_factory("http", **FAST)  # the same database
    status = await announced(second)
    assert status.channel == second.slack.dm_channel("U0MANAGER")
    await wait_for_status(second, status, session_id)  # found in Evo Voice, and followed
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended")
    assert "Ended" in (status.text or "")  # the edit Slack took, in the direct message
    parent = parent_of(second, status)
    assert await wait_for_mark(second, parent) == "x"
    assert (parent.text or "").endswith("❌ Not answered.")


async def test_an_escalation_step_dialled_as_the_bot_died_is_ended_before_the_next_person(
    bot_factory: BotFactory,
) -> None:
    _, clock, alice = await died_dialling_alice(bot_factory)

    second, _ = await start(bot_factory, clock=clock)
    # Alice's call is found and followed: nobody else is dialled while it may ring. Told by the
    # card alone: a step's call posts nothing of its own (no status message with Hang up and
    # Call again, in the thread or in the channel).
    escalation = await escalation_message(second)
    await wait_for_edit(second, escalation, "<@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    assert dialled(second) == [ALICE]
    assert not [c for c in second.slack.calls_to("chat.postMessage")
                if "restarted while placing" in str(c.params)]
    clock.advance(91)  # her step's deadline passes unanswered
    await second.evo.wait_for_posts(2, timeout=20)
    assert dialled(second) == [ALICE, BOB]
    # Her phone stopped (EndSession or PatchSession, whichever the login may use) before Bob's rang.
    order = [(r.method, r.path) for r in second.evo.requests
             if r.method in ("POST", "DELETE", "PATCH")]
    hang_up = next(i for i, (method, path) in enumerate(order)
                   if method in ("DELETE", "PATCH") and path == f"/sessions/{alice}")
    assert order[0] == ("POST", "/sessions/outgoing") and hang_up < order.index(
        ("POST", "/sessions/outgoing"), 1)
    assert "may have rung" not in (escalation.text or "")


async def stalled_with_its_post_out(
    bot_factory: BotFactory,
) -> tuple[BotUnderTest, BotUnderTest, asyncio.Event, Message]:
    """Replica A's POST on its way (held by the gate returned) when A stalls; replica B, on the
    same database, takes the call over and tells it under A's parent ("restarted while placing"):
    A, B, the gate, B's status message."""
    a = await bot_factory("http", LEASE_SECONDS="3", **FAST)
    gate = asyncio.Event()
    a.evo.queue_outgoing(Gated(gate))
    await a.command(f"{FULL} escalation")
    await a.evo.wait_for_posts(1)
    db = services(a).db
    while (await db.fetchone("SELECT parent_posted_ts FROM calls"))["parent_posted_ts"] is None:
        await asyncio.sleep(0.01)
    await stall(a)
    b = await bot_factory("http", LEASE_SECONDS="3", **FAST)  # the same database
    return a, b, gate, await announced(b)


async def test_a_call_whose_replica_stalled_while_dialling_is_told_once_by_the_one_that_took_it(
    bot_factory: BotFactory,
) -> None:
    # Replica A's POST is on its way when A stalls (a paused VM, or cut off from its database for
    # longer than its lease): B takes the call for one left behind, tells it under A's parent
    # ("restarted while placing") and follows it. Then A comes back with Evo Voice's answer: the
    # call is B's by then. A posts no second status message, follows nothing, and leaves B's row
    # as it is; B's message shows the call to its end.
    a, b, gate, status = await stalled_with_its_post_out(bot_factory)
    gate.set()  # A comes back: Evo Voice answers its POST
    await a.settle()
    [session_id] = a.evo.sessions
    await wait_for_status(b, status, session_id)  # found by B, and followed
    end_session(b, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(b, status, "Ended")
    replies = [c.params["text"] for c in b.slack.calls_to("chat.postMessage")
               if is_thread_reply(c)]
    assert len(replies) == 1 and "restarted while placing" in replies[0], replies
    assert services(a).follower.following == 0
    row = await services(a).db.fetchone("SELECT status_ts, session_id, state FROM calls")
    assert (row["status_ts"], row["session_id"], row["state"]) == (status.ts, session_id, "ended")
    assert len(b.evo.outgoing_posts) == 1


async def test_a_step_s_call_whose_dial_a_stalled_replica_let_go_of_is_followed_all_the_same(
    bot_factory: BotFactory,
) -> None:
    # Replica A stalls with Alice's POST on its way. Its chain's lease lapses first (renewed at
    # its keeper's last round; the call's lease was written with the call's row, just before the
    # POST), and B takes the chain over: it waits on Alice's call, recorded before the POST. Then
    # A comes back before B's next round would find the call's lease lapsed too: A's keeper
    # renews that lease, and lets the chain go (B has it), cancelling the dial still waiting for
    # Evo Voice's answer. The call rang all the same, and Alice presses 1: someone must follow
    # her call, or her acknowledgement is never seen and Bob is rung.
    a, clock, gate = await alices_post_held(bot_factory, policy=WITH_OUTCOMES, LEASE_SECONDS="30")
    leases = services(a).leases
    await leases.stop()  # A stalls: its chain's lease lapses, its call's not yet
    await services(a).db.execute(
        "UPDATE leases SET expires_at = 0 WHERE owner = ? AND kind = 'escalation'",
        (leases.owner,))

    b, _ = await start(bot_factory, policy=WITH_OUTCOMES, clock=clock, LEASE_SECONDS="30")
    assert services(b).escalations.running == 1  # B drives the chain now
    come_back(a)
    while services(a).escalations.running:  # A let the chain go, its dial cancelled
        await asyncio.sleep(0.01)
    gate.set()  # Evo Voice places Alice's call all the same
    while not a.evo.sessions:
        await asyncio.sleep(0.01)
    alice = session_of(a, ALICE)
    a.evo.set_session_state(alice, callState="Connected", outcome="Acknowledged")
    services(a).leases.wake()
    services(b).leases.wake()
    await wait_for_state(b, EscalationState.ACKNOWLEDGED)
    clock.advance(91)
    await b.settle()
    assert dialled(b) == [ALICE]


async def test_a_step_s_call_answered_after_another_replica_took_it_over_is_left_to_that_one(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    """Replica A stalls with Alice's POST on its way, past every lease: B takes the chain and the
    call over. Then Evo Voice answers A's POST (her call rings) and A comes back. A counts her
    call, and goes no further: no second page to Alice, no error in the thread nor in its log;
    B follows her call, sees her acknowledge it, and Bob is never rung."""
    a, clock, gate = await alices_post_held(bot_factory, policy=WITH_OUTCOMES, LEASE_SECONDS="30")
    await stall(a)

    b, _ = await start(bot_factory, policy=WITH_OUTCOMES, clock=clock, LEASE_SECONDS="30")
    assert services(b).escalations.running == 1  # B drives the chain now
    db = services(a).db
    async with asyncio.timeout(10):
        while (await db.fetchone("SELECT placement FROM calls"))["placement"] == "dialling":
            await asyncio.sleep(0.01)  # B took Alice's call for one left behind
    posted_by_a = len(a.slack.calls)
    gate.set()  # Evo Voice answers A's POST: A records it, the call B's
    async with asyncio.timeout(10):
        while (await audit_records(a))[0].result is None:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # A's step goes on from its answer
    come_back(a)
    async with asyncio.timeout(10):
        while services(a).escalations.running:
            await asyncio.sleep(0.01)
    await a.settle()
    alice = session_of(a, ALICE)
    a.evo.set_session_state(alice, callState="Connected", outcome="Acknowledged")
    services(b).leases.wake()
    await wait_for_state(b, EscalationState.ACKNOWLEDGED)
    clock.advance(91)
    await b.settle()
    assert dialled(b) == [ALICE]
    said = [str(c.params.get("text")) for c in a.slack.calls[posted_by_a:]
            if c.method == "chat.postMessage"]
    assert not [t for t in said if "reference" in t or "went wrong" in t], said
    assert len([t for t in said if "You are being paged" in t]) == 1, said
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    # Alice's call rang: the replica that placed it counts it.
    assert value(await scrape(a), "callbot_calls_total", outcome="placed") == 1


WITH_OUTCOMES = ROSTER + 'ack_outcomes = ["Acknowledged"]\n'


__all__ = ["Clock"]


async def test_a_call_placed_as_the_bot_died_before_its_status_was_posted_gets_one(
    bot_factory: BotFactory,
) -> None:
    # The row says "placed, being followed" and no status message was ever posted: the next start
    # follows the call and posts its status under the parent the first one posted, with its
    # buttons, and keeps it current; never a parent with no news under it until the end.
    first = await bot_factory("http", **FAST)
    session_id = await died_before_telling(first)
    assert session_id is not None
    [parent_post] = first.slack.calls_to("chat.postMessage")
    assert parent_post.response is not None

    second = await bot_factory("http", **FAST)  # the same database
    status = await status_message(second)
    assert status.thread_ts == parent_post.response["ts"]
    assert "hang_up" in " ".join(buttons(status))
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended")
    assert len(second.evo.outgoing_posts) == 1  # never dialled again
    assert await wait_for_mark(second, parent_of(second, status)) == "x"


async def test_a_call_placed_as_the_bot_died_before_its_relay_began_is_told_by_dm(
    bot_factory: BotFactory,
) -> None:
    # In a channel the bot can't post in, the call was told through the command's response_url,
    # which lived in the first process alone: the next start tells the requester by direct
    # message, and keeps that message current.
    first = await not_in_the_channel(bot_factory)
    session_id = await died_before_telling(first, channel_id="G0PRIV")
    assert session_id is not None

    second = await bot_factory("http", **FAST)  # the same database
    status = await status_message(second)
    assert status.channel == second.slack.dm_channel("U0MANAGER")
    end_session(second, session_id, after_seconds=20, outcome="Completed")
    await wait_for_status(second, status, "Ended")
    assert "Ended" in (status.text or "")


async def test_a_call_evo_voice_refused_as_the_bot_died_before_telling_is_told_why(
    bot_factory: BotFactory,
) -> None:
    # Nothing rang, and the requester, shown only "is calling …", would think a page went out:
    # the next start tells them why it wasn't placed, and the parent says so.
    first = await bot_factory("http", **FAST)
    first.evo.queue_outgoing(ErrorStatus(400, "Flow is not published"))
    assert await died_before_telling(first) is None

    second = await bot_factory("http", **FAST)  # the same database
    status = await status_message(second)
    assert "Flow is not published" in (status.text or "")
    parent = parent_of(second, status)
    assert await wait_for_mark(second, parent) == "x"
    assert "not placed" in (parent.text or "").lower()
    assert len(second.evo.outgoing_posts) == 1  # the refused one: the next start dials nothing


async def test_a_call_taken_over_while_its_replica_stalled_is_recorded_and_counted_as_placed(
    bot_factory: BotFactory,
) -> None:
    """A replica that stalls with its POST on its way, and comes back with Evo Voice's answer once
    another replica took the call over, still writes that answer where operators read it: the
    attempt in /call history is "placed" with its session, and `callbot_calls_total` counts it
    once (the call rang; neither may say it was never finished)."""
    a, b, gate, _ = await stalled_with_its_post_out(bot_factory)
    gate.set()  # A comes back: Evo Voice answers its POST, the call B's by then
    await a.settle()
    [session_id] = a.evo.sessions
    [record] = await audit_records(a)
    assert record.result is not None
    assert (record.result.kind, record.result.session_id) == ("placed", session_id)
    samples = await scrape(a)
    assert value(samples, "callbot_calls_total", outcome="placed") == 1
    assert len(a.evo.outgoing_posts) == 1
