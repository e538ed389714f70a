"""An escalation's time at its edges: a step ends at answer_timeout exactly; the deadlines kept in
the database are wall-clock times, which another process (a restarted bot, a replica on another
host) can compare with its own clock; a hand-off during an escalation doesn't change its order; a
step whose call's session is still unfound at its deadline looks for it once, to hang it up."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import Behaviour, ErrorStatus, Gated, TooManyRequests
from bot.standins.evovoice.recorded import Recorded
from bot.standins.slack import Message
from tests.conftest import BotFactory, BotUnderTest, until
from tests.escalations import (
    ALICE,
    BOB,
    IN_ALICES_SHIFT,
    MANAGER,
    ROSTER,
    Clock,
    dialled,
    died_dialling_alice,
    end_from_its_message,
    escalation_message,
    hung_up,
    leaping_budget,
    open_on_message,
    picked_up_unseen,
    running_escalation,
    session_of,
    start,
    submit,
    wait_for_edit,
    wait_for_state,
)
from tests.follow_helpers import FAST, services


async def test_the_step_ends_when_answer_timeout_has_passed_exactly(
    bot_factory: BotFactory,
) -> None:
    # answer_timeout = 90 (the default): at 90 s after the dial, not a tick later, Alice has had
    # her time, her phone stops ringing and Bob's starts.
    bot, clock, escalation = await running_escalation(bot_factory)
    clock.advance(90)
    await wait_for_edit(bot, escalation,
                        "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s")
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert hung_up(bot, session_of(bot, ALICE))


async def test_deadlines_are_wall_clock_times(bot_factory: BotFactory) -> None:
    # The escalation service's own clock, not a test's: a deadline kept as a monotonic reading
    # would mean nothing to a bot restarted after a reboot or to a replica on another host, and
    # the card would date the escalation to 1970.
    bot = await bot_factory("http", policy=ROSTER, **FAST)
    services(bot).oncall.clock = lambda: IN_ALICES_SHIFT
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    await bot.evo.wait_for_posts(1)
    await wait_for_state(bot, EscalationState.RUNNING)
    [row] = await services(bot).db.fetchall(
        "SELECT created_at, step_deadline FROM escalations")
    wall = time.time()
    day = 24 * 3600.0
    assert abs(row["created_at"] - wall) < day
    assert row["step_deadline"] is not None and abs(row["step_deadline"] - wall) < day


async def test_a_handoff_during_an_escalation_keeps_the_order_it_started_with(
    bot_factory: BotFactory,
) -> None:
    # Started a minute before Alice hands off to Bob: Alice, Bob, Carol (no number), the manager.
    # Worked out again after the hand-off it would be Bob, Carol, Alice: Alice rung twice.
    handoff = dt.datetime(2026, 3, 16, 13, tzinfo=dt.UTC)
    bot, clock = await start(bot_factory, at=handoff - dt.timedelta(minutes=1))
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    services(bot).oncall.clock = lambda: handoff + dt.timedelta(minutes=1)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    clock.advance(91)
    await bot.evo.wait_for_posts(3)
    assert dialled(bot) == [ALICE, BOB, MANAGER]


@pytest.mark.parametrize(
    "refusal", [TooManyRequests("1"), ErrorStatus(500)], ids=["429", "500"])
async def test_a_call_evo_voice_cant_read_at_the_deadline_is_not_cut_off(
    bot_factory: BotFactory, refusal: Behaviour
) -> None:
    """Alice picks up while the follower's poll is out, and at her deadline Evo Voice can't say
    how her call is (the fresh read refused): she may be listening, so her call is not hung up on
    a guess. The chain moves on, and her step says why her phone was left on. She then presses
    1: that is her acknowledgement, and Bob's phone, still ringing, is hung up."""
    policy = ROSTER + 'ack_outcomes = ["Pressed 1"]\n'
    bot, clock, escalation = await running_escalation(bot_factory, policy=policy)
    leaping_budget(bot)  # the 429's Retry-After takes no real time
    alice = session_of(bot, ALICE)
    poll_answered = await picked_up_unseen(bot, alice)
    bot.evo.queue("GET", f"/sessions/{alice}", refusal)  # the deadline's fresh read
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    poll_answered.set()
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "could not say whether it was answered")
    assert not hung_up(bot, alice)  # she may still be listening
    bot.evo.set_session_state(alice, callState="Connected", outcome="pressed 1")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    assert hung_up(bot, session_of(bot, BOB))
    assert not hung_up(bot, alice)

