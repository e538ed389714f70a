"""Stop escalation, or I'm on it by someone else, hangs up a step's call still ringing; one its
person picked up since the follower's last poll is no longer ringing. Its row can be a poll
behind, so the session is read afresh first, as at the step's deadline (README, "Escalating to
on-call"): a call answered is left on (the person may be listening), and the card says it was
answered, not "stopped while ringing" or "called off"."""

from __future__ import annotations

import pytest

from bot.oncall.escalation_store import EscalationState
from tests.conftest import BotFactory
from tests.escalations import (
    ALICE,
    click_ack,
    click_stop,
    hung_up,
    picked_up_unseen,
    running_escalation,
    session_of,
    wait_for_edit,
    wait_for_state,
)

ANSWERED = "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ the call was answered but not acknowledged"


@pytest.mark.parametrize("end", ["stop", "someone else's I'm on it"])
async def test_a_call_picked_up_unseen_by_a_poll_is_not_hung_up_as_ringing(
    bot_factory: BotFactory, end: str
) -> None:
    bot, _, card = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    poll_answered = await picked_up_unseen(bot, alice)  # Alice picks up; the poll is out
    if end == "stop":
        await click_stop(bot, card, user_id="U0ADMIN")
        await wait_for_state(bot, EscalationState.STOPPED)
    else:
        await click_ack(bot, card, user_id="U0BOB")
        await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, card, ANSWERED)
    poll_answered.set()
    await bot.settle()
    assert not hung_up(bot, alice)  # she may be listening
