"""A /call sent to a running `python -m bot` (tests/processes.py) as Slack sends it, and seen
through to Evo Voice and back to Slack."""

from __future__ import annotations

import aiohttp

from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn, sign, slash_command_body, slash_command_payload
from tests.conftest import SIGNING_SECRET
from tests.processes import BotProcess


async def place_a_call(
    bot: BotProcess, slack: SlackStandIn, evo: EvoVoiceStandIn, mode: str, number: str
) -> None:
    """`/call NUMBER escalation` over the websocket (Socket Mode) or a signed POST (HTTP mode):
    dialled once, and "Call placed" posted."""
    fields = dict(text=f"{number} escalation", response_url=slack.response_url())
    if mode == "socket":
        await slack.send_envelope("slash_commands", slash_command_payload(**fields))
    else:
        body = slash_command_body(**fields)
        async with aiohttp.ClientSession() as http, http.post(
            bot.base + "/slack/events", data=body, headers=sign(body, SIGNING_SECRET)
        ) as response:
            assert response.status == 200
    await slack.wait_for_call("chat.postMessage", lambda c: "Call placed" in
                              str(c.params.get("text")), timeout=10)
    assert [r.json["numberToDial"] for r in evo.outgoing_posts] == [number]
