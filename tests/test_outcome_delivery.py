"""Every outcome reaches the requester, however Slack answers on the way: an outcome mark Slack
refuses for a moment, a response URL that already carried a post, a thread that refuses replies."""

from __future__ import annotations

from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory
from tests.follow_helpers import (
    FAST,
    FULL,
    parent_of,
    status_message,
    texts,
    wait_for_mark,
)


async def test_a_not_placed_parent_edit_slack_refuses_is_tried_again(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    # The one edit that would tell the channel is refused once (a 5xx, say).
    bot.slack.fail("chat.update", "internal_error", times=1)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Call not placed" in (status.text or "")
    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "x"
    assert texts(parent)[-1].endswith("\n❌ Not placed.")
