"""A call's end is read once more before it is told, unless it already says the call was
acknowledged: when a flow writes its outcome is unknown (README, "Acknowledging on the phone"),
so a "press 1" may land a moment after the session reads over, over an outcome the flow wrote
earlier in the call, and the read that would bring it may fail. Read as "not acknowledged", the
next person's phone would ring while the first is on it, and their acknowledgement be lost."""

from __future__ import annotations

import asyncio

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus, Gated, Respond
from tests.conftest import QUICK_VOICE_RETRY, BotFactory, BotUnderTest, until
from tests.escalations import (
    ALICE,
    WITH_OUTCOMES,
    acknowledged_on_the_call_alone,
    alice_on_the_phone,
    dialled,
    picked_up_unseen,
    running_escalation,
    session_of,
    wait_for_edit,
    wait_for_state,
)
from tests.follow_helpers import audit_records, end_session, placed_call, poll_now, texts
from tests.follow_helpers import wait_for_edit as wait_for_status



async def read_over(bot: BotUnderTest, session_id: str, *then: object) -> None:
    """The session reads over (Disconnected, its outcome as the flow last wrote it) on the next
    poll; the listing after that answers with `then` (held, or failing)."""
    bot.evo.queue("GET", "/sessions", Respond(), *then)  # type: ignore[arg-type]
    seen = len(bot.evo.reads_of(session_id))
    bot.evo.set_session_state(session_id, callState="Disconnected", ended=True,
                              dateCompleted="0001-01-01T00:00:00")
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(session_id)) > seen)  # the end read


async def test_a_press_1_written_after_the_end_over_an_earlier_outcome_acknowledges(
    bot_factory: BotFactory,
) -> None:
    # Alice's flow wrote "Answered" as it picked up; she presses 1 and hangs up, and the session
    # reads over a poll before "Acknowledged" replaces it. Read as a voicemail, Bob was rung.
    bot, _, escalation, alice = await alice_on_the_phone(bot_factory, outcome="Answered")
    gate = asyncio.Event()
    await read_over(bot, alice, Gated(gate))
    bot.evo.set_session_state(alice, outcome="Acknowledged")
    await poll_now(bot)
    gate.set()
    await acknowledged_on_the_call_alone(bot, escalation)


async def test_a_call_s_status_tells_the_outcome_written_after_the_end_not_the_earlier_one(
    bot_factory: BotFactory,
) -> None:
    # A team reads "Ended: <outcome>" to fill in ack_outcomes: the word its flow wrote last.
    bot, status, session_id = await placed_call(bot_factory)
    bot.evo.set_session_state(session_id, callState="Connected", outcome="Answered")
    await poll_now(bot)
    await wait_for_status(bot, status, "🟢 Connected")
    gate = asyncio.Event()
    await read_over(bot, session_id, Gated(gate))
    end_session(bot, session_id, after_seconds=30, outcome="Pressed 1")
    await poll_now(bot)
    gate.set()
    await wait_for_status(bot, status, "Ended")
    await bot.settle()
    assert "Ended: Pressed 1" in texts(status)[-1]


@pytest.mark.parametrize("status", [500, 503])
async def test_a_press_1_is_not_lost_to_a_failed_read_after_the_end(
    bot_factory: BotFactory, status: int
) -> None:
    # The session reads over without an outcome; the read that would bring Alice's "press 1"
    # fails (the listing, then the session read alone). That says nothing of her outcome: it is
    # read again, not taken for "not acknowledged" (which rang Bob and lost her acknowledgement).
    # A 503 is tried again once by the client, after a pause that is no business of this test's.
    bot, _, escalation, alice = await alice_on_the_phone(bot_factory, env=QUICK_VOICE_RETRY)
    tries = 1 if status == 500 else 2
    failing = [ErrorStatus(status, "Service unavailable")] * tries
    bot.evo.queue("GET", f"/sessions/{alice}", *failing)
    gate = asyncio.Event()
    await read_over(bot, alice, Gated(gate, failing[0]), *failing[1:])
    ended = len(bot.evo.reads_of(alice))
    await poll_now(bot)
    await until(lambda: len(bot.evo.reads_of(alice)) > ended)  # the read after the end, held
    bot.evo.set_session_state(alice, outcome="Acknowledged")
    gate.set()
    await until(lambda: len(bot.evo.requests_to("GET", f"/sessions/{alice}")) == tries)
    await poll_now(bot)
    await acknowledged_on_the_call_alone(bot, escalation)


async def test_a_press_1_written_just_after_the_deadline_s_read_of_the_end_rings_nobody_else(
    bot_factory: BotFactory,
) -> None:
    # Alice listens, presses 1 and hangs up as her deadline comes; the follower's poll is out.
    # The deadline's fresh read finds her session over, its outcome not written yet: read as
    # "answered but not acknowledged", Bob was rung (and paged) until her "press 1" was seen.
    bot, clock, escalation, alice = await alice_on_the_phone(bot_factory)
    second_read = asyncio.Event()
    bot.evo.queue("GET", f"/sessions/{alice}", Respond(), Gated(second_read))
    poll_answered = await picked_up_unseen(bot, alice, callState="Disconnected", ended=True)
    clock.advance(91)
    await until(lambda: len(bot.evo.requests_to("GET", f"/sessions/{alice}")) == 2
                or len(bot.evo.outgoing_posts) == 2)
    bot.evo.set_session_state(alice, outcome="Acknowledged")
    second_read.set()
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged on the call at")
    poll_answered.set()
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await bot.settle()
    assert dialled(bot) == [ALICE]


async def test_an_acknowledgement_seen_only_by_the_deadlines_read_is_audited_with_its_outcome(
    bot_factory: BotFactory,
) -> None:
    # Alice presses 1 while the follower's poll is out: only the deadline's fresh read sees her
    # outcome. The audit trail said "(call outcome None)", reading her call's row, which lagged.
    bot, clock, escalation = await running_escalation(bot_factory, policy=WITH_OUTCOMES)
    alice = session_of(bot, ALICE)
    poll_answered = await picked_up_unseen(bot, alice, outcome="Pressed 1")
    clock.advance(91)
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)

    async def acknowledged() -> list[str | None]:
        while not (reasons := [e.reason for r in await audit_records(bot) for e in r.events
                               if e.kind == "acknowledged"]):
            await asyncio.sleep(0.01)
        return reasons

    assert await asyncio.wait_for(acknowledged(), 5) == [
        "escalation 1 acknowledged by U0ALICE (call outcome 'Pressed 1')"]
    poll_answered.set()
    assert dialled(bot) == [ALICE]
