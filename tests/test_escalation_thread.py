"""The escalation's thread is calm, end to end in both modes: one card edited in place, a page (a
direct message) for each person called, and one broadcast at the end only when nobody
acknowledged. A step posts nothing of its own in the thread: every post the bot makes is counted
through the Slack stand-in, step by step.
"""

from __future__ import annotations

import json

import pytest

from bot.oncall.escalation_store import EscalationState
from bot.oncall.escalation_views import ACK_ESCALATION_ACTION
from bot.standins.slack import ApiCall
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.escalations import (
    ALICE,
    BOB,
    CHANNEL,
    MANAGER,
    click_ack,
    dialled,
    escalation_message,
    open_on_message,
    page_of,
    posts_in,
    running_escalation,
    start,
    submit,
    wait_for_edit,
    wait_for_post,
    wait_for_state,
)

STEPS = [  # who is called, in order (Carol, third in the rotation, has no number: skipped)
    ("U0ALICE", "1. <@U0ALICE> (+1 814 ••• 3093)"),
    ("U0BOB", "2. <@U0BOB> (+1 814 ••• 3094)"),
    ("U0MANAGER", "4. <@U0MANAGER> (escalate_to) (+1 814 ••• 3090)"),
]


def posts(bot: BotUnderTest) -> list[ApiCall]:
    """Every message the bot posted (edits aside), oldest first."""
    return [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]


def where(call: ApiCall) -> str:
    """The channel of a post, "thread" for a reply in the escalation's thread."""
    return "thread" if call.params.get("thread_ts") else str(call.params["channel"])


async def wait_for_paged(bot: BotUnderTest, n: int) -> None:
    """Carol's page, once the chain has gone past her (before the manager's step, `n` = 2)."""
    if n >= 2:
        await page_of(bot, "U0CAROL")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_each_step_posts_only_its_page_and_nobody_acknowledging_one_broadcast(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, clock = await start(bot_factory, mode)
    view, message = await open_on_message(bot)
    await submit(bot, view)
    card = await escalation_message(bot)
    for n, (user, line) in enumerate(STEPS):
        await bot.evo.wait_for_posts(n + 1)
        await page_of(bot, user)
        await wait_for_edit(bot, card, f"{line} — 🔔 ringing…")
        # The card, then one page per person paged so far (Carol, skipped for want of a number
        # before the manager's step, in Slack only): nothing else, in the thread or out.
        await wait_for_paged(bot, n)
        assert [where(c) for c in posts(bot) if where(c) != "U0CAROL"] == (
            ["thread"] + [u for u, _ in STEPS[: n + 1]])
        clock.advance(91)  # nobody acknowledges
        await wait_for_edit(bot, card, f"{line} — ❌ no answer after 90 s (hung up)")
    await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    await wait_for_edit(bot, card, "nobody acknowledged.")
    await bot.settle()
    assert dialled(bot) == [ALICE, BOB, MANAGER]
    assert [where(c) for c in posts(bot) if where(c) != "U0CAROL"] == [
        "thread", "U0ALICE", "U0BOB", "U0MANAGER", "thread"]
    assert [where(c) for c in posts(bot)].count("U0CAROL") == 1
    thread = posts_in(bot, CHANNEL, message.ts)
    assert [m.ts for m in thread][0] == card.ts and len(thread) == 2
    assert thread[1].text and thread[1].text.startswith("🚨 <@U0ADMIN> *Nobody acknowledged")
    assert bot.slack.calls_to("chat.postEphemeral") == []


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_an_acknowledged_escalation_posts_the_card_and_the_pages_only(
    bot_factory: BotFactory, mode: str
) -> None:
    bot, clock = await start(bot_factory, mode)
    view, message = await open_on_message(bot)
    await submit(bot, view)
    card = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, card, f"{STEPS[0][1]} — 🔔 ringing…")
    clock.advance(91)
    await bot.evo.wait_for_posts(2)
    page = await page_of(bot, "U0BOB")
    await wait_for_edit(bot, card, f"{STEPS[1][1]} — 🔔 ringing…")
    clock.advance(10)
    await click_ack(bot, page, user_id="U0BOB")
    await wait_for_edit(bot, card, f"{STEPS[1][1]} — ✅ acknowledged at <!date^")
    assert "<@U0BOB> acknowledged at <!date^" in (card.text or "")  # the headline: who, when
    assert f"{STEPS[0][1]} — ❌ no answer after 90 s (hung up)" in (card.text or "")
    clock.advance(1000)
    await bot.settle()
    assert dialled(bot) == [ALICE, BOB]
    # Acknowledged: the card says so, edited in place; no broadcast, no post of any kind.
    assert [where(c) for c in posts(bot)] == ["thread", "U0ALICE", "U0BOB"]
    assert [m.ts for m in posts_in(bot, CHANNEL, message.ts)] == [card.ts]


async def test_an_end_slack_refuses_on_the_card_and_the_page_is_tried_again(
    bot_factory: BotFactory,
) -> None:
    # Slack refuses the edits that show the end (a 5xx for a moment): the card and the page are
    # edited again, not left showing a phone ringing and an I'm on it that nobody needs to press.
    bot, _, escalation = await running_escalation(bot_factory)
    page = await page_of(bot, "U0ALICE")
    ends = (escalation.ts, page.ts)
    bot.slack.fail("chat.update", "internal_error", times=4,
                   when=lambda c: c.params.get("ts") in ends)
    await click_ack(bot, escalation, user_id="U0ALICE")
    await wait_for_edit(bot, escalation, "<@U0ALICE> acknowledged at <!date^")
    await bot.slack.wait_for_call(
        "chat.update", lambda c: c.ok and c.params.get("ts") == page.ts
        and "You acknowledged this page" in str(c.params.get("text")), timeout=10)
    assert ACK_ESCALATION_ACTION not in json.dumps(escalation.blocks)
    assert ACK_ESCALATION_ACTION not in json.dumps(page.blocks)


@on_both_databases
async def test_an_end_slack_refused_while_its_bot_stops_is_shown_by_another_running_on(
    bot_factory: BotFactory,
) -> None:
    a, clock = await start(bot_factory, LEASE_SECONDS="3")
    b, _ = await start(bot_factory, clock=clock, LEASE_SECONDS="3")  # the same database
    view, _ = await open_on_message(a)
    assert await submit(a, view) == {}
    escalation = await escalation_message(a)
    await a.evo.wait_for_posts(1)
    await wait_for_edit(a, escalation, "🔔 ringing…")
    # Acknowledged while Slack refuses every edit; the replica driving the chain is stopped
    # (a scale-down, say) while it tries the card's last edit again. The other one shows it.
    a.slack.fail("chat.update", "internal_error")
    await click_ack(a, escalation, user_id="U0ALICE")
    await wait_for_state(a, EscalationState.ACKNOWLEDGED)
    await a.runtime.stop(grace=1)
    a.slack.off("chat.update")

    await b.slack.wait_for_call(
        "chat.update", lambda c: c.ok and c.params.get("ts") == escalation.ts
        and "<@U0ALICE> acknowledged at <!date^" in str(c.params.get("text")), timeout=10)
    assert ACK_ESCALATION_ACTION not in json.dumps(escalation.blocks)
