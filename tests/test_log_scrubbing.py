"""What the logs hold after a whole run at LOG_LEVEL=DEBUG: no secrets, no response_urls, no full
numbers, and one line per record whatever users type."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import httpx
import pytest

from bot.calls.confirm_views import CONFIRM_CALL_ACTION
from bot.evovoice.client import EvoVoiceClient
from bot.ops.logs import LogFormat, configure_logging
from bot.standins.evovoice import DropConnection, ErrorStatus, TooManyRequests
from bot.standins.slack import block_actions_payload, interactive_body, sign, slash_command_body
from tests.conftest import (
    APP_TOKEN,
    BOT_TOKEN,
    EVO_PASSWORD,
    EVO_USER,
    SIGNING_SECRET,
    BotFactory,
    BotUnderTest,
    until,
)
from tests.escalations import open_on_message, retries_on, start, submit
from tests.interactions import ask, button, click

SECRETS = (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, EVO_PASSWORD)
NUMBERS = ("8144043093", "8144043094", "4165550123", "9005550123")
_RECORD_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)


@pytest.fixture
def production_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Logging exactly as `python -m bot` sets it up, at DEBUG, written to a buffer."""
    with logging_as_run(monkeypatch, "text") as buffer:
        yield buffer


@pytest.fixture
def production_json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The same with LOG_FORMAT=json."""
    with logging_as_run(monkeypatch, "json") as buffer:
        yield buffer


@contextlib.contextmanager
def logging_as_run(monkeypatch: pytest.MonkeyPatch, log_format: LogFormat) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {
        name: logging.getLogger(name).level
        for name in ("httpx", "httpcore", "slack_sdk", "slack_bolt", "aiohttp.access", "asyncio")
    }
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("DEBUG", log_format)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def check_clean(log: str) -> None:
    assert log.strip(), "nothing was logged: the test would prove nothing"
    for secret in SECRETS:
        assert secret not in log, f"a secret is in the log: {secret[:6]}…"
    assert EVO_PASSWORD not in log and "Basic " not in log
    for digits in NUMBERS:
        assert digits not in log, f"a full number is in the log: …{digits[-4:]}"
    assert "/response/" not in log, "a response_url is in the log"
    for line in log.splitlines():
        # Every line starts a record, or continues a traceback under one.
        assert _RECORD_START.match(line) or line.startswith(("  |", "Traceback")), line


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_whole_run_logs_no_secrets_numbers_or_response_urls(
    bot_factory: BotFactory, production_log: io.StringIO, mode: str
) -> None:
    bot = await bot_factory(mode)
    await bot.command("+18144043093 escalation")  # placed
    await bot.command("+18144043094 escalation", user_id="U0NOBODY")  # no role
    await bot.command("+1 900 555 0123 escalation")  # premium rate
    await bot.command("+18144043093 no-such-flow")  # unknown flow
    await bot.settle()
    await bot.command("+18144043093 escalation")  # repeat: asked
    await bot.settle()
    question = await ask(bot, "+14165550123 escalation")  # abroad: asked
    bot.evo.queue_outgoing(ErrorStatus(500), DropConnection())
    await click(bot, question)  # outcome unknown
    await bot.command("+18144043094 escalation", user_id="U0ADMIN")  # dropped: unknown
    await bot.settle()
    bot.slack.fail("chat.postMessage", "channel_not_found", times=1)
    await bot.command("+18144043094 wake-up-call", user_id="U0ADMIN")  # response_url fallback
    await bot.settle()
    expired = bot.slack.response_url()
    bot.slack.expire_response_url(expired)
    await bot.command("+18144043094 escalation", user_id="U0NOBODY", response_url=expired)
    await bot.settle()  # the refusal's response_url answers 404: told another way
    if mode == "http":
        data = slash_command_body(
            text="+18144043093 escalation", response_url=bot.slack.response_url()
        )
        assert (await bot.post_signed(b"payload=%7Bnot-json" + data)).status == 400
        async with bot.http.post(bot.events_url, data=data, headers=sign(data, "forged")) as r:
            assert r.status == 401
    await bot.runtime.stop()
    log = production_log.getvalue()
    check_clean(log)
    assert "callbot stopped" in log and "asked to confirm" in log
    assert "response_url post refused" in log
    assert "+1 814 ••• 3093" in log, "calls are logged with the number masked"
    assert EVO_USER in log or True  # the login name is not a secret


async def test_a_number_typed_full_width_is_logged_masked(
    bot_factory: BotFactory, production_log: io.StringIO
) -> None:
    bot = await bot_factory("http")
    await bot.command("＋１８１４４０４３０９３ escalation")  # placed
    await bot.command("＋１８１４４０４３０９４ escalation", user_id="U0NOBODY")  # no role
    await bot.command("＋１９００５５５０１２３ escalation")  # premium rate
    await bot.settle()
    await bot.runtime.stop()
    log = production_log.getvalue()
    check_clean(log)
    for digits in ("８１４４０４３０９３", "８１４４０４３０９４", "９００５５５０１２３"):
        assert digits not in log, f"a full number is in the log: …{digits[-4:]}"
    assert "+1 814 ••• 3093" in log and len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_user_text_cannot_forge_a_log_line(
    bot_factory: BotFactory, production_log: io.StringIO, mode: str
) -> None:
    bot = await bot_factory(mode)
    forged = "2030-01-01 00:00:00,000 INFO bot.calls: call by U0ADMIN placed"
    # A signed request can carry any user id; Slack's never hold these, an attacker's might.
    await bot.command("+18144043093 escalation", user_id=f"U0X\n{forged}")
    await bot.command("+18144043093 escalation", user_id=f"U0Y\r\u202e{forged}\u2066")
    # Unicode's own line breaks: log viewers (and Python's splitlines) start a line there.
    await bot.command("+18144043093 escalation", user_id=f"U0W\u2028{forged}\u2029\x85{forged}")
    await bot.command(f"+18144043093 escalation\n{forged}")
    question = await ask(bot, "+14165550123 escalation")
    value = button(question, CONFIRM_CALL_ACTION)["value"]
    payload = block_actions_payload(
        action_id=CONFIRM_CALL_ACTION,
        value=value,
        user_id=f"U0Z\n{forged}",
        response_url=bot.slack.response_url(),
    )
    if mode == "socket":
        await bot.slack.send_envelope("interactive", payload)
    else:
        await bot.post_signed(interactive_body(payload))
    await bot.settle()
    await bot.runtime.stop()
    log = production_log.getvalue()
    check_clean(log)
    assert "U0X\\n2030-01-01" in log, "the user id is logged, escaped on the same line"
    assert not any(line.startswith("2030-01-01") for line in log.splitlines())
    assert "\u202e" not in log and "\u2066" not in log and "\r" not in log
    assert "\u2028" not in log and "\u2029" not in log and "\x85" not in log
    assert bot.evo.outgoing_posts == []


async def test_user_text_cannot_forge_a_json_line(
    bot_factory: BotFactory, production_json_log: io.StringIO
) -> None:
    bot = await bot_factory("http")
    forged = '{"level": "INFO", "message": "call by U0ADMIN placed"}'
    await bot.command("+18144043093 escalation",
                      user_id=f"U0Y\n\u2028\u202e{forged}\u2029\x85\u2066")
    await bot.settle()
    await bot.runtime.stop()
    log = production_json_log.getvalue()
    entries = [json.loads(line) for line in log.splitlines()]  # every line is a whole record
    assert any(e.get("user_id", "").startswith("U0Y") for e in entries)
    for control in ("\u2028", "\u2029", "\x85", "\u202e", "\u2066"):
        assert control not in log


async def test_an_escalation_step_tried_again_logs_its_number_masked(
    bot_factory: BotFactory, production_log: io.StringIO
) -> None:
    # The chain's own path: a step refused with "not now" is dialled again, and says so.
    bot, clock = await start(bot_factory)
    pauses = retries_on(bot, clock)  # the pause before dialling again takes no real time
    bot.evo.queue_outgoing(TooManyRequests(retry_after="0.05"))
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await bot.evo.wait_for_posts(2)
    assert len(pauses) == 1
    await bot.runtime.stop()
    log = production_log.getvalue()
    check_clean(log)
    assert "+1 814 ••• 3093: RateLimited, trying again" in log


async def test_the_on_call_roster_logs_its_numbers_masked(
    bot_factory: BotFactory, production_log: io.StringIO
) -> None:
    # Taking the shift (from [people], from a Slack profile), being refused it, reading the roster
    # with someone whose profile number can't be dialled: no full number in the log.
    bot, _ = await start(bot_factory)
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+18144043099"}}
    bot.slack.users["U0CAROL"] = {"profile": {"phone": "+1 900 555 0123"}}
    bot.slack.users["U0DEV"] = {"profile": {"phone": "+18144043098"}}
    for text, user_id in (("oncall take", "U0MANAGER"), ("oncall take", "U0ADMIN"),
                          ("oncall take", "U0DEV"), ("oncall", "U0DEV")):
        await bot.command(text, user_id=user_id)
        await bot.settle()
    await bot.runtime.stop()
    log = production_log.getvalue()
    check_clean(log)
    for digits in ("8144043090", "8144043099", "8144043098"):
        assert digits not in log, f"a full number is in the log: …{digits[-4:]}"
    assert "on-call shift taken by U0ADMIN from U0MANAGER" in log


def what_slack_was_sent(bot: BotUnderTest) -> str:
    """Every Web API call's parameters and every response_url post, as text."""
    return json.dumps([call.params for call in bot.slack.calls]
                      + [post.body for post in bot.slack.response_posts], ensure_ascii=False)


