"""A person the chain can't ring is still paged in Slack: their step is skipped (no usable number)
or fails (Evo Voice refused the call, or couldn't take it until the step's deadline), the chain
goes on to the next person, and their direct message pages them all the same, without saying
their phone rings, with I'm on it. In an Evo Voice outage that page is the only one that reaches
anybody. Someone whose Slack account is deactivated (who left) is not paged."""

from __future__ import annotations

from bot.oncall.escalation_store import EscalationState
from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory
from tests.escalations import (
    ALICE,
    BOB,
    IN_CAROLS_SHIFT,
    click_ack,
    dialled,
    escalation_message,
    open_on_message,
    page_of,
    running_escalation,
    start,
    steps_past_alices_refused,
    submit,
    wait_for_edit,
    wait_for_state,
)

PAGED = "📟 *You are being paged.*"
RINGING = "Your phone is ringing too."


async def test_someone_without_a_number_is_paged_in_slack_and_may_acknowledge(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory, at=IN_CAROLS_SHIFT)  # Carol: no [people] entry, no phone
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    page = await page_of(bot, "U0CAROL")
    assert PAGED in (page.text or "") and RINGING not in (page.text or "")
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]  # the chain went on meanwhile

    await click_ack(bot, page, user_id="U0CAROL")
    await wait_for_state(bot, EscalationState.ACKNOWLEDGED)
    await wait_for_edit(bot, escalation, "<@U0CAROL> acknowledged")
    assert dialled(bot) == [ALICE]


async def test_someone_whose_call_evo_voice_refused_is_paged_in_slack(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    bot.evo.queue_outgoing(ErrorStatus(403, "Invalid Role"))  # Alice's call, refused
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    page = await page_of(bot, "U0ALICE")
    assert PAGED in (page.text or "") and RINGING not in (page.text or "")
    await bot.evo.wait_for_posts(2)
    assert dialled(bot) == [ALICE, BOB]


async def test_someone_who_left_is_not_paged(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory, at=IN_CAROLS_SHIFT)
    bot.slack.users["U0CAROL"] = {"deleted": True, "profile": {"phone": "+18144043095"}}
    view, _ = await open_on_message(bot)
    assert await submit(bot, view) == {}
    escalation = await escalation_message(bot)
    await wait_for_edit(bot, escalation, "1. <@U0CAROL> — ⏭ skipped: no usable phone number")
    await page_of(bot, "U0ALICE")  # the next person's page, after Carol's step
    await bot.settle()
    assert not [c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0CAROL"]


async def test_someone_whose_step_its_checks_refuse_is_paged_in_slack(
    bot_factory: BotFactory,
) -> None:
    """Evo Voice can't list its flows when Bob's step comes, so his step's checks refuse it and
    his phone is not rung: he is paged in Slack all the same, without "your phone is ringing"."""
    bot, clock, _ = await running_escalation(bot_factory)
    await steps_past_alices_refused(bot, clock)
    # The page as posted: by now the chain's end may have edited it to "Nobody acknowledged".
    posted = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.params.get("channel") == "U0BOB", timeout=10.0)
    text = str(posted.params.get("text"))
    assert PAGED in text and RINGING not in text
    assert dialled(bot) == [ALICE]
