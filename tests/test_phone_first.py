"""The phone rings first: once a call passed its checks, nothing on Slack's side delays its dial.

The confirmation thread is posted alongside the `POST /sessions/outgoing` and told the result
when it comes; a Slack that hangs, fails or rate-limits changes where the news goes, never whether
or when the phone rings.
"""

from __future__ import annotations

from bot.standins.slack import ApiCall
from tests.conftest import BotFactory, BotUnderTest

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"


def is_reply(call: ApiCall) -> bool:
    return bool(call.params.get("thread_ts"))


async def test_the_post_leaves_while_chat_post_message_hangs(bot: BotUnderTest) -> None:
    gate = bot.slack.hold("chat.postMessage")
    await bot.command(f"{FULL} escalation")
    await gate.wait_until_held()
    await bot.evo.wait_for_posts(1)
    # The phone is ringing, and Slack has not answered a single post yet.
    assert bot.slack.calls_to("chat.postMessage") == []
    gate.open()
    await bot.settle()
    parent, reply = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert MASKED in parent.params["text"]
    assert reply.params["thread_ts"] == parent.response["ts"]
    assert "Call placed" in reply.params["text"]
    assert len(bot.evo.outgoing_posts) == 1


async def test_an_escalation_step_whose_own_post_fails_is_still_dialled(
    bot_factory: BotFactory,
) -> None:
    from tests.test_escalation import ALICE, dialled, escalation_message, open_on_message, start, submit

    bot, _ = await start(bot_factory)
    view, _message = await open_on_message(bot)
    # The escalation's message goes up; then every post in the channel fails (12 s of 429s, say).
    await submit(bot, view)
    await escalation_message(bot)
    bot.slack.fail("chat.postMessage", "ratelimited", retry_after=0,
                   when=lambda c: c["channel"] == "C0OPS")
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]
    # The requester hears about the step's call directly instead.
    dm = await bot.slack.wait_for_call("chat.postMessage", lambda c: c["channel"] == "U0ADMIN"
                                       and "is calling +1 814 ••• 3093" in c["text"])
    assert dm.ok
