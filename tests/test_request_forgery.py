"""Requests as an attacker shapes them: the bot never posts where a payload says, only to Slack.

A `response_url` arrives in every command, click and shortcut. Slack's own always points at its
webhook hosts; one that points anywhere else is not Slack's, and the bot must not POST to it (the
post carries what the requester asked, and a live call's news): the requester is told another way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.calls.status_views import CALL_AGAIN_ACTION, HANG_UP_ACTION
from bot.standins.slack import block_actions_payload
from tests.conftest import BotFactory, BotUnderTest, until
from tests.interactions import interact


@dataclass
class Elsewhere:
    """A loopback server that is not Slack: whatever reaches it, the bot sent where it shouldn't."""

    url: str = ""
    hits: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    caught = Elsewhere()

    async def record(request: web.Request) -> web.Response:
        caught.hits.append((request.method, request.path))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caught.url = f"http://127.0.0.1:{port}/hooks/T0TEAM/1/abc"
    yield caught
    await runner.cleanup()


def told_privately(bot: BotUnderTest, user_id: str = "U0MANAGER") -> bool:
    """Whether the requester was told in an ephemeral post or a direct message."""
    return bool(bot.slack.calls_to("chat.postEphemeral")) or any(
        c.params.get("channel") == user_id for c in bot.slack.calls_to("chat.postMessage")
    )


@pytest.mark.parametrize("mode", ["http", "socket"])
@pytest.mark.parametrize("action_id", [HANG_UP_ACTION, CALL_AGAIN_ACTION])
async def test_a_click_whose_response_url_is_not_slacks_is_never_posted_to(
    bot_factory: BotFactory, elsewhere: Elsewhere, mode: str, action_id: str
) -> None:
    bot = await bot_factory(mode)
    payload = block_actions_payload(action_id=action_id, value="999", response_url=elsewhere.url,
                                    extra_action={"action_ts": "1700000300.000001"})
    await interact(bot, payload)
    await bot.settle()
    assert elsewhere.hits == []
    assert told_privately(bot)  # "This button no longer works", another way
    assert bot.evo.outgoing_posts == []


@pytest.mark.parametrize("text", ["history", "oncall", "test", "+1 416 555 0123 escalation",
                                  "+18144043093 nope"])
async def test_a_command_whose_response_url_is_not_slacks_is_never_posted_to(
    bot_factory: BotFactory, elsewhere: Elsewhere, text: str
) -> None:
    bot = await bot_factory("http")
    await bot.command(text, response_url=elsewhere.url)
    await bot.settle()
    assert elsewhere.hits == []
    assert told_privately(bot)  # the answer, the question or the refusal, another way


async def test_a_client_holding_a_request_open_does_not_hold_back_calls(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Work waits for the acks being sent (bot/tasks.py), not for a request whose body is still
    coming: a client that sends its headers and then nothing (forged, or just slow) held every
    call's dial back by the acks' wait, at each of its requests. Gone without finishing, it is
    a warning, not an error with a traceback."""
    bot = await bot_factory("http")
    assert bot.runtime.services is not None
    # As long as a stuck ack could hold work back, so that being held back shows.
    bot.runtime.services.tasks.acks.max_wait = 30.0
    reader, writer = await asyncio.open_connection("127.0.0.1", bot.runtime.port)
    try:
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: callbot\r\nContent-Length: 1000\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntext=")
        await writer.drain()
        ack, _ = await bot.command("+18144043093 escalation")
        assert ack.status == 200
        [post] = await bot.evo.wait_for_posts(1)
        assert post.json["numberToDial"] == "+18144043093"
    finally:
        writer.close()
        await writer.wait_closed()
    await until(lambda: "body could not be read" in caplog.text)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
