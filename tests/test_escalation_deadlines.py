"""An escalation's time at its edges: a step ends at answer_timeout exactly; the deadlines kept in
the database are wall-clock times, which another process (a restarted bot, a replica on another
host) can compare with its own clock; a hand-off during an escalation doesn't change its order."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import Behaviour, ErrorStatus, TooManyRequests
from tests.conftest import BotFactory
from tests.escalations import (
    ALICE,
    BOB,
    IN_ALICES_SHIFT,
    MANAGER,
    ROSTER,
    dialled,
    escalation_message,
    hung_up,
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
