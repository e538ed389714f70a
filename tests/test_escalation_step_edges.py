"""What an escalation's steps say and do at their edges, each pinned where a mutation of
bot/oncall/escalation_steps.py went unnoticed by the other escalation tests (/work/tools/mutate.py):
why a step's call couldn't be placed, …"""

from __future__ import annotations

from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory
from tests.escalations import (
    ALICE,
    BOB,
    dialled,
    escalation_message,
    open_on_message,
    start,
    submit,
    wait_for_edit,
)


async def test_a_step_whose_call_evo_voice_refused_says_why(bot_factory: BotFactory) -> None:
    """Evo Voice refuses Alice's call for good (a 400): her step says why in Evo Voice's words,
    not only that the call was not placed, and Bob is rung."""
    bot, _ = await start(bot_factory)
    bot.evo.queue_outgoing(ErrorStatus(400, "Invalid flow"))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(2)
    await wait_for_edit(bot, escalation, "2. <@U0BOB> (+1 814 ••• 3094) — 🔔 ringing…")
    assert dialled(bot) == [ALICE, BOB]
    assert ("1. <@U0ALICE> (+1 814 ••• 3093) — ⚠️ couldn't be called: Evo Voice refused the "
            "call: Invalid flow. Nothing was dialled." in (escalation.text or ""))
