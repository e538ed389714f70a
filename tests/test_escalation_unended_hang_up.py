"""An escalation step's call hung up at its deadline with PatchSession (``PATCH /sessions/{id}``
``callState=Disconnected``, the way a Manager-only login hangs up), answered 200, and ending
nothing: that PatchSession ends a call is only likely (docs/evovoice-api.md, Hang up), so the
stand-in's ``patch_ends_calls = False`` accepts it and lets the call ring on (with
``patch_writes_fields``, storing the callState sent, as a patch of the record would)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import BotFactory
from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice.recorded import reads
from tests.follow_helpers import audit_records, poll_now, services
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


async def test_a_step_s_call_its_patch_only_wrote_disconnected_to_is_followed_until_it_ends(
    bot_factory: BotFactory,
) -> None:
    # The session then reads Disconnected, what the chain's own PatchSession sent: no news, as
    # after a /call's Hang up. Read as the end, her call's row and the trail said "ended" while
    # her phone rang, and nothing followed it any more (a "press 1" of hers went unseen).
    bot, clock, escalation = await running_escalation(bot_factory)
    bot.evo.patch_ends_calls = False
    bot.evo.patch_writes_fields = True
    alice = session_of(bot, ALICE)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    [patch] = bot.evo.requests_to("PATCH", f"/sessions/{alice}")
    db = services(bot).db

    async def row() -> dict[str, object]:
        found = await db.fetchone("SELECT id, state, following FROM calls WHERE session_id = ?",
                                  (alice,))
        assert found is not None
        return dict(found)

    def polls_since_patch() -> int:  # the follower's (the chain's own reads are by id)
        return len([r for r in bot.evo.requests
                    if r.time > patch.time and r.path == "/sessions" and reads(r, alice)])

    async with asyncio.timeout(10):  # two polls read her session Disconnected, or one ended it
        while polls_since_patch() < 2 and (await row())["following"]:
            await poll_now(bot)
            await asyncio.sleep(0.01)
    assert (await row())["state"] == "ringing" and (await row())["following"], await row()
    bot.evo.set_session_state(alice, ended=True, callState="Disconnected", outcome="No answer")
    await poll_now(bot)

    async with asyncio.timeout(10):
        while (await row())["state"] != "ended":
            await asyncio.sleep(0.01)
    [record] = [r for r in await audit_records(bot) if r.session_id == alice]
    kinds = [e.kind for e in record.events]
    assert kinds.index("hang_up_failed") < kinds.index("ended"), kinds
    assert patch.json == {"callState": "Disconnected"}
