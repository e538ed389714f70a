"""A call dialled while Slack could tell its requester nothing, anywhere (the channel, the
command's response_url and the direct message all refused): the phone rang all the same, so the
requester is told once Slack answers again, while the call goes on, at its end, or by the next
start. Never a call whose requester never learns how it went."""

from __future__ import annotations

import asyncio

from bot.standins.evovoice import ErrorStatus
from bot.standins.slack import ApiCall
from tests.conftest import BotFactory, BotUnderTest
from tests.follow_helpers import FAST, end_session, services

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"


def to_requester(call: ApiCall) -> bool:
    return call["channel"] == "U0MANAGER"


async def dialled_while_slack_tells_nobody(bot: BotUnderTest, times: int | None = None) -> str:
    """`/call` in a private channel the bot isn't in, its response_url expired, and direct
    messages failing (the next `times`; None: until `slack_answers_again`): the session id, once
    the direct message was refused."""
    await call_while_slack_tells_nobody(bot, times)
    [session_id] = bot.evo.sessions
    return session_id


async def call_while_slack_tells_nobody(bot: BotUnderTest, times: int | None) -> None:
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    bot.slack.fail("chat.postMessage", "internal_error", times, when=to_requester)
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await bot.command(f"{FULL} escalation", channel_id="G0PRIV", response_url=url)
    await bot.evo.wait_for_posts(1)
    await refused_to_requester(bot, 1)


async def refused_to_requester(bot: BotUnderTest, n: int) -> None:
    await bot.slack.wait_for_calls("chat.postMessage", n, lambda c: not c.ok and to_requester(c))


def slack_answers_again(bot: BotUnderTest) -> None:
    bot.slack.off("chat.postMessage")
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")


async def test_a_call_nobody_could_be_told_of_is_told_while_it_still_rings(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    # Refused as the call is dialled, and again as its status is: nothing about the call changes
    # after, and the next poll tells the requester all the same.
    session_id = await dialled_while_slack_tells_nobody(bot, times=2)
    dm = await bot.slack.wait_for_call("chat.postMessage", lambda c: c.ok and to_requester(c))
    assert MASKED in dm["text"] and "Ringing" in dm["text"]
    assert dm.response is not None
    end_session(bot, session_id, after_seconds=42, outcome="Completed")
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.ok and c["ts"] == dm.response["ts"] and "Ended: Completed" in c["text"])
    await bot.settle()
    assert len([c for c in bot.slack.calls_to("chat.postMessage") if c.ok]) == 1


async def test_a_call_that_ended_before_slack_answered_again_still_tells_its_outcome(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    session_id = await dialled_while_slack_tells_nobody(bot)
    end_session(bot, session_id, after_seconds=42, outcome="No answer")
    store = services(bot).follower.store
    async with asyncio.timeout(5):  # read over by the bot, its end refused
        while (call := await store.get(1)) is None or not call.is_final:
            await asyncio.sleep(0.01)
    refused = len([c for c in bot.slack.calls_to("chat.postMessage") if to_requester(c)])
    await refused_to_requester(bot, refused + 1)  # its end, tried again while Slack refuses it
    slack_answers_again(bot)
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and to_requester(c), timeout=10)
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]


async def test_a_call_nobody_could_be_told_of_before_a_restart_is_told_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    first = await bot_factory("http", **FAST)
    session_id = await dialled_while_slack_tells_nobody(first)
    await first.runtime.stop(grace=1)
    slack_answers_again(first)

    second = await bot_factory("http", **FAST)  # the same database
    dm = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and to_requester(c), timeout=10)
    assert MASKED in dm["text"]
    assert dm.response is not None
    end_session(second, session_id, after_seconds=42, outcome="Completed")
    # Its parent there, or the status under it, tells the outcome.
    await second.slack.wait_for_call("chat.update", lambda c: c.ok and c["channel"] == dm.response[
        "channel"] and "Ended: Completed" in c["text"])



async def test_a_call_not_placed_while_slack_told_nobody_is_told_so_once_slack_answers(
    bot_factory: BotFactory,
) -> None:
    # Evo Voice refuses the call: over at once, so no change of it would tell it again.
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    await call_while_slack_tells_nobody(bot, times=3)
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and to_requester(c), timeout=10)
    await bot.settle()
    assert MASKED in dm["text"] and "Call not placed" in dm["text"]
    assert len([c for c in bot.slack.calls_to("chat.postMessage") if c.ok]) == 1


async def test_a_call_not_placed_nobody_was_told_of_before_a_restart_is_told_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    first = await bot_factory("http", **FAST)
    first.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    await call_while_slack_tells_nobody(first, None)
    await first.runtime.stop(grace=1)
    slack_answers_again(first)

    second = await bot_factory("http", **FAST)  # the same database
    parent = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and to_requester(c), timeout=10)
    assert MASKED in parent["text"] and parent.response is not None
    await second.slack.wait_for_call("chat.postMessage", lambda c: c.ok and c.get(
        "thread_ts") == parent.response["ts"] and "Call not placed" in c["text"])