@pytest.mark.parametrize("state", ["Passive", None], ids=["Passive", "no callState"])
async def test_a_call_whose_state_reads_neither_ringing_nor_answered_is_not_cut_off(
    bot_factory: BotFactory, state: str | None
) -> None:
    """Alice's phone rang, and at her deadline her session reads Passive (a value nothing public
    explains) or without a callState: neither ringing nor answered, so she may be listening, and
    her call is not hung up on a guess. The chain moves on, her step says why her phone was left
    on, and her press 1 then acknowledges."""
    policy = ROSTER + 'ack_outcomes = ["Pressed 1"]\n'
    bot, clock, escalation = await running_escalation(bot_factory, policy=policy)
    alice = session_of(bot, ALICE)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> (+1 814 ••• 3093) — 🔔 ringing…")
    if state is None:
        bot.evo.sessions[alice].pop("callState")
    else:
        bot.evo.set_session_state(alice, callState=state)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    await wait_for_edit(bot, escalation, "could not say whether it was answered")
    assert not hung_up(bot, alice)
    bot.evo.set_session_state(alice, callState="Connected", outcome="pressed 1")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    assert hung_up(bot, session_of(bot, BOB))
    assert not hung_up(bot, alice)


# Alice's step on the card once her deadline passed unanswered (dialled by the bot that died, her
# number is not on it) and her call was hung up.
HUNG_UP = "1. <@U0ALICE> — ❌ no answer after 90 s (hung up)"


def lookups(bot: BotUnderTest) -> list[Recorded]:
    """The looks for a session by its number (`GET /sessions?to=…`), not the polls of known ones."""
    return [r for r in bot.evo.requests_to("GET", "/sessions") if "to" in r.query]


def ended_before_next_dial(bot: BotUnderTest, session_id: str) -> bool:
    """Whether `session_id` was hung up once (EndSession or PatchSession), before the second call
    was dialled."""
    order = [(r.method, r.path) for r in bot.evo.requests
             if r.path in ("/sessions/outgoing", f"/sessions/{session_id}")
             and r.method in ("POST", "DELETE", "PATCH")]
    ends = [i for i, (method, _) in enumerate(order) if method != "POST"]
    dials = [i for i, (method, _) in enumerate(order) if method == "POST"]
    return len(ends) == 1 and len(dials) >= 2 and ends[0] < dials[1]


async def alice_unfound_after_a_restart(
    bot_factory: BotFactory, *then: Behaviour, **env: str
) -> tuple[BotUnderTest, Clock, Message, str, asyncio.Event]:
    """The bot died with Alice's step POST in flight, and Evo Voice placed her call all the same.
    The next start (`env`) follows her call: its look for her session by number is held until the
    test sets the event returned, so at her deadline her call's row has no session. `then`: how
    Evo Voice answers the next requests to `GET /sessions`. The bot, its clock, the card, her
    session."""
    first, clock, alice = await died_dialling_alice(bot_factory)
    held = asyncio.Event()
    first.evo.queue("GET", "/sessions", Gated(held), *then)
    # Held for as long as the test needs: not given up at the tests' usual 2 s and asked again.
    second, _ = await start(bot_factory, clock=clock, **{"EVOVOICE_TIMEOUT": "60", **env})
    escalation = await escalation_message(second)
    await until(lambda: len(lookups(second)) == 1)  # the follower's, held
    return second, clock, escalation, alice, held


