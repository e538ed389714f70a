"""An escalation's ends told to its requester privately, when its card is not there to tell them
(tests/test_escalation_card.py, and the move to PostgreSQL in tests/test_migrate_db.py)."""

from __future__ import annotations

import asyncio

from bot.oncall.escalation_store import EscalationState
from bot.standins.slack import ApiCall, Message
from tests.conftest import BotFactory, BotUnderTest
from tests.escalations import (
    ALICE_ONLY, NOT_POSTED, Clock, in_the_channel, open_on_message, page_of, start, submit,
    wait_for_state,
)


def told(bot: BotUnderTest) -> list[str]:
    """What the requester was told privately (the shortcut's response_url, else a DM)."""
    said = [str(p.body.get("text")) for p in bot.slack.response_posts
            if p.status == 200 and isinstance(p.body, dict)]
    dms = bot.slack.channel_messages(bot.slack.dm_channel("U0ADMIN"))
    return said + [m.text or "" for m in dms]


async def told_privately(bot: BotUnderTest, text: str, timeout: float = 10.0) -> str:
    async def wait() -> str:
        while not (seen := [t for t in told(bot) if text in t]):
            await asyncio.sleep(0.01)
        return seen[0]

    return await asyncio.wait_for(wait(), timeout)


async def without_a_card_nor_the_shortcut_s_response_url(bot: BotUnderTest) -> Message:
    """An escalation whose card Slack refused (not_in_channel), the requester told so through
    the shortcut's response_url, which then expires: the ends are told by direct message. Alice's
    page."""
    view, _ = await open_on_message(bot)
    bot.slack.fail("chat.postMessage", "not_in_channel", when=in_the_channel)
    assert await submit(bot, view) == {}
    await told_privately(bot, NOT_POSTED)
    [url] = {p.url for p in bot.slack.response_posts if NOT_POSTED in str(p.body)}
    bot.slack.expire_response_url(url)
    return await page_of(bot, "U0ALICE")


def to_the_requester(call: ApiCall) -> bool:
    return call.params.get("channel") == "U0ADMIN"


async def an_end_slack_refused_to_tell(bot_factory: BotFactory) -> tuple[BotUnderTest, Clock]:
    """A bot (Alice alone on call) whose escalation ended unacknowledged, Slack refusing to tell
    its requester (no card, the shortcut's response_url expired, the direct message refused);
    the bot and its clock, for a test to stop it and start the next."""
    first, clock = await start(bot_factory, policy=ALICE_ONLY)
    await without_a_card_nor_the_shortcut_s_response_url(first)
    first.slack.fail("chat.postMessage", "fatal_error", when=to_the_requester)
    clock.advance(91)
    await wait_for_state(first, EscalationState.EXHAUSTED)
    await first.slack.wait_for_call("chat.postMessage",
                                    lambda c: to_the_requester(c) and not c.ok, timeout=10.0)
    return first, clock