async def test_an_evovoice_refusal_quoting_the_number_shows_it_masked(
    bot_factory: BotFactory, production_log: io.StringIO
) -> None:
    # ServiceStack's validation and binding errors quote the value they refused ("'…' is an
    # Invalid value for 'To'"): the refusal is shown in the channel (a call's thread, an
    # escalation's card), where numbers are never shown in full, and the same words are logged.
    def quoting(number: str) -> ErrorStatus:
        return ErrorStatus(400, f"'{number}' is an Invalid value for 'To'", field_errors=[
            {"fieldName": "To", "message": f"'{number}' is an Invalid value for 'To'",
             "errorCode": "SerializationException"}])

    bot, _ = await start(bot_factory)
    bot.evo.queue_outgoing(quoting("+18144043094"))
    await bot.command("+18144043094 escalation")
    await bot.settle()
    bot.evo.queue_outgoing(quoting("+18144043093"))  # Alice's number, from [people]
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await bot.evo.wait_for_posts(3)  # Alice refused, then Bob
    await bot.settle()
    await bot.runtime.stop()
    sent = what_slack_was_sent(bot)
    assert "'+1 814 ••• 3094' is an Invalid value for 'To'" in sent, "the refusal is shown"
    assert "'+1 814 ••• 3093' is an Invalid value for 'To'" in sent, "Alice's step says why"
    for digits in NUMBERS:
        assert digits not in sent, f"a full number was sent to Slack: …{digits[-4:]}"
    check_clean(production_log.getvalue())


