"""Slack posts whose result matters are delivered at least once: the final status edit of a call
and the posts in an escalation's thread, through a Slack refusing them for a while."""

from __future__ import annotations

from bot.standins.slack import ApiCall
from tests.conftest import BotFactory
from tests.follow_helpers import FAST, FULL, end_session, status_message
from tests.test_escalation import (
    ALICE,
    BOB,
    dialled,
    escalation_message,
    open_on_message,
    start,
    submit,
    wait_for_edit,
)


async def test_the_final_status_edit_outlasts_a_slack_storm(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    # More refusals in a row than the final edit used to be tried.
    bot.slack.fail("chat.update", "internal_error", times=8,
                   when=lambda c: "Ended" in str(c.params.get("text")))
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.ok and c.params.get("ts") == status.ts and "Ended" in str(c.params.get("text")),
        timeout=30,
    )
    assert "Ended" in (status.text or "")


async def test_a_step_post_refused_by_slack_is_delivered_later_and_delays_no_call(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await wait_for_edit(bot, escalation, "📞 calling…")  # Alice's step runs from its call

    def refused(c: ApiCall) -> bool:
        return "calling <@U0BOB>" in str(c.params.get("text"))

    bot.slack.fail("chat.postMessage", "internal_error", times=2, when=refused)
    clock.advance(91)
    await bot.evo.wait_for_posts(2)  # Bob is called whatever Slack says
    assert dialled(bot) == [ALICE, BOB]
    delivered = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and refused(c), timeout=30)
    assert "No answer from <@U0ALICE>" in str(delivered.params["text"])
    assert sum(1 for c in bot.slack.calls_to("chat.postMessage") if c.ok and refused(c)) == 1
