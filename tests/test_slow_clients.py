"""HTTP mode and clients that send slowly, or stop halfway: let go, never held for good.

A request's body that stops coming is answered 408, and its connection closed once what may still
come of it was read for UNREAD_BODY_LINGER_SECONDS; a connection whose
headers never end (or that stays idle) is closed once IDLE_CONNECTION_SECONDS pass. The limits
are shortened here (10 s, 2 s and 75 s in a deployment); a body that arrives in pieces within the
limit is read as one."""

from __future__ import annotations

import asyncio

import pytest

import bot.slack.http
from bot.standins.slack import sign, slash_command_body
from tests.conftest import SIGNING_SECRET, BotFactory, BotUnderTest

FULL = "+18144043093"


async def connect(bot: BotUnderTest) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", bot.runtime.port)


def head(length: int, data: bytes) -> bytes:
    lines = [
        "POST /slack/events HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Length: {length}",
        *[f"{name}: {value}" for name, value in sign(data, SIGNING_SECRET).items()],
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def command_body(bot: BotUnderTest) -> bytes:
    return slash_command_body(text=f"{FULL} escalation", response_url=bot.slack.response_url())


async def test_a_body_that_stops_coming_is_answered_408_and_let_go(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot.slack.http, "BODY_READ_SECONDS", 0.2)
    monkeypatch.setattr(bot.slack.http, "UNREAD_BODY_LINGER_SECONDS", 0.1)
    http_bot = await bot_factory("http")
    data = command_body(http_bot)
    reader, writer = await connect(http_bot)
    writer.write(head(len(data), data) + data[:20])  # and then nothing
    answer = await asyncio.wait_for(reader.read(), 5)  # to the end: the bot closes it
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert http_bot.evo.outgoing_posts == []
    # The bot goes on answering everyone else.
    ack, _ = await http_bot.command(f"{FULL} escalation")
    assert ack.status == 200
    await http_bot.evo.wait_for_posts(1)


async def test_a_connection_whose_headers_never_end_is_closed(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot.slack.http, "IDLE_CONNECTION_SECONDS", 0.2)
    http_bot = await bot_factory("http")
    reader, writer = await connect(http_bot)
    writer.write(b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    idle_reader, idle_writer = await connect(http_bot)  # nothing sent at all
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    idle_writer.close()


async def test_a_body_arriving_in_pieces_in_time_is_read_whole(bot_factory: BotFactory) -> None:
    http_bot = await bot_factory("http")
    data = command_body(http_bot)
    reader, writer = await connect(http_bot)
    writer.write(head(len(data), data) + data[:20])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(data[20:])
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 200 ")
    await http_bot.evo.wait_for_posts(1)
