"""HTTP mode's front door: every forged or malformed request gets 401 or 400, never a 500."""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest

from bot.standins.slack import sign, slash_command_body
from tests.conftest import SIGNING_SECRET, BotFactory, BotUnderTest

FULL = "+18144043093"


@pytest.fixture
async def http_bot(bot_factory: BotFactory) -> BotUnderTest:
    return await bot_factory("http")


def body(bot: BotUnderTest) -> bytes:
    return slash_command_body(text=f"{FULL} escalation", response_url=bot.slack.response_url())


async def post(bot: BotUnderTest, data: bytes, headers: dict[str, str]) -> int:
    async with bot.http.post(bot.events_url, data=data, headers=headers) as response:
        await response.read()
        return response.status


def signed_with(data: bytes, **changes: str) -> dict[str, str]:
    headers = sign(data, SIGNING_SECRET)
    headers.update(changes)
    return headers


def _last_digit_changed(signature: str) -> str:
    return signature[:-1] + ("0" if signature[-1] != "0" else "1")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: {"Content-Type": "application/x-www-form-urlencoded"},  # no signature at all
        lambda d: signed_with(d, **{"X-Slack-Signature": "v0=" + "0" * 64}),
        lambda d: sign(d, "not-the-secret"),
        lambda d: sign(d, SIGNING_SECRET, timestamp=int(time.time()) - 600),  # replayed
        lambda d: sign(d, SIGNING_SECRET, timestamp=int(time.time()) + 600),
        lambda d: signed_with(d, **{"X-Slack-Request-Timestamp": "soon"}),
        lambda d: signed_with(d, **{"X-Slack-Request-Timestamp": "１７００００００００"}),
        lambda d: signed_with(d, **{"X-Slack-Request-Timestamp": ""}),
        lambda d: signed_with(d, **{"X-Slack-Signature": "v0=é"}),
        # Digits to str.isdigit() that int() refuses.
        lambda d: signed_with(d, **{"X-Slack-Request-Timestamp": "¹⁷⁰⁰⁰⁰⁰⁰⁰⁰"}),
        # Longer than int() reads (4,300 digits); fits in a header.
        lambda d: signed_with(d, **{"X-Slack-Request-Timestamp": "9" * 5000}),
        # Right but for its last hex digit: the whole signature is compared.
        lambda d: signed_with(d, **{"X-Slack-Signature": _last_digit_changed(
            sign(d, SIGNING_SECRET)["X-Slack-Signature"])}),
    ],
    ids=["unsigned", "wrong-signature", "wrong-secret", "stale", "future", "non-numeric-ts",
         "unicode-digits-ts", "empty-ts", "non-ascii-signature", "superscript-digits-ts",
         "endless-ts", "last-digit-off"],
)
async def test_forged_requests_get_401_and_dial_nothing(
    http_bot: BotUnderTest, tamper: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = body(http_bot)
    assert await post(http_bot, data, tamper(data)) == 401  # type: ignore[operator]
    await http_bot.settle()
    assert http_bot.evo.outgoing_posts == []
    # Refused at the front door, before Bolt parses the body (Bolt's own check comes second).
    assert "rejected an unsigned or badly signed request" in caplog.text
    assert "4043093" not in caplog.text and "/response/" not in caplog.text


async def test_tampered_body_fails_its_signature(http_bot: BotUnderTest) -> None:
    data = body(http_bot)
    headers = sign(data, SIGNING_SECRET)
    assert await post(http_bot, data.replace(b"U0MANAGER", b"U0ADMIN0X"), headers) == 401


def forged_command_with_ssl_check() -> bytes:
    text = f"{FULL} escalation " + "x" * 1000
    return slash_command_body(text=text, response_url="https://hooks.slack.com/x") + b"&ssl_check=1"


@pytest.mark.parametrize(
    "data",
    [lambda: b"ssl_check=0&token=verification-token", forged_command_with_ssl_check],
    ids=["ssl-check-0", "command-with-ssl-check"],
)
async def test_a_forged_body_carrying_ssl_check_is_refused(
    http_bot: BotUnderTest, data: Callable[[], bytes]
) -> None:
    # Only Slack's own certificate check (ssl_check=1 and a token, a short body) is answered
    # unsigned, as Bolt answers it; any other body carrying the field is refused like a forgery.
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert await post(http_bot, data(), headers) == 401
    await http_bot.settle()
    assert http_bot.evo.outgoing_posts == []


async def test_oversized_body_is_refused(http_bot: BotUnderTest) -> None:
    data = body(http_bot) + b"&padding=" + b"a" * 400_000
    assert await post(http_bot, data, sign(data, SIGNING_SECRET)) == 400
    assert http_bot.evo.outgoing_posts == []


async def test_oversized_body_sent_in_chunks_is_refused(http_bot: BotUnderTest) -> None:
    # No Content-Length to go by: the limit is met while the body is read.
    data = body(http_bot) + b"&padding=" + b"a" * 400_000

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start:start + 64 * 1024]

    async with http_bot.http.post(http_bot.events_url, data=chunks(),
                                  headers=sign(data, SIGNING_SECRET)) as response:
        assert response.status == 400
    assert http_bot.evo.outgoing_posts == []