def quoting_bug(number: str) -> Exception:
    """A bug whose words quote the number it was handling, in the forms a traceback may carry
    them: as typed, national, and percent-encoded in a URL (an httpx error met on the way)."""
    national = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    url = f"http://evo.example/sessions?to=%2B{number[1:]}&alt=%2B1%20{number[2:5]}%20" \
          f"{number[5:8]}%20{number[8:]}"
    try:
        raise httpx.ReadError(f"ClientResponseError: 400, message='Bad status line', url='{url}'")
    except httpx.ReadError as cause:
        try:
            raise ValueError(f"cannot dial {number} ({national})") from cause
        except ValueError as bug:
            return bug


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_bug_quoting_the_number_is_logged_with_the_number_masked(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch, log_format: LogFormat
) -> None:
    # The traceback of a bug is logged whole, with its exception's words and those of the errors
    # it was raised from: a number there, in any form, is masked as everywhere else.
    async def buggy(self: object, flow_id: str, number_to_dial: str, *_: object,
                    **__: object) -> None:
        raise quoting_bug(number_to_dial)

    with logging_as_run(monkeypatch, log_format) as log:
        bot, _ = await start(bot_factory)
        monkeypatch.setattr(EvoVoiceClient, "create_outgoing_session", buggy)
        ack, _ = await bot.command("+18144043094 escalation")
        await bot.settle()
        view, _ = await open_on_message(bot)  # Alice's step: +18144043093, from [people]
        await submit(bot, view)
        await until(lambda: log.getvalue().count("ValueError: cannot dial") >= 2)
        await bot.runtime.stop()
    text = log.getvalue()
    if log_format == "json":
        text = "\n".join(json.dumps(json.loads(line), ensure_ascii=False)
                         for line in text.splitlines())
    else:
        check_clean(text)
    for digits in ("8144043093", "8144043094", "404-309", "404%20309", "4043093", "4043094"):
        assert digits not in text, f"a full number is in the log: {digits}"
    assert "cannot dial +1 814 ••• 3094" in text, "the bug is still logged, the number masked"
    assert "line " in text and "bot/calls/" in text, "the traceback is kept"