async def session_of_row(bot: BotUnderTest) -> str | None:
    row = await services(bot).db.fetchone("SELECT session_id FROM calls ORDER BY id LIMIT 1")
    return None if row is None else row["session_id"]


async def test_a_step_whose_call_is_unfound_at_its_deadline_finds_it_and_hangs_it_up(
    bot_factory: BotFactory,
) -> None:
    """The follower's look for Alice's session is not over at her deadline: her step looks once
    itself, finds her call and hangs it up before Bob is dialled. The follower's look, over at
    last, finds her session taken by that claim, and follows it to its end: not given up on as
    "not found", though it has been looked for longer than CALL_FIND_SECONDS."""
    bot, clock, escalation, alice, held = await alice_unfound_after_a_restart(
        bot_factory, CALL_FIND_SECONDS="0.001")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert ended_before_next_dial(bot, alice)
    await wait_for_edit(bot, escalation, HUNG_UP)
    assert "may still ring" not in (escalation.text or "")
    held.set()
    async with asyncio.timeout(10):
        while (await services(bot).db.fetchone("SELECT state FROM calls ORDER BY id LIMIT 1")
               )["state"] != "ended":
            await asyncio.sleep(0.01)
    assert await session_of_row(bot) == alice
    assert len(bot.evo.hang_ups(alice)) == 1


async def test_a_step_whose_look_for_its_call_fails_at_its_deadline_says_it_may_still_ring(
    bot_factory: BotFactory,
) -> None:
    """At Alice's deadline her call's session is still unfound, and her step's own look for it is
    refused (500): nothing to hang up, so her card says her phone may still ring, and Bob is
    called."""
    bot, clock, escalation, alice, held = await alice_unfound_after_a_restart(
        bot_factory, ErrorStatus(500, "Internal server error"))
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert len(lookups(bot)) == 2  # the follower's (held), the step's (refused)
    await wait_for_edit(bot, escalation, "1. <@U0ALICE> — ❌ no answer after 90 s (Its call could "
                        "not be found in Evo Voice to hang it up; it may still ring.)")
    assert not hung_up(bot, alice)
    held.set()


async def test_a_call_the_follower_claims_while_its_step_looks_is_hung_up_once(
    bot_factory: BotFactory,
) -> None:
    """Alice's step and the follower both look for her call's session at her deadline; the
    follower's look claims it first. The step's finds it taken, reads her call's row again, and
    hangs that session up: once, before Bob is dialled, and tied to her call alone."""
    step_look = asyncio.Event()
    bot, clock, escalation, alice, held = await alice_unfound_after_a_restart(
        bot_factory, Gated(step_look))
    clock.advance(91)
    await until(lambda: len(lookups(bot)) == 2)  # the step's, held too
    held.set()
    async with asyncio.timeout(10):
        while await session_of_row(bot) is None:  # the follower's claim
            await asyncio.sleep(0.01)
    step_look.set()
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]
    assert ended_before_next_dial(bot, alice)
    await wait_for_edit(bot, escalation, HUNG_UP)
    assert "may still ring" not in (escalation.text or "")
    assert await session_of_row(bot) == alice


@pytest.mark.parametrize("ending", ["stop", "ack"])
async def test_a_call_unfound_when_its_escalation_ends_is_looked_for_and_hung_up(
    bot_factory: BotFactory, ending: str,
) -> None:
    """The follower's look for Alice's session is not over when the escalation is stopped, or
    acknowledged by Bob (I'm on it on the escalation's message): the end looks once itself, finds
    her call and hangs it up, rather than leave her phone ringing with "it may still ring"."""
    bot, _, escalation, alice, held = await alice_unfound_after_a_restart(bot_factory)
    await end_from_its_message(bot, escalation, ending, acknowledged_by="U0BOB")
    await until(lambda: hung_up(bot, alice))
    assert len(bot.evo.hang_ups(alice)) == 1
    assert dialled(bot) == [ALICE]
    assert await session_of_row(bot) == alice
    assert "may still ring" not in (escalation.text or "")
    held.set()
