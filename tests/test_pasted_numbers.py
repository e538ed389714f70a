"""Numbers as people paste them, through the running bot in both modes: a tel: link is dialled
as the number it holds; another country's international prefix ("00 44 …" where numbers read as
North American) is refused with the number it likely meant and what to type instead."""

from __future__ import annotations

import json

from tests.conftest import BotUnderTest

FULL = "+18144043093"


async def test_a_tel_link_is_dialled_as_its_number(bot: BotUnderTest) -> None:
    ack, _ = await bot.command("tel:+1-814-404-3093 escalation")
    assert ack.status == 200
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["numberToDial"] == FULL


async def test_a_number_written_with_00_says_what_to_type(bot: BotUnderTest) -> None:
    _, url = await bot.command("001 814 404 3093 escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert not bot.evo.outgoing_posts
    text = json.dumps(answer, ensure_ascii=False)
    assert "If you meant +1 814 ••• 3093, type + in place of the leading 00." in text
    assert "8144043093" not in text