@pytest.mark.parametrize(
    "fields",
    [
        {"channel_name": "payload-incidents"},  # a channel named after the word
        {"user_name": "payload.bot"},
        {"team_domain": "payloadcms"},  # every command from such a workspace
    ],
    ids=["channel", "user", "workspace"],
)
async def test_a_slash_command_with_the_word_payload_in_it_is_a_slash_command(
    http_bot: BotUnderTest, fields: dict[str, str]
) -> None:
    """Bolt reads any form body holding the word "payload" as an interactive payload, finds no
    `payload` field and answers 404: Slack would tell the person "/call failed" (found by
    test_hostile_input.py: `/call payload`). Such a command is read as the command it is."""
    data = slash_command_body(text=f"{FULL} escalation",
                              response_url=http_bot.slack.response_url(), **fields)
    ack = await http_bot.post_signed(data)
    assert ack.status == 200
    await http_bot.evo.wait_for_posts(1)
    assert http_bot.evo.outgoing_posts[0].json["numberToDial"] == FULL
    asked, _ = await http_bot.command("payload")  # a flow word missing: told what to type
    assert asked.status == 200 and "/call" in asked.text


async def test_url_verification_is_answered_with_its_challenge(http_bot: BotUnderTest) -> None:
    # Slack's check of the events request URL, signed like any request (docs.slack.dev,
    # "url_verification event"): the answer must carry the challenge back.
    data = json.dumps({"token": "verification-token", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3g",
                       "type": "url_verification"}).encode()
    headers = {**sign(data, SIGNING_SECRET), "Content-Type": "application/json"}
    async with http_bot.http.post(http_bot.events_url, data=data, headers=headers) as response:
        assert response.status == 200
        assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3g" in await response.text()


async def test_a_body_is_checked_as_sent_whatever_its_content_encoding(
    http_bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp decoded the body as it was read, and answered 500 to one it couldn't decode. The
    # signature is checked over the bytes sent, as Slack signs them.
    data = body(http_bot)
    assert await post(http_bot, data, {"Content-Encoding": "gzip"}) == 401
    gzipped = gzip.compress(data)
    assert await post(http_bot, gzipped, {**sign(data, SIGNING_SECRET),
                                          "Content-Encoding": "gzip"}) == 401
    assert await post(http_bot, gzipped, {**sign(gzipped, SIGNING_SECRET),
                                          "Content-Encoding": "gzip"}) == 400  # not UTF-8
    await http_bot.settle()
    assert http_bot.evo.outgoing_posts == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_signed_body_that_is_not_utf8_is_refused(http_bot: BotUnderTest) -> None:
    data = b"text=\xff\xfe&user_id=U0MANAGER"
    assert await post(http_bot, data, sign(data, SIGNING_SECRET)) == 400


@pytest.mark.parametrize(
    "data",
    [b"payload=%7Bnot-json", b"payload=", b"\x00\x01garbage", b"%%%", b""],
    ids=["bad-json", "empty-payload", "binary", "bad-percent", "empty"],
)
async def test_signed_but_malformed_bodies_never_500(http_bot: BotUnderTest, data: bytes) -> None:
    status = await post(http_bot, data, sign(data, SIGNING_SECRET))
    assert status in (200, 400, 401, 404)
    assert http_bot.evo.outgoing_posts == []


async def test_forged_request_body_is_not_logged(
    http_bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = body(http_bot)
    assert await post(http_bot, data, sign(data, "forged")) == 401
    assert FULL not in caplog.text
    assert "/response/" not in caplog.text


async def test_healthz_answers_once_ready(http_bot: BotUnderTest) -> None:
    async with http_bot.http.get(f"http://127.0.0.1:{http_bot.runtime.port}/healthz") as response:
        assert response.status == 200
        assert (await response.json()) == {"status": "ok"}


async def test_healthz_in_socket_mode_too(bot_factory: BotFactory) -> None:
    bot = await bot_factory("socket")
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}/healthz") as response:
        assert response.status == 200
    # Socket Mode has no public endpoint for Slack requests.
    async with bot.http.post(bot.events_url, data=b"x") as response:
        assert response.status in (404, 405)
