"""An escalation step's call hung up at its deadline with PatchSession (``PATCH /sessions/{id}``
``callState=Disconnected``, the way a Manager-only login hangs up), answered 200, and ending
nothing: that PatchSession ends a call is only likely (docs/evovoice-api.md, Hang up), so the
stand-in's ``patch_ends_calls = False`` accepts it and lets the call ring on (with
``patch_writes_fields``, storing the callState sent, as a patch of the record would)."""

from __future__ import annotations

import pytest

from tests.conftest import BotFactory
from bot.oncall.escalation_store import EscalationState
from tests.escalations import (
    ALICE,
    BOB,
    click_stop,
    dialled,
    running_escalation,
    session_of,
    wait_for_edit,
    wait_for_state,
)

HUNG_UP = "1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s (hung up)"
UNENDED = ("(Hanging up that call failed: Evo Voice accepted hanging it up, yet still shows it "
           "going on. It may still ring.)")


@pytest.mark.parametrize("writes_fields", [False, True], ids=["changes-nothing", "stores-field"])
async def test_a_hang_up_answered_200_that_ends_nothing_is_never_told_as_hung_up(
    bot_factory: BotFactory, writes_fields: bool
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    assert bot.evo.roles == ["Manager"]  # no User: hung up with PatchSession
    bot.evo.patch_ends_calls = False
    bot.evo.patch_writes_fields = writes_fields
    alice = session_of(bot, ALICE)
    clock.advance(91)
    await wait_for_edit(bot, escalation,
                        f"1. <@U0ALICE> (+1 814 ••• 3093) — ❌ no answer after 90 s {UNENDED}")
    assert len(bot.evo.requests_to("PATCH", f"/sessions/{alice}")) == 1  # asked once, accepted
    assert not bot.evo.hang_ups(alice) and not bot.evo.sessions[alice].get("ended")  # it rings
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]  # the chain goes on: her phone can't hold Bob's back
    shown = bot.slack.messages[(escalation.channel, escalation.ts)]
    assert HUNG_UP not in str(shown.text)


async def test_a_hang_up_that_ends_the_call_is_still_told_as_hung_up(
    bot_factory: BotFactory,
) -> None:
    bot, clock, escalation = await running_escalation(bot_factory)
    alice = session_of(bot, ALICE)
    clock.advance(91)
    await wait_for_edit(bot, escalation, HUNG_UP)
    assert bot.evo.hang_ups(alice) == ["PATCH"] and bot.evo.sessions[alice].get("ended")
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]


async def test_stop_whose_hang_up_ends_nothing_says_the_phone_may_still_ring(
    bot_factory: BotFactory,
) -> None:
    bot, _, escalation = await running_escalation(bot_factory)
    bot.evo.patch_ends_calls = False
    await click_stop(bot, escalation, user_id="U0ADMIN")
    await wait_for_state(bot, EscalationState.STOPPED)
    await wait_for_edit(bot, escalation,
                        f"1. <@U0ALICE> (+1 814 ••• 3093) — ⏹ stopped while ringing {UNENDED}")
    assert dialled(bot) == [ALICE]
